"""Every artifact schema in `distill.schemas` round-trips through Parquet, and the stages write with them."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill import schemas

PROMPT = {"problem_id": "s-1", "source": "s", "domain": "math", "problem": "1+1?", "answer": "2",
          "answer_format": "plain", "prompt": "1+1? Reason step by step."}
TRACE = {"sample_index": 0, "response": "<think>\nr\n</think>\n\n2", "reasoning": "r", "answer_text": "2",
         "finish_reason": "stop", "prompt_tokens": 7, "completion_tokens": 5, "latency_s": 0.5, "teacher": "t",
         "backend": "vllm", "temperature": 0.7, "top_p": 0.95, "max_tokens": 64, "seed": None, "error": None,
         "verified": None}
VERDICT = {"extracted": "2", "correct": True, "reason": "correct", "kept": True, "detail": "exact"}
MESSAGES = [{"role": "user", "content": "1+1?"}]

CASES = {
    "prompts": (schemas.PROMPTS, PROMPT),
    "traces": (schemas.trace_schema(schemas.PROMPTS), {**PROMPT, **TRACE}),
    "verified": (schemas.verified_schema(schemas.trace_schema(schemas.PROMPTS)), {**PROMPT, **TRACE, **VERDICT}),
    "sft": (schemas.SFT, {"problem_id": "s-1", "sample_index": 0, "prompt": MESSAGES,
                          "completion": [{"role": "assistant", "content": "<think>\nr\n</think>\n\n2"}]}),
    "eval_samples": (schemas.EVAL_SAMPLES, {"benchmark": "b", "problem_id": "b-0", "sample_index": 0,
                                            "response": "2", "finish_reason": "stop", "extracted": "2",
                                            "correct": True, "reason": "correct"}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_schema_round_trips(tmp_path, name):
    schema, row = CASES[name]
    assert set(schema.names) == set(row)  # the example row fills every column
    path = tmp_path / f"{name}.parquet"
    pq.write_table(pa.Table.from_pylist([row], schema=schema), path)
    back = pq.read_table(path)
    assert back.schema.equals(schema)
    assert back.to_pylist() == [row]


def test_all_null_trace_columns_keep_their_types():
    """A shard where no sample has a seed or an error still has the schema's types (shards must concatenate)."""
    table = schemas.conform(pa.Table.from_pylist([{**PROMPT, **TRACE}]), schemas.TRACE_FIELDS)
    assert table.schema.equals(schemas.trace_schema(schemas.PROMPTS))


def test_appended_columns_replace_ones_of_the_same_name():
    once = schemas.verified_schema(schemas.trace_schema(schemas.PROMPTS))
    assert schemas.verified_schema(once).equals(once)  # verifying verified traces again: same columns, once
