"""The code sandbox contains what untrusted programs do, and says so; code answers are judged on their tests.

Each containment test runs a real hostile program: a fork bomb, a memory bomb, an infinite loop (CPU) and a
sleeper (wall clock), a network connection to a server this test runs on 127.0.0.1, and writes outside the
program's temporary directory. A layer this machine's kernel cannot provide is skipped with the reason (CI runs
as root on a kernel with namespaces and Landlock, where none is skipped).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

import pytest

from distill.verify import judge, judge_many
from distill.verify.code import extract_code, normalise_tests, run_tests
from distill.verify.sandbox import Limits, capabilities, run_python

FAST = Limits(cpu_s=2, wall_s=5, memory_mb=256, nproc=16)


@pytest.fixture(scope="module")
def caps():
    c = capabilities()
    assert c["works"], c
    return c


def test_ordinary_program_runs(caps):
    res = run_python("import sys\nprint(sum(map(int, sys.stdin.read().split())))", stdin="1 2 3\n", limits=FAST)
    assert (res.status, res.stdout) == ("ok", "6\n")
    assert res.isolation["rlimits"] is True


def test_fork_bomb_is_contained(caps):
    if not (caps.get("uid") or caps.get("pid_namespace")):
        pytest.skip(f"no process containment here: {caps}")
    tag = uuid.uuid4().hex
    code = ("import os\nos.environ['BOMB'] = '1'\nwhile True:\n    try:\n        os.fork()\n"
            "    except OSError:\n        pass\n")
    t0 = time.monotonic()
    res = run_python(code, limits=Limits(cpu_s=2, wall_s=4, nproc=16), argv=[tag])
    assert time.monotonic() - t0 < 4 + 5
    assert res.status in ("timeout", "cpu_limit"), res
    # nothing of it is left: the PID namespace died with its first process (the kernel reaps its members
    # asynchronously, so wait for the process table to show it rather than sleeping a guessed while)
    deadline = time.monotonic() + 10
    while True:
        left = [ln for ln in os.popen("ps -eo uid=,args=").read().splitlines() if tag in ln]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not left, left


def test_memory_bomb_is_contained(caps):
    res = run_python("x = bytearray(2 * 1024 ** 3)\nprint('allocated')", limits=FAST)
    assert res.status == "memory_limit", res
    assert "allocated" not in res.stdout
    res = run_python("a = []\nwhile True:\n    a.append(' ' * 10 ** 7)", limits=FAST)
    assert res.status == "memory_limit", res


def test_infinite_loop_hits_the_cpu_limit(caps):
    """Stopped by its CPU time, not the wall clock: the wall limit is far off so that a loaded machine (where one
    CPU second takes many wall seconds) cannot end it first, and the CPU time it was allowed to burn is measured
    (the sandbox's processes are this process's waited-for children) rather than guessed from wall time."""
    import resource

    def children_cpu():
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime

    before = children_cpu()
    res = run_python("while True:\n    pass", limits=Limits(cpu_s=1, wall_s=120))
    used = children_cpu() - before
    assert res.status == "cpu_limit", res
    # RLIMIT_CPU: SIGXCPU at the soft limit (1 s), SIGKILL at the hard one (2 s); a little more for the
    # interpreter's start and the sandbox's boot
    assert 1 <= used < 3, used


def test_sleeping_program_hits_the_wall_clock(caps):
    t0 = time.monotonic()
    res = run_python("import time\ntime.sleep(60)", limits=Limits(cpu_s=5, wall_s=1.5))
    assert res.status == "timeout", res
    assert time.monotonic() - t0 < 6


def test_network_connection_is_refused(caps):
    if not (caps.get("no_network") or caps.get("landlock_net")):
        pytest.skip(f"no network isolation here: {caps}")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []
    done = threading.Event()

    def serve():
        while not done.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn)
            except OSError:
                pass

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    code = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "s.sendall(b'leak')\nprint('connected')")
    res = run_python(code, limits=FAST)
    done.set()
    th.join()
    server.close()
    assert res.status == "runtime_error", res
    assert "connected" not in res.stdout
    assert ("PermissionError" in res.stderr or "unreachable" in res.stderr or "OSError" in res.stderr), res.stderr
    assert accepted == []


def test_writes_outside_the_temporary_directory_are_refused(caps, tmp_path):
    if not (caps.get("landlock") or caps.get("uid")):
        pytest.skip(f"no filesystem containment here: {caps}")
    targets = [tmp_path / "escape.txt", f"/tmp/distill-escape-{uuid.uuid4().hex}.txt"]
    code = ("import os, sys\nopen('inside.txt', 'w').write('ok')\nprint(open('inside.txt').read())\n"
            "fails = 0\nfor p in sys.argv[1:]:\n    try:\n        open(p, 'w').write('escaped')\n"
            "    except OSError as e:\n        fails += 1\n        print(type(e).__name__)\n"
            "sys.exit(0 if fails == len(sys.argv) - 1 else 3)")
    if not caps.get("landlock"):
        targets = targets[:1]  # /tmp is world-writable: only Landlock stops that one
    res = run_python(code, limits=FAST, argv=[str(t) for t in targets])
    assert res.status == "ok", res
    assert res.stdout.splitlines()[0] == "ok"  # its own directory is writable
    for t in targets:
        assert not os.path.exists(t)


def test_file_size_limit(caps):
    res = run_python("open('big', 'wb').write(b'x' * (64 * 1024 * 1024))", limits=Limits(file_mb=1, wall_s=5))
    assert res.status in ("file_limit", "runtime_error"), res
    assert "File too large" in res.stderr or res.status == "file_limit"


# ---------------------------------------------------------------- code answers

STDIO_TESTS = normalise_tests({"inputs": ["1 2\n", "10 -3\n"], "outputs": ["3\n", "7\n"]})
CALL_TESTS = normalise_tests(json.dumps({"fn_name": "add", "inputs": [[1, 2], [10, -3]], "outputs": [3, 7]}))


def _resp(code: str) -> str:
    return f"<think>\nI read two numbers.\n</think>\n\nHere is the program:\n\n```python\n{code}\n```\n"


def test_extract_the_final_code_block():
    text = "```python\nprint(1)\n```\nthen better:\n```py\nprint(2)\n```\n"
    assert extract_code(text) == "print(2)\n"
    assert extract_code("```python\nprint(1)\n") is None  # cut off inside the block
    assert extract_code("no code here") is None


def test_code_answers_are_judged_on_their_tests(caps):
    good = "a, b = map(int, input().split())\nprint(a + b)"
    items = [
        (_resp(good), STDIO_TESTS, "stop", True, "code"),
        (_resp("a, b = map(int, input().split())\nprint(a - b)"), STDIO_TESTS, "stop", True, "code"),
        (_resp("def add(a, b):\n    return a + b"), CALL_TESTS, "stop", True, "code"),
        (_resp("class Solution:\n    def add(self, a, b):\n        return a + b"), CALL_TESTS, "stop", True, "code"),
        (_resp("def add(a, b):\n    return a * b"), CALL_TESTS, "stop", True, "code"),
        (_resp("while True:\n    pass"), STDIO_TESTS, "stop", True, "code"),
        ("<think>\nhmm\n</think>\n\nNo code today.", STDIO_TESTS, "stop", True, "code"),
    ]
    from distill.verify.sandbox import Limits as L

    # the wall limit far above the CPU one: on a loaded machine the loop must still be stopped by its CPU time
    got = judge_many(items, workers=2, code_limits=L(cpu_s=1, wall_s=60))
    assert [(v.reason, v.detail) for v in got] == [
        ("correct", "tests 2/2"), ("incorrect", "wrong_answer 0/2"), ("correct", "tests 2/2"),
        ("correct", "tests 2/2"), ("incorrect", "wrong_answer 0/2"), ("incorrect", "cpu_limit"),
        ("no_answer", None)]


def test_program_never_sees_expected_outputs(caps):
    spy = ("import os\nprint(sorted(os.listdir('.')))\n"
           "def add(a, b):\n    return 7")
    outcome, detail = run_tests(spy, CALL_TESTS, FAST)
    assert outcome == "incorrect"  # it can only guess: inputs.json is there, no outputs file
    res = run_python(spy + "\nimport json\nprint(open('inputs.json').read())",
                     files={"inputs.json": json.dumps([[1, 2]])}, limits=FAST)
    assert "outputs" not in res.stdout


def test_judge_single_code_trace(caps):
    v = judge(_resp("print(sum(map(int, input().split())))"), STDIO_TESTS, "stop", answer_format="code")
    assert v.correct and v.detail == "tests 2/2"
