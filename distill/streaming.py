"""Parquet a record batch at a time: stages read and write their tables through these, so a stage holds one batch
of rows in Python objects, never the whole table (the 800k-trace runs of issue 14 would not fit otherwise).
A library layer: the prompts and SFT stages use it, and `bench/scale.py` measures the bound."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

BATCH_ROWS = 1024  # rows per batch: a few MB of traces of R1's lengths


def iter_batches(path: str | Path, columns: list[str] | None = None, rows: int = BATCH_ROWS
                 ) -> Iterator[pa.RecordBatch]:
    """The record batches of one Parquet file (`columns`: the ones it has of these; None: all).

    Opened with `pre_buffer=False`: with pre-buffering (pyarrow's default) the reader keeps every row group's
    bytes it has read in its range cache until the file is closed (apache/arrow#39808), so reading a file a
    batch at a time held the whole compressed file in Arrow memory by the last batch: 0.43 GB for 73k kept
    traces in the sft stage, about 5 GB at 800k. Without it the reader holds one row group's pages at a time."""
    pf = pq.ParquetFile(path, pre_buffer=False)
    cols = None if columns is None else [c for c in columns if c in pf.schema_arrow.names]
    yield from pf.iter_batches(batch_size=rows, columns=cols)


class RowWriter:
    """Rows (dicts) into one Parquet file of `schema`, flushed every `rows` rows as a row group. An empty run still
    writes a valid file with the columns."""

    def __init__(self, path: str | Path, schema: pa.Schema, rows: int = BATCH_ROWS):
        self.path, self.schema, self.rows = Path(path), schema, rows
        self.pending: list[dict] = []
        self.written = 0
        self._writer = pq.ParquetWriter(self.path, schema)

    def add(self, row: dict) -> None:
        self.pending.append(row)
        if len(self.pending) >= self.rows:
            self.flush()

    def write_batch(self, batch: pa.RecordBatch | pa.Table) -> None:
        self.flush()
        self._writer.write(batch)
        self.written += batch.num_rows

    def flush(self) -> None:
        if self.pending:
            self._writer.write_table(pa.Table.from_pylist(self.pending, schema=self.schema))
            self.written += len(self.pending)
            self.pending = []

    def close(self) -> None:
        self.flush()
        self._writer.close()

    def abort(self) -> None:
        """Close and remove the file: a failed stage leaves no partial table behind."""
        try:
            self._writer.close()
        finally:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, kind, *exc) -> None:
        self.abort() if kind is not None else self.close()
