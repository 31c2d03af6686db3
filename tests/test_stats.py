"""pass@1, its standard error and the paired student − base error, checked against a hand computation."""

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.pipeline.eval import compare_to_base, correct_by_problem
from distill.stats import comparison_rows, format_failure_rate, format_table, paired_difference, pass_at_1

# 4 problems, k = 2 samples each.
BASE = {"p1": [True, False], "p2": [False, False], "p3": [True, True], "p4": [False, False]}
STUDENT = {"p1": [True, True], "p2": [True, False], "p3": [True, True], "p4": [False, False]}


def test_pass_at_1_and_its_standard_error_by_hand():
    # base per problem: 0.5, 0, 1, 0 -> mean 0.375; squared deviations 1/64, 9/64, 25/64, 9/64 = 11/16;
    # sample variance 11/16 / 3 = 11/48; standard error sqrt(11/48 / 4) = sqrt(11/192) = 0.23936
    mean, se = pass_at_1(BASE)
    assert mean == 0.375
    assert se == pytest.approx(math.sqrt(11 / 192))
    assert round(se, 4) == 0.2394
    # student per problem: 1, 0.5, 1, 0 -> mean 0.625, the same spread: sqrt(11/192)
    mean, se = pass_at_1(STUDENT)
    assert (mean, round(se, 4)) == (0.625, 0.2394)


def test_paired_difference_by_hand():
    # per-problem differences 0.5, 0.5, 0, 0 -> mean 0.25; squared deviations 4 x 1/16 = 1/4; variance 1/12;
    # paired standard error sqrt(1/12 / 4) = sqrt(1/48) = 0.14434; 0.25 < 2 x 0.14434: not clear
    d = paired_difference(BASE, STUDENT)
    assert d["difference"] == 0.25
    assert d["paired_stderr"] == pytest.approx(math.sqrt(1 / 48))
    assert (d["problems"], d["k"], d["exceeds_2se"]) == (4, 2, False)
    # the independent error, sqrt(se_b² + se_s²) = sqrt(11/96) = 0.3385, ignores that both answered p3 and p4 alike
    assert d["paired_stderr"] < math.sqrt(11 / 96)


def test_paired_difference_exceeds_two_errors():
    base = {f"p{i}": [False] for i in range(10)}
    student = {f"p{i}": [i < 6] for i in range(10)}
    # differences: six 1s, four 0s -> 0.6; variance (6 x 0.16 + 4 x 0.36) / 9 = 2.4 / 9; se sqrt(2.4/90) = 0.1633
    d = paired_difference(base, student)
    assert d["difference"] == pytest.approx(0.6)
    assert d["paired_stderr"] == pytest.approx(math.sqrt(2.4 / 90))
    assert d["exceeds_2se"] is True


def test_paired_difference_refuses_different_problems_or_k():
    with pytest.raises(ValueError, match="^paired comparison needs the same problems; differing: p4$"):
        paired_difference(BASE, {k: v for k, v in STUDENT.items() if k != "p4"})
    with pytest.raises(ValueError, match=r"^paired comparison needs the same k .*found k in \[1, 2\]$"):
        paired_difference(BASE, {**STUDENT, "p1": [True]})


def test_format_failures_count_no_answer_and_truncated():
    samples = [("no_answer", "stop", False), ("truncated", "length", False), ("incorrect", "length", False),
               ("incorrect", "stop", False), ("correct", "length", True)]
    # no answer; cut; cut with a stray number read as a wrong answer -> 3 of 5. A right answer is never a failure.
    assert format_failure_rate(samples) == 0.6


def _samples(table: dict[str, list[bool]], reasons: str = "incorrect") -> pa.Table:
    return pa.Table.from_pylist([
        {"benchmark": "toy", "problem_id": pid, "sample_index": i, "correct": c, "reason": reasons}
        for pid, cs in table.items() for i, c in enumerate(cs)])


def test_compare_to_base_reads_the_base_samples(tmp_path):
    pq.write_table(_samples(BASE), tmp_path / "samples.parquet")
    (tmp_path / "scores.json").write_text('{"model": "base:tiny"}')
    assert correct_by_problem(_samples(STUDENT)) == {"toy": STUDENT}
    vs = compare_to_base(_samples(STUDENT), tmp_path)
    assert vs == {"model": "base:tiny", "benchmarks": {"toy": {"difference": 0.25, "paired_stderr": 0.1443,
                                                                "problems": 4, "k": 2, "exceeds_2se": False}}}


def test_terminal_table_shows_base_student_and_paired_difference():
    base = {"benchmarks": {"toy": {"pass@1": 0.375, "stderr": 0.2394, "problems": 4, "k": 2}}}
    student = {"benchmarks": {"toy": {"pass@1": 0.625, "stderr": 0.2394, "problems": 4, "k": 2}},
               "vs_base": {"model": "base:tiny", "benchmarks": {"toy": paired_difference(BASE, STUDENT)}}}
    text = format_table(comparison_rows(student, base), "tiny-lora")
    assert text.splitlines()[-1].split() == ["toy", "4", "2", "37.5", "±", "23.9", "62.5", "±", "23.9",
                                              "+25.0", "±", "14.4", "not", "significant", "(<", "2", "se)"]
