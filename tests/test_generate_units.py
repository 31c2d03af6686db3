"""Fast checks of generation's pure parts: Ray placement for tensor/pipeline parallel, the ledger, adaptive
bookkeeping, the spec fields."""

from __future__ import annotations

import pytest

from distill import ledger
from distill.teachers.base import Adaptive
from distill.teachers.vllm import VLLMBackend, placement
from distill.spec import Prices, Sampling, SpecError, VLLMTeacher, parse_spec


def test_placement_single_device_and_cpu():
    p = placement(VLLMTeacher(model="m", num_gpus=1, num_cpus=4))
    assert p["actor"] == {"num_cpus": 4, "num_gpus": 1} and p["bundles"] is None and p["engine"] == {}
    cpu = placement(VLLMTeacher(model="m", num_gpus=0, engine={"tensor_parallel_size": 1}))
    assert cpu["actor"]["num_gpus"] == 0 and cpu["accelerators"] == 0


def test_placement_tensor_and_pipeline_parallel_become_placement_groups():
    tp = placement(VLLMTeacher(model="m", num_gpus=4, num_cpus=2, engine={"tensor_parallel_size": 4}))
    assert tp["bundles"] == [{"CPU": 2, "GPU": 0}] + [{"GPU": 1, "CPU": 1}] * 4
    assert tp["strategy"] == "STRICT_PACK"  # TP stays on one node
    assert tp["actor"] == {"num_cpus": 2, "num_gpus": 0, "placement_group_bundle_index": 0}
    assert tp["engine"] == {"distributed_executor_backend": "ray"} and tp["accelerators"] == 4
    pp = placement(VLLMTeacher(model="m", num_gpus=8, engine={"tensor_parallel_size": 4, "pipeline_parallel_size": 2}))
    assert len(pp["bundles"]) == 9 and pp["strategy"] == "PACK" and pp["world_size"] == 8
    with pytest.raises(ValueError, match="num_gpus"):
        placement(VLLMTeacher(model="m", num_gpus=2, engine={"tensor_parallel_size": 4}))


def test_cpu_engines_start_eager_unless_the_spec_says_otherwise():
    cpu = VLLMBackend(VLLMTeacher(model="m", num_gpus=0, engine={"max_model_len": 512}), seed=0).engine_kwargs()
    assert cpu["enforce_eager"] is True and cpu["max_model_len"] == 512 and cpu["dtype"] == "float32"
    compiled = VLLMBackend(VLLMTeacher(model="m", engine={"enforce_eager": False}), seed=0).engine_kwargs()
    assert compiled["enforce_eager"] is False
    gpu = VLLMBackend(VLLMTeacher(model="m", num_gpus=1, engine={"max_model_len": 512}), seed=0).engine_kwargs()
    assert gpu == {"max_model_len": 512}  # on GPUs vLLM's own defaults (CUDA graphs) stand
    tp = VLLMBackend(VLLMTeacher(model="m", num_gpus=2, engine={"tensor_parallel_size": 2}), seed=0).engine_kwargs()
    assert tp == {"tensor_parallel_size": 2, "distributed_executor_backend": "ray"}


def test_cpu_default_context_fits_the_model(tmp_path):
    (tmp_path / "config.json").write_text('{"max_position_embeddings": 1024}')  # a 1k-context student
    small = VLLMBackend(VLLMTeacher(model=str(tmp_path)), seed=0).engine_kwargs()
    assert small["max_model_len"] == 1024  # vLLM refuses a context above the model's own
    (tmp_path / "config.json").write_text('{"max_position_embeddings": 32768}')
    assert VLLMBackend(VLLMTeacher(model=str(tmp_path)), seed=0).engine_kwargs()["max_model_len"] == 4096
    said = VLLMBackend(VLLMTeacher(model=str(tmp_path), engine={"max_model_len": 8192}), seed=0).engine_kwargs()
    assert said["max_model_len"] == 8192


def test_ledger_costs_and_totals():
    spec = parse_spec({"name": "x", "output_dir": "o", "teacher": {"model": "m", "num_gpus": 8, "replicas": 2},
                       "prompts": {"sources": [{"dataset": "gsm8k_sample"}]},
                       "students": [{"name": "s", "base": "b"}],
                       "prices": {"accelerator_hour": 2.0, "completion_tokens_per_million": 1.0}})
    markers = {
        "prompts": {"seconds": 3.0, "stats": {"problems": 10}},
        "generate": {"seconds": 1800.0, "stats": {"prompt_tokens": 1000, "completion_tokens": 2_000_000}},
        "eval/s": {"seconds": 360.0, "stats": {}},
        "train/s": {"seconds": 100.0, "stats": {"accelerators": 1}},
    }
    led = ledger.build(markers, spec)
    g = led["stages"]["generate"]
    assert g["accelerator_seconds"] == 16 * 1800 and g["cost_usd"] == pytest.approx(16 * 0.5 * 2.0 + 2.0)
    assert led["stages"]["eval/s"]["accelerator_seconds"] == 1 * 360  # eval's own placement: 1 GPU, not the teacher's 8
    assert led["stages"]["prompts"]["cost_usd"] == 0
    assert led["total"]["tokens_out"] == 2_000_000
    assert led["total"]["cost_usd"] == pytest.approx(sum(e["cost_usd"] for e in led["stages"].values()))
    assert led["prices"]["accelerator_hour"] == 2.0 and set(led["total"]) == set(ledger.KEYS)
    # R1's base run: 2.788M H800 GPU-hours at $2
    assert ledger.cost(0, 0, 2.788e6 * 3600, Prices(accelerator_hour=2)) == pytest.approx(5.576e6)
    # a stage that measured its own ledger keeps its numbers, re-priced
    m = {"generate": {"seconds": 99, "stats": {"ledger": ledger.entry(10, 20, 50, 100)}}}
    assert ledger.build(m, spec)["stages"]["generate"]["accelerator_seconds"] == 100


def test_adaptive_rounds():
    ad = Adaptive(Sampling(n=4, until_verified=2, max_samples=5).model_dump())
    rec = {"answer": "3"}
    assert ad.first_round(rec) == 2
    assert ad.next_round(rec, spent=2, verified=1) == 1
    assert ad.next_round(rec, spent=4, verified=1) == 1 and ad.next_round(rec, spent=5, verified=1) == 0
    assert ad.next_round(rec, spent=3, verified=2) == 0
    assert ad.first_round({"answer": ""}) == 1 and ad.next_round({"answer": ""}, 1, 0) == 0
    assert ad.judge("so the answer is \\boxed{3}", rec, "stop") is True
    assert ad.judge("so the answer is \\boxed{4}", rec, "stop") is False
    fixed = Adaptive(Sampling(n=3).model_dump())
    assert fixed.first_round(rec) == 3 and fixed.next_round(rec, 3, 0) == 0 and fixed.judge("x", rec, "stop") is None


def test_spec_fields():
    assert Sampling(until_verified=2).max_samples == 2
    with pytest.raises(ValueError):
        Sampling(max_samples=3)
    with pytest.raises(ValueError):
        Sampling(until_verified=4, max_samples=2)
    with pytest.raises(SpecError, match="base_url"):
        parse_spec({"name": "x", "output_dir": "o", "teacher": {"model": "m", "backend": "openai"},
                    "prompts": {"sources": [{"dataset": "gsm8k_sample"}]}, "students": [{"name": "s", "base": "b"}]})
