"""Throughput knobs never discard work: the generate shard key, the generate stage's fingerprint and the eval
stages' fingerprints stay equal when only batch sizes, replicas, CPUs, GPU counts, concurrency, timeouts or
retries change, and differ when anything that changes a trace's or a score's content does."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest

from distill.pipeline.generate import shard_key, shard_layout
from distill.pipeline.stages import STAGES
from distill.spec import parse_spec

VLLM = {"model": "m", "backend": "vllm", "num_gpus": 2, "engine": {"tensor_parallel_size": 2, "dtype": "bfloat16"}}
API = {"model": "gpt-x", "backend": "openai", "base_url": "http://127.0.0.1:9/v1"}


def _spec(teacher: dict, **over):
    data = {"name": "x", "output_dir": "o", "teacher": copy.deepcopy(teacher), "seed": 0,
            "prompts": {"sources": [{"dataset": "gsm8k_sample"}]}, "students": [{"name": "s", "base": "b"}],
            "eval": {"benchmarks": ["gsm8k_test"]}}
    for path, value in over.items():  # "a.b": value sets data["a"]["b"]
        *head, last = path.split(".")
        node = data
        for part in head:
            node = node.setdefault(part, {})
        node[last] = value
    return parse_spec(data)


def _keys(spec, prompts_file) -> dict:
    """What decides whether work is re-used: the shard key and each stage's own covers."""
    run = SimpleNamespace(spec=spec, markers={})  # no stage finished yet: no base eval to pair with
    covers = {st.name: json.dumps(st.covers(run, "s"), sort_keys=True, default=str) for st in STAGES
              if st.name in ("generate", "eval", "eval-base")}
    return {"shards": shard_key(prompts_file, spec.teacher, spec.sampling, spec.seed), **covers}


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.parquet"
    path.write_bytes(b"prompts v1")
    return path


KNOBS = {
    "vllm": [("teacher.batch_size", 256), ("teacher.shard_size", 7), ("teacher.replicas", 8), ("teacher.num_cpus", 16),
             ("teacher.max_shard_attempts", 9), ("teacher.num_gpus", 4), ("teacher.shard_timeout_s", 60),
             ("teacher.engine_start_timeout_s", 60),
             ("teacher.engine", {"tensor_parallel_size": 4, "dtype": "bfloat16", "gpu_memory_utilization": 0.95,
                                 "max_num_seqs": 512, "enable_prefix_caching": True}),
             ("eval.replicas", 4), ("eval.num_cpus", 8), ("eval.num_gpus", 2),
             ("eval.engine", {"tensor_parallel_size": 2, "max_num_batched_tokens": 8192})],
    "openai": [("teacher.concurrency", 256), ("teacher.timeout_s", 30), ("teacher.max_retries", 0),
               ("teacher.backoff_s", 5.0), ("teacher.max_backoff_s", 5.0), ("teacher.api_key_env", "KEY"),
               ("teacher.batch_size", 8)],
}


@pytest.mark.parametrize("backend,knob,value", [(b, k, v) for b, knobs in KNOBS.items() for k, v in knobs])
def test_a_throughput_knob_keeps_shards_and_stages(prompts_file, backend, knob, value):
    teacher = VLLM if backend == "vllm" else API
    assert _keys(_spec(teacher, **{knob: value}), prompts_file) == _keys(_spec(teacher), prompts_file)


def test_a_knob_added_later_leaves_existing_keys_alone():
    from distill.spec import UNFINGERPRINTED_FIELDS, teacher_fingerprint

    for teacher in (VLLM, API):
        assert not UNFINGERPRINTED_FIELDS & set(teacher_fingerprint(_spec(teacher).teacher))


