"""The ledger's training figures come from what a real (CPU) training stage measured: workers x GPUs per worker x
the stage's wall time, with only the GPU count declared (it trains on the CPU here); the report shows the same."""

from __future__ import annotations

import pytest
import yaml

from distill import artifacts, ledger
from distill.pipeline.train import train_student
from distill.report.data import ledger as report_ledger
from distill.report.data import load_run
from distill.spec import parse_spec
from tests.conftest import sft_dir as _sft_dir


@pytest.mark.slow  # trains
def test_training_accelerator_seconds_are_workers_x_gpus_x_wall(tmp_path, tiny_llama):
    root = tmp_path / "run"
    spec = parse_spec({
        "name": "ledger", "output_dir": str(root), "teacher": {"model": "m"},
        "prompts": {"sources": [{"dataset": "gsm8k_sample"}]}, "prices": {"accelerator_hour": 3.0},
        "students": [{"name": "s", "base": str(tiny_llama), "epochs": 1, "batch_size": 1, "max_length": 128,
                      "packing": False, "gpus_per_worker": 2}]})
    root.mkdir()
    (root / "spec.yaml").write_text(yaml.safe_dump(spec.model_dump(), sort_keys=False))
    student, sft = spec.students[0], _sft_dir(tmp_path)
    marker = artifacts.commit_stage(root / "train" / "s", "fp",
                                    lambda d: train_student(sft, d, student, seed=0, checkpoint_dir=root / "ck"))
    stats = marker["stats"]

    expected = student.workers * student.gpus_per_worker * stats["wall_seconds"]
    assert stats["accelerators"] == 2 and 0 < stats["wall_seconds"] <= marker["seconds"]
    entry = ledger.build({"train/s": marker}, spec)["stages"]["train/s"]
    # both figures are written rounded to 0.01 s: 2 x a rounded wall may differ from the rounded product by 0.015
    assert entry["accelerator_seconds"] == pytest.approx(expected, abs=0.02)
    assert entry["wall_seconds"] == pytest.approx(stats["wall_seconds"], abs=0.01)
    assert entry["cost_usd"] == pytest.approx(entry["accelerator_seconds"] / 3600 * 3.0, abs=1e-6)

    row = next(r for r in report_ledger(load_run(root))["rows"] if r["key"] == "train/s")
    assert row["source"] == "measured" and row["accelerators"] == 2
    assert row["acc_hours"] == entry["accelerator_seconds"] / 3600  # the report's figure is the ledger's


def _spec(**extra):
    return parse_spec({"name": "l", "output_dir": "o", "teacher": {"model": "m"},
                       "prompts": {"sources": [{"dataset": "gsm8k_sample"}]},
                       "students": [{"name": "s", "base": "b", "workers": 4, "gpus_per_worker": 2}], **extra})


def test_a_stage_that_measured_itself_keeps_its_figures():
    stats = ledger.charge({"model": "s", "benchmarks": {}}, accelerators=3, wall_seconds=10.0)
    entry = ledger.build({"eval/s": {"stats": stats, "seconds": 12.5}}, _spec())["stages"]["eval/s"]
    assert (entry["accelerator_seconds"], entry["wall_seconds"]) == (30.0, 10.0)


def test_stages_of_older_runs_are_estimated_from_their_placement():
    """Runs made before train and eval measured themselves: wall x workers x GPUs per worker; wall x eval
    replicas x GPUs per replica."""
    spec = _spec(eval={"replicas": 3, "num_gpus": 1})
    built = ledger.build({"train/s": {"stats": {"device": "cuda"}, "seconds": 100.0},
                          "eval/s": {"stats": {}, "seconds": 10.0}}, spec)["stages"]
    assert built["train/s"]["accelerator_seconds"] == 800.0 and built["eval/s"]["accelerator_seconds"] == 30.0
