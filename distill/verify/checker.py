"""math-verify in killable worker processes: wall-clock and memory limits that work from any thread.

math-verify's own timeouts use `signal.alarm`, which works only in a process's main thread: called from a
thread (a Ray actor's, a thread pool's) it raises on every row, and the row is silently judged incorrect; with
the timeout off, an answer such as `2003^{2002^{2001}}` holds the GIL for minutes inside a C big-integer power
that no signal can interrupt. So every comparison that needs sympy runs here, in a child process:

* the child sets its own address-space limit (`RLIMIT_AS`), so a memory bomb is a MemoryError there;
* a soft timer in the child (`setitimer`, its main thread) turns a slow pure-Python comparison into
  `unverifiable: timeout` without losing the process;
* the parent keeps a hard wall-clock deadline per item and kills the child when the soft timer could not fire
  (C code holding the GIL); the item is `unverifiable: timeout`, the items queued behind it go to a fresh child.

Children are forked from a zygote process that has math-verify and sympy imported already, so replacing a
killed child costs milliseconds, not the seconds of a cold import. Only strings cross the pipe: no sympy object is ever
unpickled or `str()`-ed in the parent. Results are (outcome, detail): outcome is correct | incorrect |
unverifiable; math-verify's exceptions are reported (raise_on_error=True), never turned into "incorrect".

Parsing is strict (`symbolic.parse_whole`): only a parse of the whole answer counts, and an answer whose braces
do not balance is not parsed at all (math-verify's normaliser drops what does not fit). Before math-verify's own
`verify`, `check` settles the classes it gets wrong: exact rationals (and long decimals
printed from them), two closed-form numbers to 45 digits, an angle in degrees against radians (when the caller
says the problem is about angles, or an answer carries a degree sign), two equations of the same line or curve
(`y = 2 - x/2` and `x + 2y = 4`: one is a non-zero multiple of the other), and inequalities joined by "or" /
"and" against intervals (`x \\le 1 \\text{ or } x \\ge 3` is `(-\\infty,1]\\cup[3,\\infty)`; math-verify reads both
joiners as a list).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from fractions import Fraction
from multiprocessing.connection import Connection, wait

CHUNK = 8  # items handed to a child at once: a killed child loses (and we requeue) at most this many
GRACE_S = 1.0  # the hard deadline is the soft one plus this


# ---------------------------------------------------------------- child side

class _SoftTimeout(BaseException):
    """Raised by the child's timer. A BaseException, so math-verify's `except Exception` cannot swallow it."""


def _on_alarm(signum, frame):
    raise _SoftTimeout()


def _bound_bits(expr, limit: int) -> int | None:
    """An upper bound on the bit size of a numeric sympy expression's exact value, or None past `limit`."""
    import sympy

    if isinstance(expr, sympy.Integer):
        return int(expr).bit_length()
    if isinstance(expr, sympy.Rational):
        return int(expr.p).bit_length() + int(expr.q).bit_length()
    if isinstance(expr, sympy.Float):
        return 64
    if isinstance(expr, sympy.Pow):
        b = _bound_bits(expr.base, limit)
        if b is None or not isinstance(expr.exp, sympy.Integer):
            return None
        total = (b + 1) * abs(int(expr.exp))
        return total if total <= limit else None
    if isinstance(expr, (sympy.Add, sympy.Mul)):
        total = 0
        for a in expr.args:
            b = _bound_bits(a, limit)
            if b is None:
                return None
            total += b + 1
        return total if total <= limit else None
    return None


def _exact_rational(expr):
    """expr as an exact sympy Rational when it is a small closed-form rational number (decimals read exactly:
    0.333333 is 333333/10^6, not 1/3), else None."""
    import sympy

    if not isinstance(expr, sympy.Basic) or expr.free_symbols or not expr.is_number:
        return None
    if expr.has(sympy.Float):
        expr = expr.xreplace({f: sympy.Rational(str(f)) for f in expr.atoms(sympy.Float)})
    if _bound_bits(expr, 20_000) is None:
        return None
    value = expr.doit()
    return value if isinstance(value, sympy.Rational) else None


