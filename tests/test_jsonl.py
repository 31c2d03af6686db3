"""The one JSONL reader: `distill validate` (the first row of a prompt source) and `distill verify` (every row)
name the same bad line with the same message."""

from __future__ import annotations

import pytest

from distill import jsonl
from distill.verify.files import read_input

BAD = [
    (b'\n{"problem": oops}\n', "line 2, column 13: not valid JSON (Expecting value)"),
    (b'["a", "row"]\n', "line 1: a row must be a JSON object, got an array"),
    (b'{"problem": "caf\xe9"}\n', "line 1, column 17: not valid UTF-8 (byte 0xe9)"),
    (b"[" * 100_000 + b"\n", "line 1: JSON nested too deeply"),
]


@pytest.mark.parametrize("content,message", BAD)
def test_a_bad_first_line_reads_the_same_for_both(tmp_path, content, message):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError) as first:
        jsonl.first_row(path)
    assert read_input(path).bad == [str(first.value)]
    assert str(first.value) == f"{path}: {message}"


def test_rows_skip_a_bom_and_blank_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n  \n{"a": 2}\n')
    assert list(jsonl.rows(path)) == [(1, {"a": 1}, None), (4, {"a": 2}, None)]
    assert jsonl.first_row(path) == {"a": 1}
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert jsonl.first_row(tmp_path / "empty.jsonl") is None
