"""`distill verify`'s files: checked before any row is judged, read with their types, written atomically.

* Paths first (`check_paths`): the input is a file, the output's extension names a format this writes (`.jsonl`,
  `.parquet`, `.csv`), the output is not a directory nor the input, and its directory can be written. A mistake
  there costs nothing: no row has been judged yet.
* Reading (`read_chunks`): JSONL line by line (a UTF-8 BOM on the first line is skipped; a bad byte, bad JSON or
  a line that is not an object is named by file, line and column), Parquet a record batch at a time, or CSV
  line by line, each as chunks of rows, so `distill verify` holds one chunk of rows however big the file
  (`read_input`: the whole file as one chunk, for `distill audit`). Rows stay Python values as read, so an
  integer answer is written back as an integer.
* `bad_rows`: every row whose problem, answer or response has a type the verifier cannot take, one line each.
* Writing (`Writer`): to a hidden temporary file beside the output, renamed into place on success and removed
  on any failure or interrupt, so a killed `distill verify` leaves no partial output. Parquet needs one type per
  column: `ColumnTypes` watches every chunk on the checking pass and refuses mixed or out-of-range columns up
  front, naming the column and rows; the chunks are then written in the column types it settled.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from distill import jsonl
from distill.streaming import iter_batches

FORMATS = (".jsonl", ".parquet", ".csv")
MAX_BAD_LINES = 20  # bad rows listed in one error; the rest are counted
_INT64 = (-(1 << 63), (1 << 63) - 1)


@dataclass
class Input:
    """Rows of an input file: all of them (`read_input`) or one chunk (`read_chunks`)."""

    path: Path
    rows: list[dict]
    where: list[str]  # per row: "line N" (JSONL, CSV) or "row N" (Parquet), for error messages
    columns: list[str]
    table: pa.Table | None = None  # the Parquet rows as read (their types are already Arrow's)
    bad: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- paths

def check_paths(in_path: Path, out_path: Path) -> None:
    """Raise ValueError (one line) for an input or output that cannot work; no row has been read yet."""
    if not in_path.exists():
        raise ValueError(f"{in_path}: file not found")
    if in_path.is_dir():
        raise ValueError(f"{in_path}: is a directory; give a .jsonl, .parquet or .csv file")
    if in_path.suffix not in FORMATS:
        raise ValueError(f"{in_path}: unknown input format '{in_path.suffix}' (use .jsonl, .parquet or .csv)")
    if out_path.suffix not in FORMATS:
        raise ValueError(f"{out_path}: unknown output format '{out_path.suffix}' (use .jsonl, .parquet or .csv)")
    if out_path.is_dir():
        raise ValueError(f"{out_path}: is a directory; give a file name ending in .jsonl, .parquet or .csv")
    if out_path.exists() and os.path.samefile(in_path, out_path):
        raise ValueError(f"{out_path}: is the input file; write the verdicts to another file")
    from distill.preflight import output_dir_problem

    problem = output_dir_problem(out_path.parent)
    if problem is not None:
        raise ValueError(f"{out_path}: {problem}")
    if out_path.parent.exists():
        try:  # the only sure test of "can write here" (read-only mounts, ACLs)
            tempfile.TemporaryFile(dir=out_path.parent).close()
        except OSError as e:
            raise ValueError(f"{out_path}: cannot write in {out_path.parent}: {e.strerror}") from None


# ---------------------------------------------------------------- reading

def read_input(path: Path, judged: tuple[str, ...] | None = None) -> Input:
    """The whole of a .jsonl, .parquet or .csv file as one chunk (`read_chunks`)."""
    return next(read_chunks(path, judged, rows=None))


def read_chunks(path: Path, judged: tuple[str, ...] | None = None, rows: int | None = 1024) -> Iterator[Input]:
    """The rows of a .jsonl, .parquet or .csv file, `rows` good rows a chunk (None: all in one; a file with none
    still gives one, empty). `judged`: for Parquet, the only columns read (None: all, in `table`, with `rows`
    as Python values of the same). A chunk's `bad` lists the lines before it that are not rows."""
    if path.suffix == ".parquet":
        yield from _parquet_chunks(path, judged, rows)
        return
    columns: dict = {}
    chunk = Input(path, [], [], [])
    records = _csv_records(path) if path.suffix == ".csv" else _jsonl_records(path)
    for where, row, error in records:
        if error is not None:
            chunk.bad.append(error)
            continue
        chunk.rows.append(row)
        chunk.where.append(where)
        columns.update(dict.fromkeys(row))
        if rows is not None and len(chunk.rows) >= rows:
            chunk.columns = list(columns)
            yield chunk
            chunk = Input(path, [], [], [])
    if chunk.rows or chunk.bad or rows is None or not columns:
        chunk.columns = list(columns)
        yield chunk


