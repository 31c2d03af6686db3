"""Answer equivalence against other graders' hard cases: no acceptance from reading part of an answer, the
classes peers accept (long decimals, equations of one line, degrees against radians, inequalities against
intervals), gold answers as datasets write them, and `correct` kept apart from `kept` / `reason`."""

from __future__ import annotations

import json
import random

import pytest

from distill.cli import main
from distill.verify import compare_many, judge, reference_answer
from distill.verify.mathcmp import decimal_matches, fast_compare
from tests.conftest import write_jsonl


def _boxed(answer: str) -> str:
    return f"<think>\nwork\n</think>\n\nThe final answer is $\\boxed{{{answer}}}$."


# ---------------------------------------------------------------- no false positive from a fast path

def _leading_number(rng: random.Random) -> str:
    n = rng.randint(1, 999) * rng.choice([1, -1])
    return rng.choice([str(n), f"{n}.{rng.randint(1, 99)}", f"\\frac{{{abs(n)}}}{{{rng.randint(2, 9)}}}"])


def _malformed_tail(rng: random.Random, balanced_only: bool = False) -> str:
    """LaTeX that does not parse, or words and symbols that change what the number says. `balanced_only`: a
    second tail must not close the first one's brace (`^{` then `\\text{ m}}` is a well-formed exponent)."""
    k = rng.randint(2, 9)
    tails = [
        f"\\sqrt({k})", "\\sqrt(", f"\\sqrt({k}", f"\\log({k})", "\\log(", f"\\log({k}",      # \sqrt( and \log(
        f"\\frac1{k}x", f"\\frac{{1}}{{{k}}}x", f"\\frac{{1}}{{{k}", "\\frac{1}",              # \frac12x, cut \frac
        "}", "{", "}}", "{{", "^{", "_{", "\\left(", "\\right)",                                 # unbalanced braces
        "\\text{cm", "\\,\\mathrm{kg}^{", "\\text{ m}}", "\\text{", "\\mathrm{i}",               # broken units, i
        "\\text{ or more}", " or less", "\\text{ if } n > 2", " is wrong", " million",            # words
        " x", "\\cdot", "\\times 10^{", "\\%)", "\\text{ and } 5",
    ]
    if balanced_only:
        tails = [t for t in tails if t.count("{") == t.count("}")]
    return rng.choice(tails)


def test_trailing_malformed_latex_is_never_accepted():
    """Property: an answer that is a number followed by malformed LaTeX, units or text never equals that
    number, in the fast path or in the checker (math-verify's default parse reads `7\\sqrt(3)` as 7)."""
    rng = random.Random(16)
    pairs = []
    for _ in range(300):
        number = _leading_number(rng)
        answer = number + _malformed_tail(rng) + (_malformed_tail(rng, True) if rng.random() < 0.5 else "")
        pairs.append((answer, number))
    for answer, number in pairs:
        fast = fast_compare(answer, number)
        assert fast is None or fast[0] is False, (answer, number, fast)
    results = compare_many(pairs, workers=2)
    accepted = [(p, g, r) for (p, g), r in zip(pairs, results) if r[0] == "correct"]
    assert accepted == []
    # the generator does reach the checker, whose strict parse refuses them, and the fast path's own rules
    details = {r[1] for r in results}
    assert {"answer_unparsed", "qualified_answer"} <= details, details


@pytest.mark.parametrize("answer", ["7\\sqrt(3)", "7\\sqrt(", "7\\log(", "7\\frac12x", "7^{", "7\\text{cm",
                                    "7\\text{ or more}", "7\\mathrm{i}", "(C) or (D)"])
def test_issue_examples_are_not_accepted(answer):
    gold = "C" if "(C)" in answer else "7"
    assert not judge(_boxed(answer), gold, "stop").correct


def test_well_formed_units_and_number_words_still_match():
    pairs = [("7 \\text{ cm}", "7"), ("20 hours", "20"), ("7 \\text{ million}", "7000000"), ("7 million", "7000000"),
             ("(C) \\frac{1}{2}", "C"), ("(B) A triangle", "B"), ("3 \\mathrm{kg}", "3")]
    assert [r[0] for r in compare_many(pairs)] == ["correct"] * len(pairs)
    assert compare_many([("7 million", "7")])[0] == ("incorrect", "exact_number")
    assert [r[0] for r in compare_many([("C, D", "C"), ("C or D", "C"), ("(C) and (E)", "C")])] == ["incorrect"] * 3


