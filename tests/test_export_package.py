"""The package stage writes gguf/ (F16, Q8_0, Modelfile) for a real tiny student; the manifest hashes it, the
model card says how to run it, and the registry and the CLI list and download it as the `gguf` variant."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from distill.service import registry
from distill.cli import main
from distill.service.errors import IntegrityError
from distill.pipeline.package import package_student
from distill.spec import Student

SCORES = {"benchmarks": {}, "decoding": {"temperature": 0.6, "top_p": 0.95, "max_tokens": 64, "seed": 0}}
LINEAGE = {"teacher": "t", "spec_name": "s", "spec_hash": "h", "problems": 4, "generated": 8, "verified": 4,
           "kept": 4, "drop_reasons": {}}


def _package(base, run_dir, name, gguf=True):
    train = run_dir / "train" / name
    shutil.copytree(base, train / "merged")
    (train / "train_stats.json").write_text(json.dumps({"examples": 4, "steps": 2, "train_loss": 1.5}))
    out = run_dir / "package" / name
    out.mkdir(parents=True)
    stats = package_student(train, out, Student(name=name, base=str(base), method="full"), SCORES, None, LINEAGE,
                            gguf=gguf)
    return out, stats


@pytest.fixture(scope="module")
def packaged(tiny_family, tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    out, stats = _package(tiny_family("qwen3"), root / "run", "q3")
    return root, out, stats


def test_package_has_gguf_modelfile_card_and_hashes(packaged):
    root, pkg, stats = packaged
    assert stats["gguf"] == ["F16", "Q8_0"]
    assert sorted(p.name for p in (pkg / "gguf").iterdir()) == ["Modelfile", "q3-F16.gguf", "q3-Q8_0.gguf"]
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["gguf"] == {"files": {"F16": "q3-F16.gguf", "Q8_0": "q3-Q8_0.gguf"}, "stop": ["<|im_end|>"],
                                "modelfile": "Modelfile"}
    for rel in ("gguf/q3-F16.gguf", "gguf/q3-Q8_0.gguf", "gguf/Modelfile"):
        assert manifest["files"][rel] == hashlib.sha256((pkg / rel).read_bytes()).hexdigest()
    card = (pkg / "README.md").read_text()
    assert "- gguf\n" in card.split("---")[1]
    assert "ollama create q3 -f Modelfile\nollama run q3" in card
    assert "llama-cli -m gguf/q3-Q8_0.gguf --jinja --temp 0.6 --top-p 0.95" in card
    assert (pkg / "gguf" / "Modelfile").read_text().splitlines()[1] == "FROM ./q3-Q8_0.gguf"


def test_registry_and_cli_list_and_download_the_gguf_variant(packaged, tmp_path, capsys):
    root, pkg, _ = packaged
    [model] = registry.list_models(root)
    assert model.variants == ["gguf", "merged"]
    dest = registry.download(root, "q3", "gguf", tmp_path / "dl")
    assert sorted(p.name for p in dest.iterdir()) == ["Modelfile", "q3-F16.gguf", "q3-Q8_0.gguf"]
    assert (dest / "q3-Q8_0.gguf").read_bytes() == (pkg / "gguf" / "q3-Q8_0.gguf").read_bytes()

    assert main(["models", "list", str(root)]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith("run/q3  (full on ") and "; gguf, merged)" in listing
    assert main(["models", "download", "q3", "--variant", "gguf", "--dest", str(tmp_path / "cli"),
                 "--artifacts", str(root)]) == 0
    assert capsys.readouterr().out.strip() == f"q3 (gguf) -> {tmp_path / 'cli'}"
    assert (tmp_path / "cli" / "Modelfile").exists()


def test_tampered_gguf_fails_the_sha256_check(packaged, tmp_path):
    shutil.copytree(packaged[0], tmp_path / "root")
    with open(tmp_path / "root" / "run" / "package" / "q3" / "gguf" / "q3-Q8_0.gguf", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    with pytest.raises(IntegrityError, match=r"run/q3: gguf/q3-Q8_0.gguf has sha256 "):
        registry.download(tmp_path / "root", "q3", "gguf", tmp_path / "dl")


def test_gguf_switch_off_and_unsupported_architecture(tiny_family, tmp_path):
    out, stats = _package(tiny_family("qwen3"), tmp_path / "off", "q3", gguf=False)
    assert not (out / "gguf").exists() and stats["gguf"] == "off"
    assert json.loads((out / "manifest.json").read_text())["gguf"] is None

    base = tmp_path / "mistral"
    shutil.copytree(tiny_family("qwen3"), base)
    cfg = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**cfg, "model_type": "mistral"}))
    out, stats = _package(base, tmp_path / "other", "m")
    reason = "no GGUF: architecture 'mistral' (GGUF export knows llama, qwen2, qwen3)"
    assert stats["gguf"] == reason and not (out / "gguf").exists()
    assert f"GGUF: not exported ({reason})." in (out / "README.md").read_text()
    assert registry.list_models(tmp_path / "other")[0].variants == ["merged"]


def test_spec_switch_defaults_on_and_names_the_field():
    import yaml

    from distill.spec import SpecError, parse_spec
    from tests.conftest import REPO

    data = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    data.pop("package")
    assert parse_spec(data, REPO / "examples").package.gguf is True
    assert parse_spec({**data, "package": {"gguf": False}}, REPO / "examples").package.gguf is False
    with pytest.raises(SpecError) as e:
        parse_spec({**data, "package": {"gguf": True, "ggfu": 1}}, REPO / "examples")
    assert str(e.value) == "package.ggfu: unknown key"