def _closed_number(expr) -> bool:
    import sympy

    return isinstance(expr, sympy.Expr) and not expr.free_symbols and bool(expr.is_number)


def _same_number(a, b) -> bool | None:
    """Whether two closed-form numbers are equal, from 60-digit evaluations; None when they do not evaluate."""
    import sympy

    x, y = a.evalf(60), b.evalf(60)
    if not (x.is_number and y.is_number) or x.has(sympy.zoo, sympy.nan) or y.has(sympy.zoo, sympy.nan):
        return None
    try:
        scale = max(abs(x), abs(y))
        if scale == 0:
            return True
        return bool(abs(x - y) <= scale * sympy.Float(10) ** -45)
    except (TypeError, ValueError):
        return None


def check(pred: str, gold: str, angles: bool = False) -> tuple[str, str]:
    """(outcome, detail) for one normalised answer against its reference. Runs math-verify: call it in a
    checker child (or any process's main thread where hanging is acceptable). `angles`: a plain number may be
    an angle in degrees (the problem is about angles, or an answer had a degree sign), so 45 can be pi/4."""
    import sympy
    from math_verify import verify

    from distill.verify.mathcmp import balanced, decimal_matches, is_decimal
    from distill.verify.symbolic import inequality_sets, parse_whole, same_equation

    gold_parsed = parse_whole(gold) if balanced(gold) else []
    if not gold_parsed:
        return "unverifiable", "reference_unparsed"
    pred_parsed = parse_whole(pred) if balanced(pred) else []
    if not pred_parsed:
        return "unverifiable", "answer_unparsed"
    gold_expr, pred_expr = gold_parsed[0], pred_parsed[0]
    g, p = _exact_rational(gold_expr), _exact_rational(pred_expr)
    if g is not None and p is not None:
        if g == p:
            return "correct", "exact_rational"
        if is_decimal(pred) != is_decimal(gold):  # a printed decimal against an exact value
            dec, exact = (pred, g) if is_decimal(pred) else (gold, p)
            if decimal_matches(dec, Fraction(int(exact.p), int(exact.q))):
                return "correct", "decimal_rounded"
        return "incorrect", "exact_rational"
    same = same_equation(gold_expr, pred_expr)
    if same is not None:
        return ("correct" if same else "incorrect"), "equation"
    same = inequality_sets(gold_expr, gold, pred_expr, pred)
    if same is not None:
        return ("correct" if same else "incorrect"), "inequality_set"
    if angles and _closed_number(gold_expr) and _closed_number(pred_expr) and \
            gold_expr.has(sympy.pi) != pred_expr.has(sympy.pi):
        degrees, radians = (pred_expr, gold_expr) if gold_expr.has(sympy.pi) else (gold_expr, pred_expr)
        if _same_number(degrees * sympy.pi / 180, radians):
            return "correct", "angle_degrees"
    if _closed_number(gold_expr) and _closed_number(pred_expr):
        # Two numbers (no variables): equal only when they agree to 45 significant digits, not math-verify's 6.
        # A decimal is exact (3.14159265 is not \pi); 1/2006! is not 1/2004! although both are ~0.
        same = _same_number(gold_expr, pred_expr)
        if same is not None:
            return ("correct" if same else "incorrect"), "exact_numeric"
    ok = verify(gold_parsed, pred_parsed, timeout_seconds=None, raise_on_error=True)
    return ("correct" if ok else "incorrect"), "math_verify"


def _serve(conn, memory_mb: int, soft_timeout: float, check_with: str | None = None) -> None:
    import resource

    import math_verify.grader
    import math_verify.parser

    math_verify.grader.TIMEOUT_WARNING_SHOWN = True  # we time out ourselves, from the parent
    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    if memory_mb:
        with open("/proc/self/statm") as f:
            vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = vm + memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    compare = check
    if check_with:
        import importlib

        module, _, name = check_with.partition(":")
        compare = getattr(importlib.import_module(module), name)
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            return
        if batch is None:
            return
        for key, pred, gold, *options in batch:
            try:
                signal.setitimer(signal.ITIMER_REAL, soft_timeout)
                try:
                    result = compare(pred, gold, *options)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except _SoftTimeout:
                result = ("unverifiable", "timeout")
            except MemoryError:
                result = ("unverifiable", "memory")
            except RecursionError:
                result = ("unverifiable", "RecursionError")
            except BaseException as e:  # noqa: BLE001 - reported as unverifiable with its type, never incorrect
                result = ("unverifiable", type(e).__name__)
            try:
                conn.send((key, result, time.process_time()))
            except (BrokenPipeError, OSError):
                return


