"""Reading a Parquet file a batch at a time holds about one row group in Arrow memory, however many row groups the
file has (`distill.streaming.iter_batches`; pyarrow's pre-buffering kept every row group read until the file was
closed, apache/arrow#39808), and so do the stages that read through it; `distill verify` streams its files."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill import schemas
from distill.pipeline.sft import build_sft_dataset
from distill.streaming import iter_batches
from distill.verify.stage import parquet_batches

GROUPS, GROUP_ROWS, CHARS = 48, 256, 4096  # 48 row groups of 1 MiB of incompressible text: a 48 MiB file


def _kept_file(path) -> None:
    """A verify-stage kept.parquet whose responses are random hex: compression cannot shrink what is cached."""
    schema = schemas.verified_schema(pa.schema([("problem_id", pa.string()), ("prompt", pa.string()),
                                                ("sample_index", pa.int64()), ("response", pa.string())]))
    with pq.ParquetWriter(path, schema) as w:
        for g in range(GROUPS):
            m = GROUP_ROWS
            w.write_table(pa.table({
                "problem_id": [f"p{g}-{i}" for i in range(m)], "prompt": ["What is 1 + 1?"] * m,
                "sample_index": [0] * m, "response": [os.urandom(CHARS // 2).hex() for _ in range(m)],
                "extracted": ["2"] * m, "correct": [True] * m, "reason": ["correct"] * m, "kept": [True] * m,
                "detail": [None] * m}, schema=schema))


@pytest.mark.parametrize("reader", ["iter_batches", "verify", "sft"])
def test_reading_a_file_a_batch_at_a_time_holds_about_one_row_group(tmp_path, monkeypatch, reader):
    """Arrow memory in use (the default pool, which the reader's cache draws on whatever pool is passed) is
    sampled at every batch, while the reader is open, and compared with the 48 MiB file."""
    import distill.pipeline.sft as sft_stage

    kept = tmp_path / "verify" / "kept.parquet"
    kept.parent.mkdir()
    _kept_file(kept)
    size = kept.stat().st_size
    assert size > GROUPS * GROUP_ROWS * CHARS * 0.9  # the file did not compress away
    pool = pa.default_memory_pool()
    base, held, rows = pool.bytes_allocated(), [], []
    if reader == "sft":
        one_batch = sft_stage.sft_batch

        def sampled(batch, *args, **kwargs):
            held.append(pool.bytes_allocated() - base)
            return one_batch(batch, *args, **kwargs)

        monkeypatch.setattr(sft_stage, "sft_batch", sampled)
        (tmp_path / "sft").mkdir()
        rows.append(build_sft_dataset(kept.parent, tmp_path / "sft")["examples"])
    else:
        batches = iter_batches(kept, ["problem_id", "response"]) if reader == "iter_batches" else \
            parquet_batches([kept], ["problem_id", "response"])
        for batch in batches:
            held.append(pool.bytes_allocated() - base)
            rows.extend(batch.column("problem_id").to_pylist())
    assert len(held) >= GROUPS * GROUP_ROWS // 1024
    assert max(held) < 8 * 2**20, \
        f"{reader}: {max(held) / 2**20:.1f} MiB of Arrow memory held while reading a {size / 2**20:.0f} MiB file"
    if reader == "sft":
        assert rows == [GROUPS * GROUP_ROWS]
    else:
        assert rows == [f"p{g}-{i}" for g in range(GROUPS) for i in range(GROUP_ROWS)]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_distill_verify_reads_and_writes_a_chunk_at_a_time(tmp_path, suffix):
    """`distill verify` over 24 MiB of traces holds Python objects for a chunk or two of rows and the small
    per-row verdicts, never the file's rows (reading the whole file first peaked at 42-53 MiB here); the output
    still has every row, in order, with its input values."""
    import json
    import tracemalloc

    from distill.verify import verify_file

    n, chars = 6144, 4096
    rows = ({"problem": f"What is {i} + 1?", "answer": i + 1, "id": i,
             "response": f"<think>{os.urandom(chars // 2).hex()}</think> The answer is \\boxed{{{i + 1}}}."}
            for i in range(n))
    src = tmp_path / f"in{suffix}"
    if suffix == ".jsonl":
        with open(src, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    else:
        with pq.ParquetWriter(src, pa.schema([("problem", pa.string()), ("answer", pa.int64()),
                                              ("id", pa.int64()), ("response", pa.string())])) as w:
            for a in range(0, n, 1024):
                w.write_table(pa.Table.from_pylist([next(rows) for _ in range(1024)]))
    out = tmp_path / "out.jsonl"
    tracemalloc.start()
    try:
        counts = verify_file(src, out, workers=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert counts == {"correct": n}
    assert peak < 32 * 2**20, f"peak Python memory {peak / 2**20:.0f} MiB for {n * chars / 2**20:.0f} MiB of traces"
    with open(out) as fh:
        got = [(r["id"], r["answer"], r["reason"], len(r["response"])) for r in map(json.loads, fh)]
    assert got == [(i, i + 1, "correct", chars + 39 + len(str(i + 1))) for i in range(n)]


def test_memory_freed_in_a_thread_goes_back_before_tokenising():
    """Memory a thread allocated and freed, with a few live objects left among it, stays resident until
    `release_free_memory` (run before the tokeniser workers start) hands it back."""
    import threading

    from distill.training.tokenized import release_free_memory

    def anonymous_mb() -> float:
        with open("/proc/self/smaps_rollup") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("Anonymous:")) / 1024

    kept: list = []

    def churn():  # 200 MB in 8 KB pieces, one in 64 kept: glibc cannot give the rest back on its own
        pieces = [bytearray(8192) for _ in range(25_600)]
        kept.extend(pieces[::64])

    thread = threading.Thread(target=churn)
    thread.start()
    thread.join()
    before = anonymous_mb()
    release_free_memory()
    after = anonymous_mb()
    assert len(kept) == 400
    assert before - after > 100, f"anonymous memory {before:.0f} MB before, {after:.0f} MB after"
