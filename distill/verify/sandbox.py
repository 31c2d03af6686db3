"""Run an untrusted Python program in a sandboxed subprocess and report what happened.

`run_python(code, stdin, limits)` writes the program into a fresh temporary directory and runs it through
`_sandbox_boot.py`, which applies, in a new process, before the program starts:

| containment            | how                                                                     | needs            |
|------------------------|-------------------------------------------------------------------------|------------------|
| no network             | a new network namespace (no interface up); Landlock denies TCP too      | root, or user namespaces; Landlock ABI >= 4 |
| every process killed   | a new PID namespace whose PID 1 dies with the boot process (PDEATHSIG), | root, or user namespaces |
|                        | and the parent kills the boot's process group at the wall-clock limit   |                  |
| fork bombs             | RLIMIT_NPROC, under a uid of its own when root (root ignores NPROC)     | -                |
| CPU, memory, file size | RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NOFILE, no core dumps       | -                |
| writes only in its dir | Landlock: write rights only beneath the temporary directory, reads only | Landlock (Linux >= 5.13) |
|                        | of the interpreter and system libraries; a uid of its own when root     |                  |
| wall-clock limit       | the parent kills the process group (and so the namespace) at `wall_s`   | -                |

Each result says which layers were applied (`isolation`); `capabilities()` probes them once. Where a kernel
refuses a layer (no user namespaces, no Landlock) the run goes on with the others and says so: the tests in
tests/test_sandbox.py skip, with the reason, a containment check the machine cannot provide.

Running as root, the program runs under an unused uid (`SANDBOX_UID_BASE` + a per-run offset) with
a world-readable interpreter (`/usr/bin/python3` when the current one sits under an unreadable home).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

BOOT = Path(__file__).with_name("_sandbox_boot.py")
SANDBOX_UID_BASE = 200_000
OUTPUT_LIMIT = 1 << 20  # bytes of stdout / stderr kept


@dataclass(frozen=True)
class Limits:
    cpu_s: int = 5  # CPU seconds per process (RLIMIT_CPU)
    wall_s: float = 10.0  # wall-clock limit for the whole run
    memory_mb: int = 512  # address space per process (RLIMIT_AS)
    file_mb: int = 16  # largest file it may write (RLIMIT_FSIZE)
    nproc: int = 16  # processes (RLIMIT_NPROC)
    open_files: int = 64  # RLIMIT_NOFILE


@dataclass
class RunResult:
    status: str  # ok | runtime_error | timeout | cpu_limit | memory_limit | file_limit | sandbox_error
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    isolation: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _world_executable(path: str) -> bool:
    """Whether any user may run `path` (every directory on the way traversable, the file executable)."""
    real = os.path.realpath(path)
    parts = Path(real).parents
    try:
        if not os.stat(real).st_mode & stat.S_IXOTH:
            return False
        return all(os.stat(p).st_mode & stat.S_IXOTH for p in parts)
    except OSError:
        return False


def _interpreter(root: bool) -> str:
    """The Python to run programs with: ours, unless a sandbox uid could not reach it."""
    if not root or _world_executable(sys.executable):
        return sys.executable
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3") or ""):
        if cand and _world_executable(cand):
            return cand
    return ""  # none: run as root (reported; NPROC does not bind root)


def _read_paths(python: str) -> list[str]:
    real = os.path.realpath(python)
    paths = {"/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives",
             os.path.dirname(real), os.path.dirname(os.path.dirname(real))}
    if python == sys.executable:
        paths |= {sys.prefix, sys.base_prefix, sys.exec_prefix}
    return sorted(p for p in paths if p and os.path.exists(p))


_UID_LOCK = threading.Lock()
_UID_NEXT = [os.getpid() % 50_000]


def _next_uid() -> int:
    with _UID_LOCK:
        _UID_NEXT[0] = (_UID_NEXT[0] + 1) % 50_000
        return SANDBOX_UID_BASE + _UID_NEXT[0]


def _status(returncode: int, stderr: str, timed_out: bool) -> str:
    if timed_out:
        return "timeout"
    if returncode == 0:
        return "ok"
    if returncode == 125 and "distill-sandbox:" in stderr:
        return "sandbox_error"
    if returncode in (128 + signal.SIGXCPU, 128 + signal.SIGKILL) and "MemoryError" not in stderr:
        return "cpu_limit"
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return "memory_limit"
    if returncode == 128 + signal.SIGXFSZ or "File too large" in stderr:
        return "file_limit"
    return "runtime_error"


def run_python(code: str, stdin: str = "", limits: Limits | None = None, files: dict[str, str] | None = None,
               argv: list[str] | None = None) -> RunResult:
    """Run `code` as `main.py` in a fresh temporary directory under the sandbox; `files` are written beside it.
    Never raises for anything the program does."""
    limits = limits or Limits()
    root = os.geteuid() == 0
    python = _interpreter(root)
    uid = _next_uid() if root and python else None
    marker = uuid.uuid4().hex
    work = tempfile.mkdtemp(prefix="distill-sandbox-")
    t0 = time.monotonic()
    try:
        Path(work, "main.py").write_text(code)
        for name, text in (files or {}).items():
            Path(work, name).write_text(text)
        if uid is not None:
            for p in [work, *(os.path.join(work, n) for n in os.listdir(work))]:
                os.chown(p, uid, uid)
        os.chmod(work, 0o700)
        r, w = os.pipe()  # the boot writes what containment it applied to `w`
        cfg = {"dir": work, "uid": uid, "limits": asdict(limits), "marker": marker, "report_fd": w,
               "read_paths": _read_paths(python or sys.executable),
               # -I -S: no environment variables, no site-packages: the program gets the standard library
               "argv": [python or sys.executable, "-I", "-S", os.path.join(work, "main.py"), *(argv or [])]}
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", str(BOOT), json.dumps(cfg)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, cwd=work, start_new_session=True, pass_fds=(w,),
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
        finally:
            os.close(w)
        timed_out = False
        try:
            out, err = proc.communicate(stdin.encode(), timeout=limits.wall_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            out, err = proc.communicate()
        _kill_group(proc.pid)  # anything the program left behind in its process group
        with os.fdopen(r, "r") as f:
            line = f.readline()
        try:
            isolation = json.loads(line) if line else {}
        except json.JSONDecodeError:
            isolation = {}
        isolation["python"] = python or sys.executable
        stderr = err[:OUTPUT_LIMIT].decode(errors="replace")
        return RunResult(_status(proc.returncode, stderr, timed_out), proc.returncode,
                         out[:OUTPUT_LIMIT].decode(errors="replace"), stderr, round(time.monotonic() - t0, 3),
                         isolation)
    except OSError as e:
        return RunResult("sandbox_error", None, "", f"distill-sandbox: {e}", round(time.monotonic() - t0, 3))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


_CAPS: dict | None = None


def capabilities() -> dict:
    """Which containment layers this machine provides (probed once with a trivial program)."""
    global _CAPS
    if _CAPS is None:
        res = run_python("print('ok')", limits=Limits(cpu_s=5, wall_s=20))
        _CAPS = {**res.isolation, "works": res.status == "ok" and res.stdout.strip() == "ok",
                 "probe_stderr": res.stderr[-500:]}
    return _CAPS
