"""The mix of reasoning and non-reasoning data, as the stages apply it (a library layer: prompts and SFT use it).

* Non-reasoning prompts: rows of a source with no checkable answer (`answer_format: none`: chat, writing).
  They get the spec's `prompts.non_reasoning_template` (default: the problem alone, no `\\boxed{}`
  instruction), and their SFT examples are the teacher's answer without its `<think>` block unless
  `sft.think_non_reasoning` asks to keep it (R1 answered simple queries without a chain of thought).
* The prompts' order: `shuffle_prompts` rewrites the prompts file ordered by a hash of (seed, problem_id), so each
  domain of a mix is spread over the generate shards and over the rows the domain targets keep first
  (`distill.verify.targets`). Deterministic: the same seed and problems give the same order whatever the sources'
  order or the file's size; another seed another order. Done in bounded memory (key-range buckets, each sorted
  alone), since the prompts of an 800k run do not all fit in Python objects.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distill.streaming import iter_batches

NON_REASONING_FORMAT = "none"
ROWS_PER_BUCKET = 65_536  # the shuffle holds about one bucket of rows at a time
READ_ROWS = 8_192


def is_non_reasoning(answer_format: str | None) -> bool:
    return answer_format == NON_REASONING_FORMAT


def prompt_text(problem: str, answer_format: str | None, prompts) -> str:
    """The user message of a problem: `prompts.non_reasoning_template` for a non-reasoning source, else
    `prompts.template` (`prompts`: the spec's Prompts)."""
    template = prompts.non_reasoning_template if is_non_reasoning(answer_format) else prompts.template
    return template.replace("{problem}", problem)


def non_reasoning_turn(response: str, keep_think: bool) -> str:
    """A non-reasoning example's assistant turn: the teacher's answer after its `</think>`; with `keep_think`, its
    reasoning kept in R1's `<think>\\n...\\n</think>\\n\\n` form (when it wrote any)."""
    if "</think>" not in response:
        return response.strip()
    # The answer is what follows the last `</think>`: the region verify found non-empty (`extract.final_region`).
    reasoning, answer = response.rsplit("</think>", 1)
    reasoning = reasoning.replace("<think>", "").replace("</think>", "").strip()
    answer = answer.strip()
    if keep_think and reasoning:
        return f"<think>\n{reasoning}\n</think>\n\n{answer}"
    return answer


def shuffle_key(seed: int, problem_id: str) -> int:
    """A row's place in the shuffled order: 64 bits of BLAKE2b over (seed, problem_id)."""
    digest = hashlib.blake2b(f"{seed}\0{problem_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shuffle_prompts(path: Path, seed: int) -> None:
    """Rewrite the Parquet file at `path` (with a `problem_id` column) ordered by `shuffle_key`, atomically.

    Rows go to buckets by key range (Arrow IPC files beside `path`), then each bucket is sorted alone and written
    out in key order: the whole file in key order, with about one bucket in memory."""
    path = Path(path)
    pf = pq.ParquetFile(path)
    n = pf.metadata.num_rows
    if n < 2:
        return
    buckets = -(-n // ROWS_PER_BUCKET)
    work = path.parent / f".shuffle-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    try:
        schema = pf.schema_arrow.append(pa.field("_key", pa.uint64()))
        writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
        for batch in iter_batches(path, rows=READ_ROWS):  # one row group held at a time (streaming.py)
            keys = np.fromiter((shuffle_key(seed, p) for p in batch.column("problem_id").to_pylist()),
                               dtype=np.uint64, count=batch.num_rows)
            # key range -> bucket, monotonic in the key: the top 32 bits scaled to [0, buckets)
            bucket = ((keys >> np.uint64(32)) * np.uint64(buckets)) >> np.uint64(32)
            table = pa.Table.from_batches([batch]).append_column("_key", pa.array(keys, pa.uint64()))
            for b in np.unique(bucket).tolist():
                if b not in writers:
                    writers[b] = pa.ipc.new_file(str(work / f"{b:06d}.arrow"), schema)
                writers[b].write_table(table.filter(pa.array(bucket == b)))
        for w in writers.values():
            w.close()
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        with pq.ParquetWriter(tmp, pf.schema_arrow) as out:
            for b in sorted(writers):
                with pa.OSFile(str(work / f"{b:06d}.arrow")) as source:
                    part = pa.ipc.open_file(source).read_all()
                part = part.take(pc.sort_indices(part, [("_key", "ascending")]))
                out.write_table(part.drop_columns(["_key"]))
        os.replace(tmp, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