def _parquet_chunks(path: Path, judged: tuple[str, ...] | None, rows: int | None) -> Iterator[Input]:
    def unreadable(e: Exception) -> ValueError:
        return ValueError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})")

    try:  # pyarrow raises several types for a file that is not Parquet
        names = pq.read_schema(path).names
        keep = names if judged is None else [c for c in judged if c in names]
        batches = iter([pq.read_table(path, columns=keep)]) if rows is None else iter_batches(path, keep, rows)
    except Exception as e:  # noqa: BLE001
        raise unreadable(e) from None
    start, empty = 0, True
    while True:
        try:
            batch = next(batches, None)
        except Exception as e:  # noqa: BLE001 - a damaged page deep in the file
            raise unreadable(e) from None
        if batch is None:
            break
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        records = table.to_pylist()
        yield Input(path, records, [f"row {i}" for i in range(start + 1, start + len(records) + 1)], names, table)
        start += len(records)
        empty = False
    if empty:
        yield Input(path, [], [], names, pa.schema([]).empty_table())


def _jsonl_records(path: Path) -> Iterator[tuple[str, dict | None, str | None]]:
    for lineno, row, error in jsonl.rows(path):
        yield f"line {lineno}", row, error


def _csv_records(path: Path) -> Iterator[tuple[str, dict | None, str | None]]:
    reader = csv.DictReader(_utf8_lines(path))
    try:
        for row in reader:
            yield f"line {reader.line_num}", row, None
    except csv.Error as e:
        raise ValueError(f"{path}: line {reader.line_num}: not valid CSV ({e})") from None


def _utf8_lines(path: Path) -> Iterator[str]:
    """The file's lines as text (a BOM skipped), one at a time; ValueError naming line and column at a byte that
    is not UTF-8. Lines end as in the file (`csv` needs them whole: a quoted field may hold a newline)."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}: line {lineno}, column {e.start + 1}: not valid UTF-8 "
                                 f"(byte 0x{raw[e.start]:02x})") from None
            yield from text.splitlines(keepends=True)  # a lone \r ends a line too


# ---------------------------------------------------------------- checking rows

_ALLOWED = {"problem": (str, int, float), "answer": (str, int, float), "response": (str,)}
_WANT = {"problem": "a string or a number", "answer": "a string or a number", "response": "a string"}


def bad_rows(data: Input) -> list[str]:
    """One line per row the verifier cannot take (and every line that could not be read)."""
    out = list(data.bad)
    for row, where in zip(data.rows, data.where):
        for col, types in _ALLOWED.items():
            v = row.get(col)
            if v is not None and (isinstance(v, bool) or not isinstance(v, types)):
                out.append(f"{data.path}: {where}, column '{col}': must be {_WANT[col]}, got {jsonl.kind(v)}")
    return out


def summarise(lines: list[str], total: int | None = None) -> str:
    """The first MAX_BAD_LINES of `total` bad-row lines (default: all of `lines`), the rest counted."""
    total = len(lines) if total is None else total
    if total <= MAX_BAD_LINES:
        return "\n".join(lines)
    return "\n".join(lines[:MAX_BAD_LINES] + [f"... and {total - MAX_BAD_LINES} more bad rows"])


# ---------------------------------------------------------------- writing

class ColumnTypes:
    """One Arrow type per column for rows read from JSONL or CSV and written as Parquet, settled over every chunk
    (`observe`) before any row is judged: `check` refuses a column whose values do not share one kind (an
    integer answer here, a text one there) or an integer past int64, naming the rows; `table` then builds each
    chunk in those types, so every chunk of the file fits the one schema."""

    def __init__(self, drop: tuple[str, ...] = ()):
        self.drop = drop
        self.kinds: dict[str, dict[str, str]] = {}  # column -> kind -> where first seen
        self.too_big: dict[str, tuple[str, int]] = {}  # column -> (where, value) of its first int64 overflow
        self.types: dict[str, pa.DataType] = {}
        self.refused: dict[str, str] = {}  # column -> why pyarrow cannot store it

    def observe(self, data: Input) -> None:
        for col in data.columns:
            if col in self.drop:
                continue
            kinds = self.kinds.setdefault(col, {})
            values = [r.get(col) for r in data.rows]
            for v, where in zip(values, data.where):
                if v is None:
                    continue
                kinds.setdefault(jsonl.kind(v), where)
                if isinstance(v, int) and not isinstance(v, bool) and not _INT64[0] <= v <= _INT64[1]:
                    self.too_big.setdefault(col, (where, v))
            if col in self.too_big or len(kinds) > 1 or col in self.refused:
                continue
            try:
                t = pa.array(values).type
                self.types[col] = t if col not in self.types else pa.unify_schemas(
                    [pa.schema([(col, self.types[col])]), pa.schema([(col, t)])],
                    promote_options="permissive").field(col).type
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
                self.refused[col] = str(e).splitlines()[0]

    def check(self, path: Path) -> None:
        """ValueError (one line) for the first column, in file order, that Parquet cannot hold."""
        for col, kinds in self.kinds.items():
            if col in self.too_big:
                where, v = self.too_big[col]
                raise ValueError(f"{path}: {where}, column '{col}': integer {str(v)[:20]}... does not fit "
                                 f"Parquet's int64; write .jsonl to keep it exact")
            if len(kinds) > 1:
                seen = " and ".join(f"{k} ({w})" for k, w in kinds.items())
                raise ValueError(f"{path}: column '{col}' mixes {seen}; Parquet needs one type per column: "
                                 f"write .jsonl to keep each value's type")
            if col in self.refused:
                raise ValueError(f"{path}: column '{col}': cannot be stored in Parquet ({self.refused[col]})")

    def table(self, data: Input) -> pa.Table:
        """The chunk's rows as Arrow, each column in its settled type (missing keys of a row are nulls)."""
        names = [c for c in self.kinds if c in self.types]
        try:
            arrays = [pa.array([r.get(c) for r in data.rows], self.types[c]) for c in names]
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
            raise ValueError(f"{data.path}: cannot be stored in Parquet ({str(e).splitlines()[0]})") from None
        return pa.Table.from_arrays(arrays, names=names)


