"""One verdict per trace: correct, incorrect or unverifiable, each with a reason; never a silent "incorrect".

`judge_many` reads each trace's final answer (`extract`), settles what plain string and exact-rational work can
in this process (`mathcmp.fast_compare`: most traces), and sends the rest to math-verify in killable worker
processes (`checker`), each distinct (answer, reference) pair once. Code answers (answer_format "code") run
against their tests in the sandbox (`code`).

Reasons (`Verdict.reason`), in the order they are decided:
  truncated          finish reason "length" (when dropping truncated traces)
  generation_error   the teacher returned no trace (finish reason "error")
  unclosed_think     `<think>` opened and never closed: no final-answer region
  unreferenced       no reference answer to check against (non-reasoning data)
  empty_answer       nothing after `</think>`, or an empty `\\boxed{}`
  no_answer          no box, `####`, answer marker or bold final line in the final-answer region
  correct | incorrect
  unverifiable: X    the check could not be done: timeout, memory, crashed, too_long (answer over 2,000
                     characters), too_deep (brackets nested over 40 deep), reference_unparsed, answer_unparsed,
                     or the exception's type
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.verify.extract import MAX_ANSWER_CHARS, extract_answer, final_region
from distill.verify.mathcmp import nesting_depth

KEEP_REASONS = ("correct", "unreferenced")
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_MB = 1024
MAX_NESTING = 40  # brackets nested deeper than this are no answer anyone writes; parsers recurse on them


@dataclass(frozen=True)
class Verdict:
    correct: bool
    reason: str
    extracted: str | None
    detail: str | None = None  # how it was decided (same_text, exact_number, math_verify, tests 3/3, ...)

    @property
    def outcome(self) -> str:
        """correct | incorrect | unverifiable | rejected (a trace-level reason: truncated, no_answer, ...)."""
        if self.correct:
            return "correct"
        if self.reason == "incorrect":
            return "incorrect"
        if self.reason.startswith("unverifiable"):
            return "unverifiable"
        return "rejected"


def precheck(response, reference, finish_reason, drop_truncated, answer_format) -> Verdict | str:
    """A verdict decided before any comparison, or the extracted answer to compare."""
    if finish_reason == "length" and drop_truncated:
        return Verdict(False, "truncated", None)
    if finish_reason == "error":
        return Verdict(False, "generation_error", None)
    region, problem = final_region(response or "")
    if region is None:
        return Verdict(False, problem, None)
    if answer_format == "code":
        from distill.verify.code import extract_code

        predicted = extract_code(region)
    else:
        predicted = extract_answer(region) if region.strip() else None
    if not reference:
        # Nothing after the reasoning: a non-reasoning example would train on an empty answer.
        return Verdict(False, "empty_answer" if not region.strip() else "unreferenced", predicted)
    if not region.strip() or predicted == "":
        return Verdict(False, "empty_answer", predicted)
    if predicted is None:
        return Verdict(False, "no_answer", None)
    if answer_format != "code":
        if len(predicted) > MAX_ANSWER_CHARS:
            return Verdict(False, "unverifiable: too_long", predicted[:200] + "...", "too_long")
        if nesting_depth(predicted) > MAX_NESTING:
            return Verdict(False, "unverifiable: too_deep", predicted[:200], "too_deep")
    return predicted


def verdict_from_result(predicted: str, outcome: str, detail: str) -> Verdict:
    if outcome == "correct":
        return Verdict(True, "correct", predicted, detail)
    if outcome == "incorrect":
        return Verdict(False, "incorrect", predicted, detail)
    return Verdict(False, f"unverifiable: {detail}", predicted, detail)


def _for_checker(pred: str, gold: str, angle_problem: bool) -> tuple[str, str, bool]:
    """The normalised pair the checker compares, with its angle flag. An equation against an equation keeps
    both sides' `y =` (`y = 2 - x/2` is the line `x + 2y = 4`, not the number 2 - x/2)."""
    from distill.verify.mathcmp import mentions_degrees, normalise

    p, g = normalise(pred), normalise(gold)
    if "=" in p or "=" in g:
        p, g = normalise(pred, keep_assignment=True), normalise(gold, keep_assignment=True)
    return p, g, angle_problem or mentions_degrees(pred) or mentions_degrees(gold)


