"""The sft stage's dataset card (parsed by huggingface_hub, its metadata round-tripped through DatasetCardData),
and `distill publish` up to the upload: what it would send, and one-line errors (a missing token first)."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from distill.pipeline.sft import build_sft_dataset
from distill.export.dataset_card import size_category
from distill.export.publish import PublishError, plan
from tests.conftest import REPO

STATS = {"generated": 6, "correct": 3, "kept": 2, "problems": 3,
         "reasons": {"correct": 2, "incorrect": 2, "truncated": 1, "duplicate_trace": 1},
         "funnel": [{"step": "generated", "remaining": 6},
                    {"step": "trace_filters", "dropped": {"truncated": 1}, "remaining": 5},
                    {"step": "verify", "dropped": {"incorrect": 2}, "remaining": 3},
                    {"step": "dedup_traces", "dropped": {"duplicate_trace": 1}, "remaining": 2},
                    {"step": "kept", "remaining": 2, "by_reason": {"correct": 2}}]}


@pytest.fixture
def run_dir(tmp_path):
    """A run directory with a real verify output (kept.parquet, stats.json) and the sft stage built from it."""
    import pyarrow as pa

    run = tmp_path / "run"
    verify, sft = run / "verify", run / "sft"
    verify.mkdir(parents=True)
    sft.mkdir()
    kept = [{"problem_id": f"p{i}", "sample_index": 0, "prompt": f"What is {i} + {i}?",
             "response": f"<think>{i} + {i} = {2 * i}</think>\\boxed{{{2 * i}}}", "extracted": str(2 * i),
             "reason": "correct"} for i in (1, 2)]
    pq.write_table(pa.Table.from_pylist(kept), verify / "kept.parquet")
    (verify / "stats.json").write_text(json.dumps(STATS))
    stats = build_sft_dataset(verify, sft, card={"name": "demo", "teacher": "deepseek-ai/DeepSeek-R1",
                                                 "spec_hash": "0123456789abcdef"})
    assert stats["examples"] == 2
    return run


def test_dataset_card_parses_and_round_trips(run_dir):
    from huggingface_hub import DatasetCard, DatasetCardData

    card = DatasetCard.load(run_dir / "sft" / "README.md")
    data = card.data
    assert data.license == "other" and data.task_categories == ["text-generation"]
    assert data.size_categories == ["n<1K"]
    assert data.configs == [{"config_name": "default", "data_files": [{"split": "train", "path": "train.parquet"}]}]
    again = DatasetCardData(**data.to_dict())
    assert again.to_dict() == data.to_dict() and again.to_yaml() == data.to_yaml()
    assert "- teacher: `deepseek-ai/DeepSeek-R1`" in card.text and "sha256 prefix `0123456789abcdef`" in card.text
    assert "| verify | incorrect 2 | 3 |" in card.text and "| dedup_traces | duplicate_trace 1 | 2 |" in card.text
    assert "| truncated | 1 |" in card.text and "| correct | 2 |" in card.text

    # the configs are what `datasets` loads the folder by: the Parquet rows, not the save_to_disk copy in hf/
    import datasets

    ds = datasets.load_dataset(str(run_dir / "sft"), split="train")
    assert ds.num_rows == 2 and ds[0]["completion"][0]["role"] == "assistant"


@pytest.mark.parametrize("n,label", [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (250_000, "100K<n<1M"),
                                     (10**13, "n>1T")])
def test_size_category(n, label):
    assert size_category(n) == label


def _fake_package(run, name, base="/local/tiny"):
    pkg = run / "package" / name
    for rel in ("merged/model.safetensors", "merged/config.json", "gguf/x-Q8_0.gguf", "gguf/Modelfile",
                "manifest.json"):
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(rel)
    (pkg / "README.md").write_text(f"---\nbase_model: {base}\nlibrary_name: transformers\ntags:\n- distill\n---\n\n"
                                   f"# {name}\n")
    return pkg


def test_publish_plans_model_and_dataset_uploads(run_dir):
    from huggingface_hub import DatasetCard, ModelCard

    pkg = _fake_package(run_dir, "s1")
    p = plan(run_dir, license="apache-2.0")
    assert p.repo_type == "model"
    assert p.files == {"model.safetensors": pkg / "merged/model.safetensors",
                       "config.json": pkg / "merged/config.json", "gguf/x-Q8_0.gguf": pkg / "gguf/x-Q8_0.gguf",
                       "gguf/Modelfile": pkg / "gguf/Modelfile", "manifest.json": pkg / "manifest.json"}
    card = ModelCard(p.card)
    assert card.data.license == "apache-2.0" and card.data.base_model is None  # a local path is no Hub id

    _fake_package(run_dir, "s2", base="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert ModelCard(plan(run_dir, student="s2").card).data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(PublishError, match=r"has 2 packaged students \(s1, s2\): pass --student NAME$"):
        plan(run_dir)
    with pytest.raises(PublishError, match=r"no packaged student 'nope' in .* \(packaged: s1, s2\)$"):
        plan(run_dir, student="nope")

    d = plan(run_dir, dataset=True, license="mit")
    assert d.repo_type == "dataset" and d.files == {"train.parquet": run_dir / "sft" / "train.parquet"}
    assert DatasetCard(d.card).data.license == "mit"


def test_publish_without_token_is_one_line_error(run_dir, tmp_path, monkeypatch, capsys):
    import os

    from distill.cli import main

    _fake_package(run_dir, "s1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HOME"] = str(tmp_path / "hf-home")  # no saved login either
    out = subprocess.run([sys.executable, "-m", "distill.cli", "publish", str(run_dir), "--repo-id", "org/student"],
                         cwd=REPO, capture_output=True, text=True, env=env)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == "error: publish: no Hugging Face token: set HF_TOKEN or run `hf auth login`\n"

    monkeypatch.setenv("HF_TOKEN", "hf_not_used")  # checks that come before the token
    assert main(["publish", str(run_dir), "--repo-id", "no slash here"]) == 2
    assert capsys.readouterr().err == "error: publish: --repo-id must be ORG/NAME, not 'no slash here'\n"
    assert main(["publish", str(tmp_path / "nowhere"), "--repo-id", "org/x"]) == 2
    assert capsys.readouterr().err == f"error: publish: run directory not found: {tmp_path / 'nowhere'}\n"
