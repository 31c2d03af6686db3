"""Where a killed eval resumes: its shard set's directory is keyed by the model and what decides the samples, not
by how fast or where eval runs; the judge's workers are a speed knob too (all cores unless set)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

from distill.pipeline.stages import STAGES, eval_shard_dir
from distill.spec import parse_spec


def _spec(eval_over: dict | None = None, filter_over: dict | None = None):
    return parse_spec({"name": "x", "output_dir": "o", "teacher": {"model": "m"},
                       "prompts": {"sources": [{"dataset": "gsm8k_sample"}]}, "students": [{"name": "s", "base": "b"}],
                       "eval": {"benchmarks": ["gsm8k_test"], **(eval_over or {})}, "filter": filter_over or {}})


def _dir(spec, model_id: str = "train-fp-1") -> Path:
    return eval_shard_dir(SimpleNamespace(spec=spec, markers={}, root=Path(spec.output_dir)), model_id, "s")


def test_the_eval_shard_set_survives_speed_knobs_and_not_a_new_model_or_protocol():
    base = _dir(_spec())
    assert base.parent.name == ".eval-shards"
    for over in ({"replicas": 4}, {"num_cpus": 8}, {"engine": {"max_num_seqs": 512}}):
        assert _dir(_spec(over)) == base, over
    assert _dir(_spec(filter_over={"workers": 7, "verify_timeout_s": 9})) == base
    assert _dir(_spec(), "train-fp-2") != base  # a retrained student: same merged/ path, other weights
    for over in ({"k": 4}, {"max_tokens": 64}, {"temperature": 1.0}, {"benchmarks": ["amc23"]}):
        assert _dir(_spec(over)) != base, over


def test_filter_workers_default_to_all_cores_and_leave_the_verify_fingerprint_alone():
    assert _spec().filter.judge_workers() == len(os.sched_getaffinity(0))
    assert _spec(filter_over={"workers": 3}).filter.judge_workers() == 3
    verify = next(st for st in STAGES if st.name == "verify")

    def covers(spec):
        return json.dumps(verify.covers(SimpleNamespace(spec=spec, markers={}), None), sort_keys=True)

    assert covers(_spec(filter_over={"workers": 3})) == covers(_spec())
    assert covers(_spec(filter_over={"verify_timeout_s": 9})) != covers(_spec())
