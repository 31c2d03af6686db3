"""Adaptive sampling on a real tiny teacher, vLLM engine and verifier: sampling until one verified trace per
problem spends fewer samples than a fixed n with the same budget, for at least as many verified problems.

The teacher is the tiny random Llama fine-tuned (by the train stage itself) on a handful of additions until it
answers them right some of the time at temperature 1: a teacher whose success is a coin flip per sample, which
is exactly where adaptive sampling pays (SmolLM2-135M solves ~2% of such problems: nothing to compare)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.pipeline.sft import assistant_turn
from distill.pipeline.generate import generate_stage
from distill.spec import Sampling, Student, VLLMTeacher
from distill.pipeline.train import train_student
from distill.verify import judge

pytestmark = pytest.mark.slow

BUDGET = 4
PROBLEMS = [(a, b) for a, b in ((2, 3), (4, 4), (1, 6), (5, 2), (3, 3), (6, 1), (2, 7), (4, 5), (8, 1), (3, 6))]
ENGINE = {"max_model_len": 256, "enforce_eager": True}
EPOCHS = 25  # under-trained on purpose: right about half the time at temperature 1


def _question(a: int, b: int) -> str:
    return f"What is {a} + {b}?"


@pytest.fixture(scope="module")
def teacher_dir(tiny_llama, tmp_path_factory):
    import datasets

    tmp = tmp_path_factory.mktemp("teacher")
    rows = [{"prompt": [{"role": "user", "content": _question(a, b)}],
             "completion": [{"role": "assistant", "content": assistant_turn(f"{a} + {b} = {a + b}", str(a + b),
                                                                               "correct")}]}
            for a, b in PROBLEMS]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp / "sft" / "hf"))
    (tmp / "train").mkdir()
    student = Student(name="teacher", base=str(tiny_llama), method="full", epochs=EPOCHS, learning_rate=1e-2,
                      batch_size=4, max_length=128)
    train_student(tmp / "sft", tmp / "train", student, seed=0)
    return tmp / "train" / "merged"



def _run(tmp_path, teacher_dir, name, sampling):
    pdir = tmp_path / "prompts"
    if not pdir.exists():
        pdir.mkdir()
        pq.write_table(pa.Table.from_pylist([{"problem_id": f"add-{a}-{b}", "answer": str(a + b),
                                              "prompt": _question(a, b)} for a, b in PROBLEMS]),
                       pdir / "prompts.parquet")
    out = tmp_path / name
    out.mkdir()
    teacher = VLLMTeacher(model=str(teacher_dir), num_cpus=2, batch_size=len(PROBLEMS), engine=ENGINE)
    stats = generate_stage(pdir, out, teacher, sampling, seed=0)
    rows = [r for f in sorted(out.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return stats, rows


def test_until_verified_spends_fewer_samples_than_fixed_n(teacher_dir, ray_local, tmp_path):
    common = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 48}
    _, fixed = _run(tmp_path, teacher_dir, "fixed", Sampling(n=BUDGET, **common))
    ad_stats, adaptive = _run(tmp_path, teacher_dir, "adaptive",
                              Sampling(until_verified=1, max_samples=BUDGET, **common))

    # fixed n: judged afterwards, as the verify stage would
    fixed_ok = {r["problem_id"] for r in fixed if judge(r["response"], r["answer"], r["finish_reason"]).correct}
    ad = ad_stats["adaptive"]
    ad_ok = {r["problem_id"] for r in adaptive if r["verified"]}
    assert ad["samples"] == len(adaptive) and ad["problems_verified"] == len(ad_ok)
    # the verdicts recorded while sampling are the verifier's
    for r in adaptive:
        assert r["verified"] == judge(r["response"], r["answer"], r["finish_reason"]).correct
    # no problem sampled after its first verified trace, none beyond the budget; indices dense from 0
    by: dict[str, list[dict]] = {}
    for r in adaptive:
        by.setdefault(r["problem_id"], []).append(r)
    for rs in by.values():
        rs.sort(key=lambda r: r["sample_index"])
        assert [r["sample_index"] for r in rs] == list(range(len(rs))) and len(rs) <= BUDGET
        assert not any(r["verified"] for r in rs[:-1])
        assert rs[-1]["verified"] or len(rs) == BUDGET
    assert len(by) == len(PROBLEMS) and len(fixed) == len(PROBLEMS) * BUDGET
    print(f"fixed n={BUDGET}: {len(fixed)} samples, {len(fixed_ok)} problems verified; "
          f"until_verified=1: {len(adaptive)} samples, {len(ad_ok)} problems verified, "
          f"{ad['samples_per_verified']} samples per verified trace")
    right = sum(judge(r["response"], r["answer"], r["finish_reason"]).correct for r in fixed)
    assert 0 < right < len(fixed), f"{right}/{len(fixed)} samples right: the teacher must be a coin flip"
    # As many verified problems, up to sampling luck, for measurably fewer samples.
    assert len(ad_ok) >= len(fixed_ok) - 2
    assert len(adaptive) <= 0.8 * len(fixed)
    assert len(adaptive) / len(ad_ok) < len(fixed) / len(fixed_ok)