CONTENT = [("teacher.model", "other"), ("teacher.system_prompt", "Think."), ("seed", 1),
           ("teacher.examples", [{"user": "1 + 1?", "assistant": "1 + 1 = 2. The answer is \\boxed{2}."}]),
           ("sampling.temperature", 1.0), ("sampling.max_tokens", 4096), ("sampling.n", 4),
           ("teacher.engine", {"tensor_parallel_size": 2, "dtype": "float16"}),
           ("teacher.engine", {"tensor_parallel_size": 2, "dtype": "bfloat16", "max_model_len": 2048}),
           ("teacher.num_gpus", 0)]  # the CPU build: its own engine defaults (float32)


@pytest.mark.parametrize("knob,value", CONTENT)
def test_what_changes_a_trace_starts_a_new_shard_set(prompts_file, knob, value):
    before, after = _keys(_spec(VLLM), prompts_file), _keys(_spec(VLLM, **{knob: value}), prompts_file)
    assert after["shards"] != before["shards"] and after["generate"] != before["generate"]


def test_other_prompts_start_a_new_shard_set(prompts_file, tmp_path):
    other = tmp_path / "other.parquet"
    other.write_bytes(b"prompts v2 (another template or system of sources)")
    spec = _spec(VLLM)
    assert shard_key(other, spec.teacher, spec.sampling, 0) != shard_key(prompts_file, spec.teacher, spec.sampling, 0)


@pytest.mark.parametrize("knob,value", [("eval.temperature", 1.0), ("eval.k", 4), ("eval.max_tokens", 4096),
                                        ("eval.benchmarks", [{"name": "gsm8k_test", "max_tokens": 32768}]),
                                        ("eval.engine", {"dtype": "float16"}), ("eval.max_model_len", 2048),
                                        ("eval.num_gpus", 0), ("seed", 3)])
def test_what_changes_a_score_redoes_eval(prompts_file, knob, value):
    before, after = _keys(_spec(VLLM), prompts_file), _keys(_spec(VLLM, **{knob: value}), prompts_file)
    assert after["eval"] != before["eval"] and after["eval-base"] != before["eval-base"]


def test_a_resumed_shard_set_keeps_the_shard_size_it_started_with(tmp_path):
    assert shard_layout(tmp_path, 64) == 64  # a new set: recorded before any shard is written
    assert shard_layout(tmp_path, 16) == 16  # nothing committed yet: the new size is free to apply
    (tmp_path / "shard-000000.parquet").write_bytes(b"committed")
    assert shard_layout(tmp_path, 256) == 16  # shards committed: their layout stands
    assert json.loads((tmp_path / "_layout.json").read_text()) == {"shard_size": 16}


@pytest.mark.parametrize("teacher", [{"model": "m"}, VLLM, API], ids=["vllm-cpu-defaults", "vllm-gpus", "openai"])
def test_a_spec_read_back_from_its_run_directory_keeps_every_key(prompts_file, teacher):
    """The run writes spec.yaml from the parsed spec; read back, defaults written as ints (num_gpus 0, timeout_s 600)
    come back as floats (0.0, 600.0). The shard key, the stages' fingerprints and the spec hash stay the same."""
    import yaml

    from distill import artifacts

    spec = _spec(teacher, **{"sampling.max_tokens": 600, "sampling.temperature": 1})
    again = parse_spec(yaml.safe_load(yaml.safe_dump(spec.model_dump(), sort_keys=False)))
    as_json = [json.dumps(s.model_dump(), sort_keys=True, default=str) for s in (spec, again)]
    assert as_json[0] != as_json[1]  # the round trip does change how numbers are written
    assert shard_key(prompts_file, again.teacher, again.sampling, again.seed) == \
        shard_key(prompts_file, spec.teacher, spec.sampling, spec.seed)
    assert again.fingerprint() == spec.fingerprint()
    for st in (st for st in STAGES if st.name in ("generate", "verify", "train", "eval", "eval-base")):
        run, run_again = SimpleNamespace(spec=spec, markers={}), SimpleNamespace(spec=again, markers={})
        assert artifacts.fingerprint(st.covers(run_again, "s")) == artifacts.fingerprint(st.covers(run, "s")), st.name
