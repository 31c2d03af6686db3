"""Adaptive sampling on a real teacher (SmolLM2-135M solves ~8% of one-step arithmetic problems): sampling
until one verified trace per problem spends fewer samples per verified problem than a fixed n with the same
budget.

Opt-in (DISTILL_REAL_TEACHER_TESTS=1): it needs ~10k generated tokens, minutes on a free 2-core machine and far
more on a shared one. `tests/test_generate_openai.py` checks the same property deterministically, in seconds.
The adaptive path of the vLLM actor itself is exercised in `tests/test_generate_vllm.py`."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.generate import generate_stage
from distill.spec import DEFAULT_TEMPLATE, Sampling, Teacher
from distill.verify import judge
from tests.conftest import REPO

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("DISTILL_REAL_TEACHER_TESTS") != "1",
                                 reason="real-teacher test: set DISTILL_REAL_TEACHER_TESTS=1")]

BUDGET = 4


def _prompts(tmp_path, n):
    rows = [json.loads(line) for line in (REPO / "datasets_spec/data/arithmetic.jsonl").read_text().splitlines()][:n]
    d = tmp_path / "prompts"
    d.mkdir()
    pq.write_table(pa.Table.from_pylist([{"problem_id": r["id"], "answer": r["answer"],
                                          "prompt": DEFAULT_TEMPLATE.replace("{problem}", r["question"])}
                                         for r in rows]), d / "prompts.parquet")
    return d


def _run(tmp_path, name, sampling):
    out = tmp_path / name
    out.mkdir()
    teacher = Teacher(model="smollm2-135m", num_cpus=2, batch_size=16,
                      engine={"max_model_len": 512, "enforce_eager": True, "gpu_memory_utilization": 0.08})
    stats = generate_stage(tmp_path / "prompts", out, teacher, sampling, seed=0)
    rows = [r for f in sorted(out.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return stats, rows


def test_until_verified_spends_fewer_samples_than_fixed_n(tmp_path):
    problems = 16
    _prompts(tmp_path, problems)
    common = {"temperature": 0.7, "top_p": 0.95, "max_tokens": 192}
    fixed_stats, fixed = _run(tmp_path, "fixed", Sampling(n=BUDGET, **common))
    ad_stats, adaptive = _run(tmp_path, "adaptive", Sampling(until_verified=1, max_samples=BUDGET, **common))

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
    for pid, rs in by.items():
        rs.sort(key=lambda r: r["sample_index"])
        assert [r["sample_index"] for r in rs] == list(range(len(rs))) and len(rs) <= BUDGET
        assert not any(r["verified"] for r in rs[:-1])
        assert rs[-1]["verified"] or len(rs) == BUDGET
    assert len(by) == problems and len(fixed) == problems * BUDGET
    print(f"fixed n={BUDGET}: {len(fixed)} samples, {len(fixed_ok)} problems verified; "
          f"until_verified=1: {len(adaptive)} samples, {len(ad_ok)} problems verified, "
          f"{ad['samples_per_verified']} samples per verified trace")
    assert ad_ok and fixed_ok, "the teacher solved nothing: the comparison says nothing"
    assert len(adaptive) < len(fixed)
    assert len(adaptive) / len(ad_ok) < len(fixed) / len(fixed_ok)
