"""The verifier on hand-written traces with known verdicts, and `distill verify` on files."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from distill.cli import main
from distill.verify import extract_answer, judge, reference_answer, verify_file
from tests.conftest import write_jsonl

CASES = [
    # (response, reference, finish_reason, correct, reason)
    ("<think>half of 1 is 0.5</think>The answer is $\\boxed{\\frac{1}{2}}$.", "0.5", "stop", True, "correct"),
    ("So we get \\boxed{0.5}", "\\frac{1}{2}", "stop", True, "correct"),
    ("Adding up, \\boxed{\\frac{\\sqrt{3}}{2}}.", "\\frac{\\sqrt3}{2}", "stop", True, "correct"),
    ("<think>long thought</think>\n\n**Final Answer:** 1,234", "1234", "stop", True, "correct"),
    ("She earns 9 * 2 = 18 dollars.\n#### 18", "18", "stop", True, "correct"),
    ("The final answer is: 20 hours", "20", "stop", True, "correct"),
    ("Therefore the answer is $\\$18.00$.", "18", "stop", True, "correct"),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", "stop", True, "correct"),
    ("We find \\boxed 5.", "5", "stop", True, "correct"),
    ("The answer is \\boxed{17}.", "18", "stop", False, "incorrect"),
    ("\\boxed{1/2^{99}}", "1/2^{98}", "stop", False, "incorrect"),  # no float tolerance on rationals
    ("I computed 9 * 2 = 18 so there are 18 eggs.", "18", "stop", False, "no_answer"),  # no last-number guess
    ("<think>9 * 2 = 18 and so on, the answer is 18", "18", "stop", False, "unclosed_think"),
    ("First, 9 * 2 = 18. Then the answer is 18", "18", "length", False, "truncated"),
    ("<think>the answer is 7</think> I think it is \\boxed{8}", "8", "stop", True, "correct"),  # only after </think>
    ("<think>the answer is 7</think> I think it is \\boxed{8}", "7", "stop", False, "incorrect"),
    ("A nice poem about the sea.", "", "stop", False, "unreferenced"),
]


@pytest.mark.parametrize("response,reference,finish,correct,reason", CASES)
def test_judge(response, reference, finish, correct, reason):
    v = judge(response, reference, finish)
    assert (v.correct, v.reason) == (correct, reason), v


def test_nested_braces_take_the_last_box():
    assert extract_answer("first \\boxed{1} then \\boxed{\\frac{a}{b^{2}}} end") == "\\frac{a}{b^{2}}"


def test_reference_formats():
    assert reference_answer("so 3 + 4 = 7\n#### 1,007", "gsm8k") == "1007"
    assert reference_answer("we get $\\boxed{\\frac{1}{2}}$.", "boxed") == "\\frac{1}{2}"
    assert reference_answer(27.0, "plain") == "27"
    assert reference_answer("anything", "none") == ""


def _rows():
    return [{"problem": f"p{i}", "answer": ref, "response": resp}
            for i, (resp, ref, fin, _, _) in enumerate(CASES) if fin == "stop"]


def test_verify_file_jsonl(tmp_path, capsys):
    src = write_jsonl(tmp_path / "traces.jsonl", _rows())
    out = tmp_path / "judged.jsonl"
    assert main(["verify", str(src), str(out), "--workers", "1"]) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    expected = [(c, r) for (_, _, fin, c, r) in CASES if fin == "stop"]
    assert [(g["correct"], g["reason"]) for g in got] == expected
    assert got[0]["problem"] == "p0" and "response" in got[0]  # input columns are kept
    assert "rows ->" in capsys.readouterr().out


def test_verify_file_parquet_many_rows_parallel(tmp_path):
    """5,000+ rows through worker processes: every verdict matches the single-row judge."""
    rows = _rows() * 400
    src = write_jsonl(tmp_path / "many.jsonl", rows)
    out = tmp_path / "many.parquet"
    counts = verify_file(src, out, workers=2)
    table = pq.read_table(out)
    assert table.num_rows == len(rows) >= 5000
    expected = [judge(r["response"], r["answer"]).correct for r in rows]
    assert table.column("correct").to_pylist() == expected
    assert sum(counts.values()) == len(rows)


def test_verify_file_errors_name_the_row_or_column(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "a", "answer": "1", "response": "1"}\n{"problem": oops}\n')
    assert main(["verify", str(bad), str(tmp_path / "o.jsonl")]) == 2
    assert "bad.jsonl: line 2, column 13: not valid JSON (Expecting value)" in capsys.readouterr().err
    missing = write_jsonl(tmp_path / "m.jsonl", [{"problem": "a", "answer": "1"}])
    assert main(["verify", str(missing), str(tmp_path / "o.jsonl")]) == 2
    assert "missing column(s) response" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()  # nothing half-written


MORE = [
    # (response, reference, correct, reason, detail): known verifier failure modes, each decided exactly
    ("One root is \\boxed{2}. Therefore the larger is \\boxed{3}.", "3", True, "correct", "same_text"),
    ("The roots are \\boxed{2} and \\boxed{3}.", "3, 2", True, "correct", "exact_set"),
    ("\\boxed{0.5}", "50", False, "incorrect", "exact_number"),          # no x100 percent guessing
    ("\\boxed{50\\%}", "50", True, "correct", "same_text"),
    ("\\boxed{(1, 2]}", "[1,2]", False, "incorrect", "exact_interval_ends"),
    ("\\boxed{(2, 1)}", "(1,2)", False, "incorrect", "exact_tuple"),
    ("\\boxed{\\{2, 1\\}}", "\\{1,2\\}", True, "correct", "exact_set"),
    ("\\boxed{\\text{(C)}}", "C", True, "correct", "choice"),
    ("\\boxed{033}", "33", True, "correct", "exact_number"),
    ("\\boxed{1,2}", "12", False, "incorrect", "exact_collection"),
    ("\\boxed{0.333333}", "\\frac{1}{3}", False, "incorrect", "exact_number"),
    ("The answer is $\\$1{,}200$.", "1200", True, "correct", "exact_number"),
]


@pytest.mark.parametrize("response,reference,correct,reason,detail", MORE)
def test_known_failure_modes(response, reference, correct, reason, detail):
    v = judge(response, reference, "stop")
    assert (v.correct, v.reason, v.detail) == (correct, reason, detail), v
