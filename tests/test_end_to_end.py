"""A whole tiny spec end to end: real vLLM teacher (SmolLM2-135M), real verifier, real SFT of a tiny student,
real eval and packaging. Then a re-run, which must skip every stage."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import REPO, tiny_spec

pytestmark = pytest.mark.slow


def _run(spec_path):
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "run", str(spec_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_whole_spec_then_rerun_skips(tmp_path, tiny_llama):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(tiny_spec("e2e", str(tmp_path / "run"), tiny_llama)))
    out = _run(spec_path)
    run = tmp_path / "run"
    summary = json.loads((run / "run.json").read_text())
    st = {k: v["stats"] for k, v in summary["stages"].items()}

    # counts agree from stage to stage
    assert st["prompts"]["problems"] == st["generate"]["problems"] == 12
    assert st["generate"]["traces"] == 12 * 6 == st["verify"]["generated"]
    assert sum(st["verify"]["reasons"].values()) == st["verify"]["generated"]
    traces = pq.read_table(run / "verify" / "traces.parquet").to_pylist()
    assert sum(t["kept"] for t in traces) == st["verify"]["kept"] == st["sft"]["examples"] >= 1
    assert all(t["correct"] for t in traces if t["kept"])
    train = st["train/tiny-lora"]
    assert train["examples"] + train["dropped_over_max_length"] == st["sft"]["examples"]

    # eval: problems x k samples per benchmark, for the base and the student
    evals = sorted(p.name for p in (run / "eval").iterdir())
    assert evals == sorted(["tiny-lora", f"base-{str(tiny_llama).strip('/').replace('/', '_')}"])
    for name in evals:
        assert pq.read_table(run / "eval" / name / "samples.parquet").num_rows == (2 + 2) * 2
    scores = json.loads((run / "eval" / "tiny-lora" / "scores.json").read_text())

    # the package: weights, adapter, a model card with the eval's scores, a manifest with true hashes
    pkg = run / "package" / "tiny-lora"
    assert (pkg / "merged" / "model.safetensors").exists() and (pkg / "adapter" / "adapter_model.safetensors").exists()
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["scores"] == scores
    assert manifest["lineage"]["kept"] == st["verify"]["kept"] and manifest["lineage"]["generated"] == 72
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((pkg / name).read_bytes()).hexdigest() == digest
    card = (pkg / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    card_scores = {r["dataset"]["name"]: r["metrics"][0]["value"] for r in meta["model-index"][0]["results"]}
    assert card_scores == {b: round(100 * s["pass@1"], 2) for b, s in scores["benchmarks"].items()}
    for bench, s in scores["benchmarks"].items():
        assert f"| {bench} | 2 | 2 |" in card and f"{100 * s['pass@1']:.1f} ± {100 * s['stderr']:.1f} |" in card
    assert f"model card:    {pkg}/README.md" in out
    assert f"report:        {run / 'report.html'}" in out and (run / "report.html").stat().st_size > 10_000

    # the registry lists the packaged student with the same scores
    listed = subprocess.run([sys.executable, "-m", "distill.cli", "models", "list", str(tmp_path), "--json"],
                            cwd=REPO, capture_output=True, text=True, check=True)
    [model] = json.loads(listed.stdout)
    assert model["id"] == "run/tiny-lora" and model["scores"] == scores
    assert model["variants"] == ["adapter", "gguf", "merged"]
    assert sorted(p.name for p in (pkg / "gguf").iterdir()) == ["Modelfile", "tiny-lora-F16.gguf",
                                                                "tiny-lora-Q8_0.gguf"]
    assert "ollama create tiny-lora -f Modelfile" in card

    # the SFT data is a Hub-ready dataset folder: its card parses and names the teacher and the funnel
    from huggingface_hub import DatasetCard

    data_card = DatasetCard.load(run / "sft" / "README.md")
    assert data_card.data.configs[0]["data_files"] == [{"split": "train", "path": "train.parquet"}]
    assert "- teacher: `smollm2-135m`" in data_card.text and f"kept: {st['verify']['kept']}" in data_card.text

    # a re-run skips every stage and leaves every artifact as it was
    before = {p: p.stat().st_mtime_ns for p in run.rglob("_DONE.json")}
    again = _run(spec_path)
    assert again.count("up to date, skipped") == len(summary["stages"]) and "running" not in again
    assert {p: p.stat().st_mtime_ns for p in run.rglob("_DONE.json")} == before