# ---------------------------------------------------------------- classes peers accept, both directions

CLASSES = [
    # (answer, reference, problem, correct, detail)
    # a long decimal printed from a rational: rounded or cut to the digits shown; too few digits never match
    ("0.142857142857143", "\\frac{1}{7}", None, True, "decimal_rounded"),
    ("\\frac{1}{7}", "0.142857142857143", None, True, "decimal_rounded"),
    ("0.1428571428", "\\frac{1}{7}", None, True, "decimal_rounded"),
    ("0.142857142857144", "\\frac{1}{7}", None, False, "exact_number"),
    ("0.14", "\\frac{1}{7}", None, False, "exact_number"),
    ("0.333333", "\\frac{1}{3}", None, False, "exact_number"),
    ("0.1250000001", "\\frac{1}{8}", None, False, "exact_number"),
    ("3^{-80}", "3^{-79}", None, False, "exact_number"),
    ("0.000000000000000000000000000000000000006765495701185377", "3^{-80}", None, True, "decimal_rounded"),
    ("0.000000000000000000000000000000000000006765495701185377", "3^{-79}", None, False, "exact_number"),
    ("0.000000000000000000000000000000000000006765495701185", "3^{-80}", None, True, "decimal_rounded"),
    ("0.857142857142857", "\\binom{4}{2}/7", None, True, "decimal_rounded"),   # the checker's exact path
    ("0.86", "\\binom{4}{2}/7", None, False, "exact_rational"),
    # one line (or curve), two equations: one is a non-zero multiple of the other
    ("y = 2 - \\frac{x}{2}", "x + 2y = 4", None, True, "equation"),
    ("x + 2y = 4", "y = 2 - \\frac{x}{2}", None, True, "equation"),
    ("2x - y + 3 = 0", "y = 2x + 3", None, True, "equation"),
    ("y = 2 + \\frac{x}{2}", "x + 2y = 4", None, False, "equation"),
    ("y = 2 - \\frac{x}{2}", "x + 2y = 5", None, False, "equation"),
    ("x^2 = 1", "x = 1", None, False, "equation"),
    # an angle in degrees against radians: when an answer has a degree sign, or the problem is about angles
    ("45^\\circ", "\\frac{\\pi}{4}", None, True, "angle_degrees"),
    ("\\frac{\\pi}{4}", "45^\\circ", None, True, "angle_degrees"),
    ("45", "\\frac{\\pi}{4}", "What is the measure of angle ABC, in degrees?", True, "angle_degrees"),
    ("\\frac{\\pi}{2}", "90", "Find the angle between the two vectors.", True, "angle_degrees"),
    ("45", "\\frac{\\pi}{4}", None, False, "exact_numeric"),
    ("45", "\\frac{\\pi}{4}", "Find the angle, in radians.", False, "exact_numeric"),
    ("60^\\circ", "\\frac{\\pi}{4}", None, False, "exact_numeric"),
    # inequalities joined by "or" / "and" against intervals (math-verify reads both joiners as a list)
    ("x \\le 1 \\text{ or } x \\ge 3", "(-\\infty,1]\\cup[3,\\infty)", None, True, "inequality_set"),
    ("(-\\infty,1]\\cup[3,\\infty)", "x \\le 1 \\text{ or } x \\ge 3", None, True, "inequality_set"),
    ("x \\le 1 \\lor x \\ge 3", "(-\\infty,1]\\cup[3,\\infty)", None, True, "inequality_set"),
    ("x \\ge 1 \\text{ and } x \\le 3", "[1,3]", None, True, "inequality_set"),
    ("x < 1 \\text{ or } x \\ge 3", "(-\\infty,1]\\cup[3,\\infty)", None, False, "inequality_set"),
    ("x \\le 1 \\text{ and } x \\ge 3", "x \\le 1 \\text{ or } x \\ge 3", None, False, "inequality_set"),
    # words that qualify a number are part of the answer
    ("7 \\text{ or more}", "7", None, False, "qualified_answer"),
    ("about 7", "7", None, False, "qualified_answer"),
    ("7 \\text{ or more}", "7 \\text{ or more}", None, True, "same_text"),
]