# ---------------------------------------------------------------- parent side

class _Zygote:
    """A process that has math-verify and sympy imported and forks checker children on request.

    Not multiprocessing's forkserver: that one re-runs the caller's `__main__` script in every child (a script
    without an `if __name__ == "__main__"` guard would run again, and again). The zygote is started with `-c`
    and only ever imports distill; children reach the parent through a socket the zygote hands over
    (SCM_RIGHTS). Single-threaded, so forking it is safe."""

    def __init__(self):
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([pkg_root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"from distill.verify.checker import _zygote_main; _zygote_main({child.fileno()})"],
            pass_fds=[child.fileno()], env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        child.close()
        self.sock = parent
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def spawn(self, memory_mb: int, soft_timeout: float, check_with: str | None = None) -> tuple[int, Connection]:
        with self.lock:
            self.sock.sendall(json.dumps([memory_mb, soft_timeout, check_with]).encode())
            msg, fds, _, _ = socket.recv_fds(self.sock, 256, 1)
            if not msg or not fds:
                raise OSError("the checker zygote is gone")
            return json.loads(msg)["pid"], Connection(fds[0])

    def close(self) -> None:
        try:
            self.sock.close()
            self.proc.wait(5)
        except Exception:  # noqa: BLE001
            self.proc.kill()


def _zygote_main(fd: int) -> None:
    import math_verify  # noqa: F401 - imported once here, shared by every forked child
    import sympy  # noqa: F401

    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle, from the first moment
    try:  # warm up: lazy imports and parser construction happen once here, not in every forked child
        for pred, gold in (("\\frac{\\sqrt{3}}{2}+x", "\\sqrt{3}/2"), ("(1, 2]", "[1,2)"), ("\\{1,2\\}", "x=2"),
                           ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\text{yes}")):
            check(pred, gold)
    except Exception:  # noqa: BLE001 - warming up is an optimisation only
        pass
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    sock = socket.socket(fileno=fd)
    while True:
        try:
            msg = sock.recv(256)
        except OSError:
            return
        if not msg:  # the parent closed its end: done
            return
        memory_mb, soft_timeout, check_with = json.loads(msg)
        a, b = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            try:
                sock.close()
                a.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _serve(Connection(b.detach()), memory_mb, soft_timeout, check_with)
            finally:
                os._exit(0)
        b.close()
        try:
            socket.send_fds(sock, [json.dumps({"pid": pid}).encode()], [a.fileno()])
        except OSError:  # the parent is gone (interrupted mid-request): the child sees its end close and exits
            return
        finally:
            a.close()


_ZYGOTE: _Zygote | None = None
_ZYGOTE_LOCK = threading.Lock()


def _zygote() -> _Zygote:
    global _ZYGOTE
    with _ZYGOTE_LOCK:
        if _ZYGOTE is None or not _ZYGOTE.alive():
            _ZYGOTE = _Zygote()
        return _ZYGOTE


class _Child:
    def __init__(self, memory_mb: int, soft_timeout: float, check_with: str | None = None):
        try:
            self.pid, self.conn = _zygote().spawn(memory_mb, soft_timeout, check_with)
        except OSError:  # a dead zygote: start a new one, once
            self.pid, self.conn = _zygote().spawn(memory_mb, soft_timeout, check_with)
        self.inflight: deque = deque()
        self.started = 0.0  # when the item at the head of `inflight` started
        self.cpu = 0.0

    def send(self, items: list, now: float) -> None:
        self.inflight.extend(items)
        self.started = now
        self.conn.send([tuple(item) for item in items])

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.conn.close()

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:  # already gone
            pass
        self.conn.close()


class CheckerPool:
    """A pool of checker children. `check_many(pairs)` returns one (outcome, detail) per (pred, gold) pair (or
    (pred, gold, angles): see `check`), in order; no pair can take longer than about `timeout_s` + 1 s, whatever it is. Thread-safe (one batch at a
    time)."""

    def __init__(self, workers: int = 1, timeout_s: float = 5.0, memory_mb: int = 1024,
                 check_with: str | None = None):
        # "module:function" the children compare with instead of `check` (tests inject hostile ones this way)
        self.check_with = check_with
        self.workers = max(1, int(workers))
        self.timeout_s = float(timeout_s)
        self.memory_mb = int(memory_mb)
        self.children: list[_Child] = []
        self.lock = threading.Lock()
        self.cpu_dead = 0.0  # CPU seconds of children that were killed or closed
        self.killed = 0

    def _spawn(self) -> _Child:
        return _Child(self.memory_mb, self.timeout_s, self.check_with)

    def cpu_seconds(self) -> float:
        """CPU time the children spent checking (as they last reported it)."""
        return self.cpu_dead + sum(c.cpu for c in self.children)

    def check_many(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if not pairs:
            return []
        with self.lock:
            return self._run(pairs)

    def _run(self, pairs):
        results: list = [None] * len(pairs)
        todo = deque((i, *pair) for i, pair in enumerate(pairs))
        while len(self.children) < min(self.workers, len(pairs)):
            self.children.append(self._spawn())
        remaining = len(pairs)
        hard = self.timeout_s + GRACE_S
        while remaining:
            now = time.monotonic()
            for c in self.children:
                if not c.inflight and todo:
                    chunk = [todo.popleft() for _ in range(min(CHUNK, len(todo)))]
                    try:
                        c.send(chunk, now)
                    except (BrokenPipeError, OSError):
                        todo.extendleft(reversed(chunk))
                        c.inflight.clear()
                        self._replace(c)
            busy = [c for c in self.children if c.inflight]
            if not busy:
                continue
            next_deadline = min(c.started + hard for c in busy)
            ready = wait([c.conn for c in busy], timeout=max(0.0, next_deadline - time.monotonic()))
            now = time.monotonic()
            for c in busy:
                if c.conn in ready:
                    try:
                        while c.conn.poll():
                            key, result, cpu = c.conn.recv()
                            head = c.inflight.popleft()
                            assert head[0] == key
                            results[key] = result
                            remaining -= 1
                            c.cpu = cpu
                            c.started = now
                            if not c.inflight:
                                break
                    except (EOFError, OSError):
                        # The child died mid-item (a crash in C code, or killed for memory by the OS).
                        remaining -= self._give_up(c, "crashed", results, todo)
                elif c.inflight and now >= c.started + hard:
                    remaining -= self._give_up(c, "timeout", results, todo)
        return results

    def _give_up(self, c, why: str, results: dict, todo) -> int:
        """The item `c` is stuck on is unverifiable; its queue goes back to the others and `c` is replaced."""
        key = c.inflight.popleft()[0]
        results[key] = ("unverifiable", why)
        todo.extendleft(reversed(c.inflight))
        c.inflight.clear()
        self._replace(c)
        return 1

    def _replace(self, child: _Child) -> None:
        self.killed += 1
        self.cpu_dead += child.cpu
        child.kill()
        self.children[self.children.index(child)] = self._spawn()

    def close(self) -> None:
        for c in self.children:
            self.cpu_dead += c.cpu
            c.stop()
        self.children = []


_POOLS: dict[tuple, CheckerPool] = {}
_POOLS_LOCK = threading.Lock()


def pool(workers: int = 1, timeout_s: float = 5.0, memory_mb: int = 1024) -> CheckerPool:
    """A shared pool for these settings, started on first use and closed at exit."""
    key = (max(1, int(workers)), float(timeout_s), int(memory_mb))
    with _POOLS_LOCK:
        p = _POOLS.get(key)
        if p is None:
            p = _POOLS[key] = CheckerPool(*key)
        return p


@atexit.register
def _close_all() -> None:
    for p in list(_POOLS.values()):
        p.close()
    _POOLS.clear()
    if _ZYGOTE is not None:
        _ZYGOTE.close()
