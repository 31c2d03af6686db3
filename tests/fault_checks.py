"""Hostile comparisons the verifier tests inject into checker children (`CheckerPool(check_with=...)`): they
stand in for inputs that hang a child where no signal gets through, or blow its memory limit."""

from __future__ import annotations

import signal
import time

from distill.verify.checker import check


def hostile(pred: str, gold: str, *options):
    """`T:hang` hangs with SIGALRM blocked (C code holding the GIL looks like this to the child's own timer);
    `T:bloat` allocates past any limit the tests set; anything else is the real comparison."""
    if pred == "T:hang":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(3600)
    if pred == "T:bloat":
        _ = bytearray(4 * 2**30)
    return check(pred, gold, *options)


CHECK_WITH = f"{__name__}:hostile"