def parquet_table(data: Input, drop: tuple[str, ...] = ()) -> pa.Table:
    """The rows as one Arrow table for a Parquet output (`ColumnTypes` over the one chunk)."""
    if data.table is not None:
        return data.table.drop_columns([c for c in drop if c in data.table.column_names])
    types = ColumnTypes(drop)
    types.observe(data)
    types.check(data.path)
    return types.table(data)


class Writer:
    """Rows (JSONL, CSV) or tables (Parquet) into a temporary file, renamed to `path` on `close`."""

    def __init__(self, path: Path, fieldnames: list[str] | None = None):
        self.path = path
        self.fieldnames = fieldnames  # CSV header (default: the first row's keys)
        self.kind = path.suffix
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        self._pq: pq.ParquetWriter | None = None
        self._fh = None if self.kind == ".parquet" else open(self.tmp, "w", encoding="utf-8", newline="")
        self._csv: csv.DictWriter | None = None

    def write_rows(self, rows: list[dict]) -> None:
        if self.kind == ".jsonl":
            for row in rows:
                self._fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            return
        if self._csv is None:
            names = self.fieldnames or (list(rows[0]) if rows else [])
            self._csv = csv.DictWriter(self._fh, fieldnames=names, extrasaction="ignore")
            self._csv.writeheader()
        self._csv.writerows({k: _csv_cell(v) for k, v in row.items()} for row in rows)

    def write_table(self, table: pa.Table) -> None:
        if self._pq is None:
            self._pq = pq.ParquetWriter(self.tmp, table.schema)
        self._pq.write_table(table)

    def close(self, schema: pa.Schema | None = None) -> None:
        if self._fh is not None:
            self._fh.close()
        elif self._pq is not None:
            self._pq.close()
        else:  # no rows: still a valid, empty file with the columns
            pq.write_table((schema or pa.schema([])).empty_table(), self.tmp)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        for h in (self._fh, self._pq):
            try:
                if h is not None:
                    h.close()
            except Exception:  # noqa: BLE001 - the file is removed next; its close error is of no interest
                pass
        self.tmp.unlink(missing_ok=True)


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)


def with_verdicts(rows: list[dict], cols: dict) -> list[dict]:
    """Each input row (its values untouched) followed by the verdict columns of `cols` for its position."""
    out = []
    for i, row in enumerate(rows):
        rec = {k: v for k, v in row.items() if k not in cols}
        for k, values in cols.items():
            v = values[i]
            rec[k] = v.item() if hasattr(v, "item") else v  # numpy scalars (the kept mask) to Python values
        out.append(rec)
    return out


def read_table(path: Path) -> pa.Table:
    """A whole .jsonl, .parquet or .csv file as one Arrow table (audit), with the same one-line errors."""
    data = read_input(Path(path))  # all columns: audit reads labels and verdicts too
    if data.bad:
        raise ValueError(summarise(data.bad))
    return parquet_table(data)