@pytest.mark.parametrize("answer,reference,problem,correct,detail", CLASSES)
def test_equivalence_classes(answer, reference, problem, correct, detail):
    v = judge(_boxed(answer), reference, "stop", problem=problem)
    assert (v.correct, v.detail) == (correct, detail), v


def test_decimal_rule_directly():
    from fractions import Fraction

    assert decimal_matches("0.142857142857143", Fraction(1, 7))      # rounded
    assert decimal_matches("0.142857142857142", Fraction(1, 7))      # cut
    assert not decimal_matches("0.142857143", Fraction(1, 7))        # 9 significant digits: too few
    assert decimal_matches("-0.6666666667", Fraction(-2, 3))
    assert not decimal_matches("0.6666666667", Fraction(-2, 3))


# ---------------------------------------------------------------- gold answers as datasets write them

GOLD = [
    # (reference as written in a dataset, an equal answer, a different answer)
    ("$\\frac{1}{2}$", "0.5", "0.4"),                 # in $...$
    ("$$\\frac{1}{2}$$", "1/2", "2"),
    ("\\(\\frac{1}{2}\\)", "0.5", "5"),
    ("\\frac{1}{2}", "\\frac12", "\\frac13"),          # bare LaTeX
    ("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2", "\\sqrt{2}/2"),
    ("2\\sqrt{3}", "\\sqrt{12}", "3\\sqrt{2}"),
    ("\\$10", "10", "11"),                             # \$
    ("$\\$10.50$", "10.5", "10.05"),
    ("\\text{Evelyn}", "Evelyn", "Emily"),             # \text{}
    ("5\\text{ cm}", "5", "6"),
    ("\\text{(B)}", "B", "C"),
    ("\\dfrac{3}{4}", "0.75", "0.7"),                   # \dfrac, \tfrac
    ("\\tfrac{3}{4}", "\\frac{3}{4}", "\\frac{4}{3}"),
    ("10{,}000", "10000", "1000"),                      # 10{,}000
    ("\\$1{,}000", "1000", "100"),
    ("7.", "7", "8"),                                   # a trailing period
    ("$7$.", "7", "8"),
    ("$\\frac{1}{2}$.", "0.5", "2"),
    ("\\sqrt{2}.", "\\sqrt 2", "2"),
]


@pytest.mark.parametrize("written,same,other", GOLD)
def test_gold_answers_as_datasets_write_them(written, same, other):
    ref = reference_answer(written, "plain")
    assert judge(_boxed(same), ref, "stop").correct, (written, same)
    v = judge(_boxed(other), ref, "stop")
    assert (v.correct, v.reason) == (False, "incorrect"), (written, other, v)


# ---------------------------------------------------------------- correct is the answer, kept is the filters'

def test_verify_reports_a_right_answer_in_a_filtered_trace_as_correct_and_not_kept(tmp_path):
    loop = "<think>\n" + "I will try again. Let me recompute the sum of the digits. " * 80 + "\n</think>\n\\boxed{7}"
    mixed = "<think>\nThree plus four. 所以答案是七，我们再检查一下。\n</think>\n\\boxed{7}"
    rows = [{"problem": "What is 3 + 4?", "answer": "7", "response": loop},
            {"problem": "What is 2 + 5?", "answer": "7", "response": mixed},
            {"problem": "What is 1 + 5?", "answer": "7", "response": loop.replace("{7}", "{8}")},
            {"problem": "What is 6 + 1?", "answer": "7", "response": _boxed("7")}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    assert main(["verify", str(src), str(out), "--workers", "1"]) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(g["correct"], g["kept"], g["reason"]) for g in got] == [
        (True, False, "repetition"), (True, False, "language_mixing"), (False, False, "repetition"),
        (True, True, "correct")]
    assert [g["extracted"] for g in got] == ["7", "7", "8", "7"]


def test_the_problem_reaches_the_checker_in_the_stage(tmp_path):
    """The angle rule needs the problem text: `distill verify` passes it through."""
    rows = [{"problem": "What is the measure of angle ABC, in degrees?", "answer": "\\frac{\\pi}{4}",
             "response": _boxed("45")},
            {"problem": "Compute the value of x.", "answer": "\\frac{\\pi}{4}", "response": _boxed("45")}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    assert main(["verify", str(src), str(out), "--workers", "1"]) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(g["correct"], g["detail"]) for g in got] == [(True, "angle_degrees"), (False, "exact_numeric")]
