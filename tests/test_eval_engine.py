"""Eval on its own CPU placement with a real vLLM engine: an API teacher's spec, two benchmarks with their own k and
max_tokens, scores and truncation rates read back from samples.parquet."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from distill.pipeline.eval import evaluate_model
from distill.spec import eval_placement, parse_spec

pytestmark = pytest.mark.slow


def test_eval_runs_each_benchmarks_protocol_on_its_own_placement(tiny_llama, ray_local, tmp_path):
    spec = parse_spec({
        "name": "x", "output_dir": str(tmp_path / "run"),
        "teacher": {"model": "gpt-x", "backend": "openai", "base_url": "http://127.0.0.1:9/v1"},
        "prompts": {"sources": [{"dataset": "gsm8k_sample"}]}, "students": [{"name": "s", "base": str(tiny_llama)}],
        "eval": {"benchmarks": [{"name": "gsm8k_test", "problems": 2, "k": 3, "max_tokens": 6},
                                {"name": "amc23", "problems": 1}],
                 "k": 2, "max_tokens": 12, "num_cpus": 2}})
    placed = eval_placement(spec)
    assert placed.num_gpus == 0 and placed.engine == {}  # the CPU build, nothing from the (API) teacher
    scores = evaluate_model(str(tiny_llama), "base", spec.eval, placed, 0, tmp_path)
    samples = pq.read_table(tmp_path / "samples.parquet").to_pylist()
    assert json.loads((tmp_path / "scores.json").read_text()) == scores
    for bench, problems, k, max_tokens in (("gsm8k_test", 2, 3, 6), ("amc23", 1, 2, 12)):
        rows = [r for r in samples if r["benchmark"] == bench]
        assert len(rows) == problems * k and len({(r["problem_id"], r["sample_index"]) for r in rows}) == len(rows)
        s = scores["benchmarks"][bench]
        assert (s["problems"], s["k"], s["max_tokens"]) == (problems, k, max_tokens)
        cut = [r for r in rows if r["finish_reason"] == "length"]
        assert s["truncation_rate"] == round(len(cut) / len(rows), 4)
        assert not any(r["correct"] for r in cut) and all(r["reason"] == "truncated" for r in cut)
    # a random 3M-parameter model does not stop within 6 tokens: truncation is really measured, not assumed 0
    assert scores["benchmarks"]["gsm8k_test"]["truncation_rate"] > 0