def compare_many(pairs: list[tuple], workers: int = 1, timeout_s: float = DEFAULT_TIMEOUT_S,
                 memory_mb: int = DEFAULT_MEMORY_MB) -> list[tuple[str, str]]:
    """(outcome, detail) for each (answer, reference) or (answer, reference, angle_problem) pair: exact fast path
    here, math-verify in the checker pool for the rest. Each distinct pair is decided once. `angle_problem`
    (`mathcmp.angle_problem(problem)`): a plain number may be an angle in degrees."""
    from distill.verify import checker
    from distill.verify.mathcmp import fast_compare

    out: list = [None] * len(pairs)
    slow: dict[tuple, list[int]] = {}
    decided: dict[tuple, tuple[str, str]] = {}
    for i, pair in enumerate(pairs):
        pair = (pair[0], pair[1], bool(pair[2]) if len(pair) > 2 else False)
        if pair in decided:
            out[i] = decided[pair]
            continue
        try:
            fast = fast_compare(pair[0], pair[1])
        except Exception:  # noqa: BLE001 - the fast path gives up; the checker (and its limits) decides
            fast = None
        if fast is not None:
            decided[pair] = out[i] = ("correct" if fast[0] else "incorrect", fast[1])
        else:
            slow.setdefault(pair, []).append(i)
    if slow:
        keys = list(slow)
        normed = [_for_checker(*key) for key in keys]
        results = checker.pool(workers, timeout_s, memory_mb).check_many(normed)
        for key, res in zip(keys, results):
            for i in slow[key]:
                out[i] = tuple(res)
    return out


def judge_many(items: list[tuple], workers: int = 1, timeout_s: float = DEFAULT_TIMEOUT_S,
               memory_mb: int = DEFAULT_MEMORY_MB, code_limits=None) -> list[Verdict]:
    """Judge (response, reference, finish_reason, drop_truncated[, answer_format[, problem]]) tuples (the problem
    text only decides whether a plain number may be an angle in degrees). Never raises for a row: whatever a
    check does, the row gets a verdict within about `timeout_s` (code: its tests' limits)."""
    from distill.verify.mathcmp import angle_problem

    verdicts: list = [None] * len(items)
    math_rows: list[tuple[int, str, str, bool]] = []
    code_rows: list[tuple[int, str, str]] = []
    for i, item in enumerate(items):
        response, reference, finish_reason, drop_truncated = item[:4]
        answer_format = item[4] if len(item) > 4 else None
        pre = precheck(response, reference, finish_reason, drop_truncated, answer_format)
        if isinstance(pre, Verdict):
            verdicts[i] = pre
        elif answer_format == "code":
            code_rows.append((i, pre, reference))
        else:
            math_rows.append((i, pre, reference, angle_problem(item[5] if len(item) > 5 else None)))
    if math_rows:
        results = compare_many([(p, r, a) for _, p, r, a in math_rows], workers, timeout_s, memory_mb)
        for (i, predicted, _, _), (outcome, detail) in zip(math_rows, results):
            verdicts[i] = verdict_from_result(predicted, outcome, detail)
    if code_rows:
        from distill.verify.code import run_tests_many

        results = run_tests_many([(code, ref) for _, code, ref in code_rows], workers, code_limits)
        for (i, code, _), (outcome, detail) in zip(code_rows, results):
            verdicts[i] = verdict_from_result(code, outcome, detail)
    return verdicts


def judge(response: str, reference: str, finish_reason: str | None = None, drop_truncated: bool = True,
          answer_format: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, problem: str | None = None
          ) -> Verdict:
    """One trace's verdict (see `judge_many`). Safe to call from any thread."""
    return judge_many([(response, reference, finish_reason, drop_truncated, answer_format, problem)], 1, timeout_s)[0]


def equivalent(predicted: str, reference: str, timeout_s: float = DEFAULT_TIMEOUT_S, problem: str | None = None
               ) -> bool:
    """Whether two answers are the same (False when it cannot be decided)."""
    from distill.verify.mathcmp import angle_problem

    return compare_many([(predicted, reference, angle_problem(problem))], 1, timeout_s)[0][0] == "correct"
