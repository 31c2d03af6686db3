"""Hostile answers and awkward callers: every row gets a verdict within its limit, nothing stalls the batch,
an exception is never a silent "incorrect", and judging works from threads (math-verify's signal-based timeout
does not)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from distill.verify import checker, judge, judge_many
from distill.verify.checker import CheckerPool
from tests.fault_checks import CHECK_WITH

TIMEOUT = 2.0

HOSTILE = {
    "power_tower": "2003^{2002^{2001}}",
    "nested_brackets": "(" * 5000 + "1" + ")" * 5000,
    "deep_but_short": "\\frac{1}{" * 30 + "2" + "}" * 30,
    "digits_200k": "9" * 200_000,
    "factorial_tower": "(10^{10})!",
}


def _boxed(answer: str) -> str:
    return f"<think>\nwork\n</think>\n\nThe final answer is $\\boxed{{{answer}}}$."


def test_a_batch_of_hostile_answers_never_stalls():
    ordinary = [(_boxed("\\frac{\\sqrt{3}}{2}"), "\\frac{\\sqrt3}{2}"), (_boxed("x+1"), "1+x"), (_boxed("7"), "7")]
    megabyte = ("<think>\n" + "blah " * 200_000 + "\n</think>\n" + "\\boxed{5}", "5")
    items = [(_boxed(a), "5") for a in HOSTILE.values()] + ordinary + [megabyte]
    t0 = time.monotonic()
    verdicts = judge_many([(r, g, "stop", True) for r, g in items], workers=2, timeout_s=TIMEOUT)
    took = time.monotonic() - t0
    hostile = dict(zip(HOSTILE, verdicts[: len(HOSTILE)]))
    for name, v in hostile.items():
        assert not v.correct, name
        assert v.outcome in ("unverifiable", "incorrect"), (name, v)
    assert hostile["power_tower"].reason == "unverifiable: timeout"
    assert hostile["nested_brackets"].reason.startswith("unverifiable")
    assert hostile["digits_200k"].reason == "unverifiable: too_long"
    # the ordinary rows in the same batch are judged normally
    assert [v.reason for v in verdicts[len(HOSTILE) : len(HOSTILE) + 3]] == ["correct"] * 3
    assert verdicts[-1].correct  # a megabyte response: only its final region is read
    # two checker processes, each hostile comparison bounded by its limit (+1 s grace), plus start-up
    assert took < 3 * (TIMEOUT + 1) + 15, took


def test_timeouts_work_from_threads():
    """math-verify's own timeout raises in a thread (every row silently wrong); ours is a process limit."""
    items = [(_boxed("\\frac{1}{2}"), "0.5"), (_boxed("\\sqrt{2}^2"), "2"), (_boxed("2003^{2002^{2001}}"), "1")]
    with ThreadPoolExecutor(3) as ex:
        got = list(ex.map(lambda it: judge(it[0], it[1], "stop", timeout_s=TIMEOUT), items))
    assert [v.reason for v in got] == ["correct", "correct", "unverifiable: timeout"]
    assert threading.active_count() >= 1


def test_checker_kills_and_replaces_a_stuck_child():
    """A child stuck where its own timer cannot fire (C code holding the GIL) is killed at the hard deadline;
    the items queued behind it go to a fresh child."""
    pool = CheckerPool(1, timeout_s=1.0, memory_mb=512, check_with=CHECK_WITH)
    try:
        t0 = time.monotonic()
        res = pool.check_many([("\\sqrt{4}", "2"), ("T:hang", "5"), ("x^2", "x \\cdot x"), ("2003^{2002^{2001}}", "5")])
        assert time.monotonic() - t0 < 15
        assert res[1] == ("unverifiable", "timeout")
        assert res[0][0] == "correct" and res[2][0] == "correct"  # queued behind the stuck one: re-run
        assert res[3] == ("unverifiable", "timeout")  # the soft timer: no kill needed
        assert pool.killed == 1
    finally:
        pool.close()


def test_memory_limit_is_reported_not_incorrect():
    """The child's address-space limit is real: an allocation past it is `unverifiable: memory`, and the child
    goes on to judge the next item."""
    pool = CheckerPool(1, timeout_s=5.0, memory_mb=256, check_with=CHECK_WITH)
    try:
        res = pool.check_many([("T:bloat", "1"), ("\\frac{6}{4}", "1.5")])
        assert res == [("unverifiable", "memory"), ("correct", "exact_rational")]
        assert pool.killed == 0
    finally:
        pool.close()


def test_exceptions_are_unverifiable_with_their_type(monkeypatch):
    """A failing check is `unverifiable: <Exception>`, never `incorrect`."""
    import distill.verify.checker as ck

    def boom(pred, gold):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(ck, "check", boom)
    # run the child-side loop in this process on a pipe, the way a checker child runs it
    from multiprocessing import Pipe

    parent, child = Pipe()
    parent.send([(0, "x", "y")])
    parent.send(None)
    ck._serve(child, 0, 5.0)
    key, result, _ = parent.recv()
    assert (key, result) == (0, ("unverifiable", "ZeroDivisionError"))


@pytest.mark.parametrize("answer,reference,reason", [
    ("\\boxed{5", "5", "no_answer"),                   # an unclosed last box is no answer
    ("\\boxed{}", "5", "empty_answer"),
    ("\\boxed{" + "x+" * 1500 + "1}", "5", "unverifiable: too_long"),
])
def test_malformed_answers(answer, reference, reason):
    assert judge(f"<think>w</think>{answer}", reference, "stop", timeout_s=TIMEOUT).reason == reason


def test_pools_are_shared_and_closed_at_exit():
    p = checker.pool(1, TIMEOUT, 1024)
    assert checker.pool(1, TIMEOUT, 1024) is p
