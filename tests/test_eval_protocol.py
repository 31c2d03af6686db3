"""Eval's per-benchmark protocol, computed from a small judged-samples table: each benchmark's own k and
max_tokens, pass@1 ± stderr, and the truncation rate (samples cut off at max_tokens count as wrong)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from distill.pipeline.eval import benchmark_scores
from distill.spec import Eval


def _samples(rows: list[tuple]) -> list[dict]:
    """(benchmark, problem_id, correct, finish_reason) rows, through a real Arrow table as samples.parquet is."""
    cols = ["benchmark", "problem_id", "correct", "finish_reason"]
    return pa.Table.from_pylist([dict(zip(cols, r)) for r in rows]).to_pylist()


def test_each_benchmark_has_its_own_k_max_tokens_and_truncation_rate():
    ev = Eval(benchmarks=[{"name": "aime24", "k": 4, "max_tokens": 32768}, "math500"], k=2, max_tokens=1024)
    samples = _samples([
        # aime24: 2 problems x k=4; one sample cut off (marked correct by a lenient judge: still wrong)
        ("aime24", "a-0", True, "stop"), ("aime24", "a-0", True, "stop"), ("aime24", "a-0", False, "stop"),
        ("aime24", "a-0", True, "length"),
        ("aime24", "a-1", False, "stop"), ("aime24", "a-1", False, "length"), ("aime24", "a-1", False, "stop"),
        ("aime24", "a-1", True, "stop"),
        # math500: 2 problems x eval's k=2; no truncation
        ("math500", "m-0", True, "stop"), ("math500", "m-0", True, "stop"),
        ("math500", "m-1", False, "stop"), ("math500", "m-1", True, "stop"),
    ])
    scores = benchmark_scores(samples, ev)
    aime = scores["aime24"]
    # per problem: a-0 2/4 (the truncated one is wrong), a-1 1/4 -> mean 0.375; stderr = |0.5-0.25|/2 = 0.125;
    # format failures: the 2 cut-off samples of 8 (the other wrong ones have an answer)
    assert aime == {"pass@1": 0.375, "stderr": 0.125, "problems": 2, "k": 4, "max_tokens": 32768,
                    "truncation_rate": 0.25, "format_failures": 0.25}
    assert scores["math500"] == {"pass@1": 0.75, "stderr": 0.25, "problems": 2, "k": 2, "max_tokens": 1024,
                                 "truncation_rate": 0.0, "format_failures": 0.0}


def test_a_benchmark_with_no_samples_scores_zero_without_dividing_by_zero():
    scores = benchmark_scores([], Eval(benchmarks=["gsm8k_test"]))
    assert scores["gsm8k_test"] == {"pass@1": 0.0, "stderr": 0.0, "problems": 0, "k": 1, "max_tokens": 1024,
                                    "truncation_rate": 0.0, "format_failures": 0.0}


def test_per_benchmark_k_and_max_tokens_are_validated_with_the_field_named():
    from distill.spec import SpecError, parse_spec

    with pytest.raises(SpecError) as e:
        parse_spec({"name": "x", "output_dir": "o", "teacher": {"model": "m"},
                    "prompts": {"sources": [{"dataset": "gsm8k_sample"}]}, "students": [{"name": "s", "base": "b"}],
                    "eval": {"benchmarks": [{"name": "aime24", "k": 0}]}})
    assert str(e.value) == "eval.benchmarks[0].k: Input should be greater than or equal to 1"
