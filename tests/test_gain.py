"""Training teaches something: a SmolLM2-135M LoRA student trained on verified traces of arith_steps problems makes
fewer format failures (no answer, or cut at the token limit) on held-out arith_steps_test problems than its base.

Counted from the eval samples, so a regression that leaves the student untouched (no examples reach the trainer,
a no-op adapter, a broken merge, a chat template that loses the answer) fails CI. The traces are committed
(`tests/data/arith_steps_verified.jsonl`: kept traces of `examples/gain.yaml`'s few-shot SmolLM2 teacher, as its
verify stage wrote them) so the test pays for training and two small evals, not for the teacher's rejection
sampling (a few percent of its samples verify). They go through the real SFT stage (`build_sft_dataset`)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.models import resolve_model
from distill.pipeline.eval import evaluate_model
from distill.pipeline.sft import KEPT_COLUMNS, build_sft_dataset
from distill.pipeline.train import train_student
from distill.spec import Student, eval_placement, parse_spec
from distill.stats import is_format_failure
from tests.conftest import REPO

pytestmark = pytest.mark.slow

TRACES = REPO / "tests" / "data" / "arith_steps_verified.jsonl"
PROBLEMS, MAX_TOKENS = 24, 96


def _sft_dir(tmp_path):
    rows = [json.loads(line) for line in TRACES.read_text().splitlines()]
    verify = tmp_path / "verify"
    verify.mkdir()
    pq.write_table(pa.Table.from_pylist([{c: r[c] for c in KEPT_COLUMNS} for r in rows]), verify / "kept.parquet")
    sft = tmp_path / "sft"
    sft.mkdir()
    assert build_sft_dataset(verify, sft)["examples"] == len(rows)
    return sft, len(rows)


def _format_failures(eval_dir) -> list[bool]:
    samples = pq.read_table(eval_dir / "samples.parquet").to_pylist()
    return [is_format_failure(s["reason"], s["finish_reason"], s["correct"]) for s in samples]


def test_student_makes_fewer_format_failures_than_its_base(ray_local, tmp_path):
    sft, n_traces = _sft_dir(tmp_path)
    student = Student(name="ci-lora", base="smollm2-135m", method="lora", epochs=2, learning_rate=1e-3,
                      batch_size=8, max_length=512, lora={"r": 16, "alpha": 32, "dropout": 0.0})
    train_dir = tmp_path / "train"
    train_dir.mkdir()
    stats = train_student(sft, train_dir, student, seed=0)
    assert stats["examples"] == n_traces and stats["dropped_over_max_length"] == 0

    spec = parse_spec({
        "name": "gain-ci", "output_dir": str(tmp_path / "run"), "teacher": {"model": "smollm2-135m"},
        "prompts": {"sources": [{"dataset": "arith_steps_train", "limit": 1}]}, "students": [student.model_dump()],
        "eval": {"benchmarks": [{"name": "arith_steps_test", "problems": PROBLEMS}], "k": 1,
                 "max_tokens": MAX_TOKENS, "num_cpus": 2, "max_model_len": 1024}})
    placed = eval_placement(spec)
    base_dir, student_dir = tmp_path / "eval-base", tmp_path / "eval-student"
    base_dir.mkdir(), student_dir.mkdir()
    base = evaluate_model(resolve_model("smollm2-135m"), "base:smollm2-135m", spec.eval, placed, 0, base_dir)
    mine = evaluate_model(str(train_dir / "merged"), "ci-lora", spec.eval, placed, 0, student_dir, base_dir=base_dir)

    base_fail, student_fail = _format_failures(base_dir), _format_failures(student_dir)
    assert len(base_fail) == len(student_fail) == PROBLEMS
    for scores, fails in ((base, base_fail), (mine, student_fail)):  # scores.json says what the samples say
        assert scores["benchmarks"]["arith_steps_test"]["format_failures"] == round(sum(fails) / PROBLEMS, 4)
    # The base runs to the limit or ends without a boxed answer on most problems; the student learned the short,
    # boxed answers: at least a third of the problems move from a format failure to a readable answer.
    assert sum(student_fail) <= sum(base_fail) - PROBLEMS // 3, (
        f"format failures on {PROBLEMS} held-out problems: student {sum(student_fail)}, base {sum(base_fail)}")
    paired = mine["vs_base"]["benchmarks"]["arith_steps_test"]
    assert (paired["problems"], paired["k"]) == (PROBLEMS, 1)
