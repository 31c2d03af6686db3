"""Training teaches something: a SmolLM2-135M student trained on its own verified traces (self-distillation on
arith_steps problems) makes fewer format failures (no answer, or cut at the token limit) on held-out
arith_steps_test problems than its base. Counted from the eval samples, so a regression that leaves the student
untouched (no examples, a no-op adapter, a broken merge) fails. Also checks the run's closing table."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import yaml

from distill.stats import is_format_failure
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SYSTEM = ("Solve the word problem in a few short steps: one line per operation with its arithmetic. "
          "End with: The answer is \\boxed{N}.")


def _format_failures(eval_dir) -> tuple[int, int]:
    rows = pq.read_table(eval_dir / "samples.parquet", columns=["reason", "finish_reason", "correct"]).to_pylist()
    return sum(is_format_failure(r["reason"], r["finish_reason"], r["correct"]) for r in rows), len(rows)


def test_student_makes_fewer_format_failures_than_its_base(tmp_path):
    spec = {
        "name": "gain-ci", "output_dir": str(tmp_path / "run"), "seed": 0,
        "teacher": {"model": "smollm2-135m", "num_cpus": 2, "batch_size": 64, "system_prompt": SYSTEM,
                    "engine": {"max_model_len": 768, "enforce_eager": True}},
        "prompts": {"sources": [{"dataset": "arith_steps_train", "limit": 32}]},
        "sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 160, "until_verified": 1, "max_samples": 3},
        "students": [{"name": "ci-lora", "base": "smollm2-135m", "method": "lora", "epochs": 3,
                      "learning_rate": 1e-3, "batch_size": 4, "max_length": 512,
                      "lora": {"r": 16, "alpha": 32, "dropout": 0.0}}],
        "eval": {"benchmarks": [{"name": "arith_steps_test", "problems": 32}], "k": 1, "max_tokens": 128},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "run", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "run"
    assert json.loads((run / "sft" / "_DONE.json").read_text())["stats"]["examples"] >= 1

    base_fail, base_n = _format_failures(run / "eval" / "base-smollm2-135m")
    student_fail, student_n = _format_failures(run / "eval" / "ci-lora")
    assert base_n == student_n == 32
    assert student_fail < base_fail, f"format failures: student {student_fail}/32, base {base_fail}/32"

    # the paired comparison is in scores.json and is what the run prints last
    scores = json.loads((run / "eval" / "ci-lora" / "scores.json").read_text())
    paired = scores["vs_base"]["benchmarks"]["arith_steps_test"]
    assert (paired["problems"], paired["k"]) == (32, 1) and scores["vs_base"]["model"] == "base:smollm2-135m"
    assert scores["benchmarks"]["arith_steps_test"]["format_failures"] == round(student_fail / 32, 4)
    row = next(line for line in proc.stdout.splitlines() if line.strip().startswith("arith_steps_test"))
    assert f"{100 * paired['difference']:+5.1f} ± {100 * paired['paired_stderr']:.1f}" in row
