"""The Parquet schemas of every stage's artifacts, in one place: each stage writes with these, and readers
(the report, the audit, tests) can rely on them.

  prompts/prompts.parquet        PROMPTS
  generate/shard-*.parquet       the input (prompt) columns + TRACE_FIELDS      (`trace_schema`)
  verify/traces.parquet, kept    the trace columns + VERDICT_FIELDS            (`verified_schema`)
  sft/train.parquet              SFT
  eval/<model>/samples.parquet   EVAL_SAMPLES

Trace and verdict columns are appended to whatever columns their input had (evaluation's prompts are not the
prompts stage's), so those two are given as fields plus a function of the input schema.
"""

from __future__ import annotations

import pyarrow as pa

PROMPTS = pa.schema([
    ("problem_id", pa.string()),  # `<source>-<sha1 of problem>`, stable across runs
    ("source", pa.string()), ("domain", pa.string()), ("problem", pa.string()),
    ("answer", pa.string()),  # the normalised reference; "" when the source has none
    ("answer_format", pa.string()), ("prompt", pa.string()),  # prompt: the user message
])

# What a teacher adds to each prompt record, one row per (problem_id, sample_index). Fixed types: a column may
# be all null in one shard (seed, error, verified), and every shard must still have the same schema.
TRACE_FIELDS = [
    pa.field("sample_index", pa.int64()), pa.field("response", pa.string()), pa.field("reasoning", pa.string()),
    pa.field("answer_text", pa.string()), pa.field("finish_reason", pa.string()),  # stop | length | error
    pa.field("prompt_tokens", pa.int64()), pa.field("completion_tokens", pa.int64()),
    pa.field("latency_s", pa.float64()), pa.field("teacher", pa.string()), pa.field("backend", pa.string()),
    pa.field("temperature", pa.float64()), pa.field("top_p", pa.float64()), pa.field("max_tokens", pa.int64()),
    pa.field("seed", pa.int64()), pa.field("error", pa.string()),
    pa.field("verified", pa.bool_()),  # adaptive sampling's verdict, else null
]

# What the verifier adds to each trace.
VERDICT_FIELDS = [
    pa.field("extracted", pa.string()), pa.field("correct", pa.bool_()), pa.field("reason", pa.string()),
    pa.field("kept", pa.bool_()), pa.field("detail", pa.string()),
]

_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
SFT = pa.schema([("problem_id", pa.string()), ("sample_index", pa.int64()), ("prompt", _MESSAGES),
                 ("completion", _MESSAGES)])

EVAL_SAMPLES = pa.schema([
    ("benchmark", pa.string()), ("problem_id", pa.string()), ("sample_index", pa.int64()), ("response", pa.string()),
    ("finish_reason", pa.string()), ("extracted", pa.string()), ("correct", pa.bool_()), ("reason", pa.string()),
])


def _appended(schema: pa.Schema, fields: list[pa.Field]) -> pa.Schema:
    names = {f.name for f in fields}
    return pa.schema([f for f in schema if f.name not in names] + fields)


def trace_schema(prompts: pa.Schema) -> pa.Schema:
    """A generate shard's schema: the prompt record's columns, then the trace's."""
    return _appended(prompts, TRACE_FIELDS)


def verified_schema(traces: pa.Schema) -> pa.Schema:
    """`verify/traces.parquet`'s schema: the trace's columns, then the verdict's."""
    return _appended(traces, VERDICT_FIELDS)


def conform(table: pa.Table, fields: list[pa.Field]) -> pa.Table:
    """`table` with each of `fields` it has cast to the field's type (an all-null column reads as type null)."""
    for f in fields:
        if f.name in table.column_names and table.schema.field(f.name).type != f.type:
            i = table.column_names.index(f.name)
            table = table.set_column(i, f, table.column(f.name).cast(f.type))
    return table
