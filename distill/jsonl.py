"""Reading JSON Lines files row by row, with one-line errors naming file, line and column.

The one JSONL reader of the package: the spec check (`preflight`, which needs the first row only) and
`distill verify` (`verify/files.py`, every row) both read through `rows`, so a file gets the same verdict and
the same message from both. A UTF-8 BOM on the first line is skipped and blank lines are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def rows(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """Each non-blank line as (line number, the row, None), or (line number, None, why it is not a row) for a
    line that is not valid UTF-8, not valid JSON, or not a JSON object. Streams: one line in memory at a time."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield lineno, None, (f"{path}: line {lineno}, column {e.start + 1}: not valid UTF-8 "
                                     f"(byte 0x{raw[e.start]:02x})")
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, None, f"{path}: line {lineno}, column {e.colno}: not valid JSON ({e.msg})"
                continue
            except RecursionError:
                yield lineno, None, f"{path}: line {lineno}: JSON nested too deeply"
                continue
            if not isinstance(row, dict):
                yield lineno, None, f"{path}: line {lineno}: a row must be a JSON object, got {kind(row)}"
                continue
            yield lineno, row, None


def first_row(path: Path) -> dict | None:
    """The first row, None for a file with no rows; ValueError (one line) when the first non-blank line is bad."""
    for _, row, error in rows(path):
        if error is not None:
            raise ValueError(error)
        return row
    return None


def kind(v: Any) -> str:
    """A JSON value's kind in words, for error messages."""
    if isinstance(v, bool):
        return "a boolean"
    return {list: "an array", dict: "an object", str: "a string", int: "an integer", float: "a number",
            type(None): "null"}.get(type(v), type(v).__name__)
