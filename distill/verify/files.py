"""`distill verify`'s files: checked before any row is judged, read with their types, written atomically.

* Paths first (`check_paths`): the input is a file, the output's extension names a format this writes (`.jsonl`,
  `.parquet`, `.csv`), the output is not a directory nor the input, and its directory can be written. A mistake
  there costs nothing: no row has been judged yet.
* Reading (`read_input`): JSONL line by line (a UTF-8 BOM on the first line is skipped; a bad byte, bad JSON or
  a line that is not an object is named by file, line and column), Parquet, or CSV. Rows stay Python values as
  read, so an integer answer is written back as an integer.
* `bad_rows`: every row whose problem, answer or response has a type the verifier cannot take, one line each.
* Writing (`Writer`): to a hidden temporary file beside the output, renamed into place on success and removed
  on any failure or interrupt, so a killed `distill verify` leaves no partial output. Parquet needs one type per
  column: `parquet_table` refuses mixed or out-of-range columns up front, naming the column and rows.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distill import jsonl

FORMATS = (".jsonl", ".parquet", ".csv")
MAX_BAD_LINES = 20  # bad rows listed in one error; the rest are counted
_INT64 = (-(1 << 63), (1 << 63) - 1)


@dataclass
class Input:
    path: Path
    rows: list[dict]
    where: list[str]  # per row: "line N" (JSONL, CSV) or "row N" (Parquet), for error messages
    columns: list[str]
    table: pa.Table | None = None  # the Parquet input as read (its types are already Arrow's)
    bad: list[str] = field(default_factory=list)

    def batch(self, start: int, n: int) -> list[dict]:
        """Whole rows [start, start + n): from the table for Parquet, whose `rows` hold only what is judged."""
        if self.table is not None:
            return self.table.slice(start, n).to_pylist()
        return self.rows[start : start + n]


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
    """The rows of a .jsonl, .parquet or .csv file. `judged`: for Parquet, the columns `rows` needs (the rest
    stays in Arrow until written, so a big file is not held twice)."""
    if path.suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a file that is not Parquet
            raise ValueError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
        keep = table.column_names if judged is None else [c for c in judged if c in table.column_names]
        rows = table.select(keep).to_pylist()
        return Input(path, rows, [f"row {i}" for i in range(1, len(rows) + 1)], table.column_names, table)
    if path.suffix == ".csv":
        return _read_csv(path)
    return _read_jsonl(path)


def _read_jsonl(path: Path) -> Input:
    rows, where, columns, bad = [], [], {}, []
    for lineno, row, error in jsonl.rows(path):
        if error is not None:
            bad.append(error)
            continue
        rows.append(row)
        where.append(f"line {lineno}")
        columns.update(dict.fromkeys(row))
    return Input(path, rows, where, list(columns), bad=bad)


def _read_csv(path: Path) -> Input:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ValueError(f"{path}: line {line}, column {col}: not valid UTF-8 (byte 0x{data[e.start]:02x})") from None
    reader = csv.DictReader(text.splitlines(keepends=True))
    rows, where = [], []
    try:
        for row in reader:
            rows.append(row)
            where.append(f"line {reader.line_num}")
    except csv.Error as e:
        raise ValueError(f"{path}: line {reader.line_num}: not valid CSV ({e})") from None
    return Input(path, rows, where, list(reader.fieldnames or []))


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


def summarise(lines: list[str]) -> str:
    if len(lines) <= MAX_BAD_LINES:
        return "\n".join(lines)
    return "\n".join(lines[:MAX_BAD_LINES] + [f"... and {len(lines) - MAX_BAD_LINES} more bad rows"])


# ---------------------------------------------------------------- writing

def parquet_table(data: Input, drop: tuple[str, ...] = ()) -> pa.Table:
    """The rows as one Arrow table for a Parquet output, each column in the one type its values share; a column
    whose values do not share one (an integer answer here, a text one there) is refused, naming the rows."""
    if data.table is not None:
        return data.table.drop_columns([c for c in drop if c in data.table.column_names])
    arrays, names = [], []
    for col in data.columns:
        if col in drop:
            continue
        values = [r.get(col) for r in data.rows]
        kinds: dict[str, str] = {}
        for v, where in zip(values, data.where):
            if v is None:
                continue
            kinds.setdefault(jsonl.kind(v), where)
            if isinstance(v, int) and not isinstance(v, bool) and not _INT64[0] <= v <= _INT64[1]:
                raise ValueError(f"{data.path}: {where}, column '{col}': integer {str(v)[:20]}... does not fit "
                                 f"Parquet's int64; write .jsonl to keep it exact")
        if len(kinds) > 1:
            seen = " and ".join(f"{k} ({w})" for k, w in kinds.items())
            raise ValueError(f"{data.path}: column '{col}' mixes {seen}; Parquet needs one type per column: "
                             f"write .jsonl to keep each value's type")
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
            raise ValueError(f"{data.path}: column '{col}': cannot be stored in Parquet "
                             f"({str(e).splitlines()[0]})") from None
        names.append(col)
    return pa.Table.from_arrays(arrays, names=names)


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
