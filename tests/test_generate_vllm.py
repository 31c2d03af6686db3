"""The generate stage on the real vLLM CPU engine inside Ray (tiny random Llama: fast, output is noise)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from distill.generate import generate_table
from distill.spec import Sampling, Teacher

pytestmark = pytest.mark.slow


def test_vllm_actor_pool_writes_n_samples_per_prompt(tiny_llama, ray_local, tmp_path):
    prompts = pa.Table.from_pylist([{"problem_id": f"p{i}", "prompt": f"What is {i} + {i}?"} for i in range(5)])
    teacher = Teacher(model=str(tiny_llama), num_cpus=2, batch_size=2,
                      engine={"max_model_len": 256, "enforce_eager": True})
    out = tmp_path / "generate"
    generate_table(prompts, str(tiny_llama), Sampling(n=3, temperature=1.0, max_tokens=12), teacher, seed=0,
                   out_dir=out)
    rows = pa.concat_tables([pa.parquet.read_table(p) for p in sorted(out.glob("*.parquet"))]).to_pylist()
    assert sorted((r["problem_id"], r["sample_index"]) for r in rows) == [
        (f"p{i}", s) for i in range(5) for s in range(3)]
    for r in rows:
        assert r["finish_reason"] in ("stop", "length")
        assert 1 <= r["completion_tokens"] <= 12 and r["prompt_tokens"] > 5
        assert r["teacher"] == str(tiny_llama) and isinstance(r["response"], str)
    assert any(r["finish_reason"] == "length" for r in rows)  # a random model rarely stops by itself
