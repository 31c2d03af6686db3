"""Sandbox bootstrap: set up containment, then exec the untrusted program. Run by `distill.verify.sandbox`.

    python -I _sandbox_boot.py CONFIG_JSON

Stand-alone on purpose (stdlib and ctypes only, nothing from distill): it runs in a fresh single-threaded
interpreter, so namespaces can be unshared and no Python state of the caller leaks into the sandbox. Steps:

1. unshare a network namespace (only a loopback that is down: no connection anywhere) and a PID namespace
   (root: directly; otherwise inside a new user namespace, where the kernel allows it);
2. fork: the child is PID 1 of the new PID namespace and dies with the boot process (PR_SET_PDEATHSIG), and
   when PID 1 dies the kernel kills every process left in the namespace: a fork bomb, daemons that called
   setsid(), everything;
3. in the child: drop to an unprivileged uid of its own when root (so RLIMIT_NPROC applies: it does not to
   root), resource limits (CPU seconds, address space, file size, processes, open files, no core dumps),
   Landlock (writes only inside the temporary directory; reads only of the interpreter and system libraries;
   no TCP connect/bind where the kernel has Landlock ABI >= 4; no signals or abstract sockets outside),
   then exec the program.

What was applied is written as one JSON line to the report pipe (the parent reports it with every result); a layer the
kernel refuses is skipped and reported, never silently assumed.
"""

import ctypes
import json
import os
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SYS_LANDLOCK = (444, 445, 446)  # create_ruleset, add_rule, restrict_self (same on x86_64 and arm64)

FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_DIR_WRITE = sum(1 << i for i in range(4, 13))  # remove_dir .. make_sym
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX, SCOPE_SIGNAL = 1 << 0, 1 << 1

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def _err() -> str:
    return os.strerror(ctypes.get_errno())


def unshare(flags: int) -> bool:
    return libc.unshare(flags) == 0


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock(rw_dirs: list, ro_paths: list) -> dict:
    abi = libc.syscall(SYS_LANDLOCK[0], None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return {"landlock": False, "landlock_error": _err()}
    fs_file = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | (FS_TRUNCATE if abi >= 3 else 0) | \
        (FS_IOCTL_DEV if abi >= 5 else 0)
    fs_all = fs_file | FS_READ_DIR | FS_DIR_WRITE | (FS_REFER if abi >= 2 else 0)
    attr = _RulesetAttr(fs_all, (NET_BIND_TCP | NET_CONNECT_TCP) if abi >= 4 else 0,
                        (SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL) if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    fd = libc.syscall(SYS_LANDLOCK[0], ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        return {"landlock": False, "landlock_error": _err()}
    ro = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR

    def rule(path: str, access: int) -> None:
        try:
            pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return
        try:
            if not os.path.isdir(path):
                access &= fs_file
            pb = _PathBeneath(access, pfd)
            libc.syscall(SYS_LANDLOCK[1], ctypes.c_int(fd), ctypes.c_int(1), ctypes.byref(pb), ctypes.c_uint32(0))
        finally:
            os.close(pfd)

    for p in rw_dirs:
        rule(p, fs_all)
    for p in ro_paths:
        rule(p, ro)
    for p in ("/dev/null", "/dev/zero"):
        rule(p, FS_READ_FILE | FS_WRITE_FILE)
    for p in ("/dev/urandom", "/dev/random"):
        rule(p, FS_READ_FILE)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return {"landlock": False, "landlock_error": "no_new_privs: " + _err()}
    if libc.syscall(SYS_LANDLOCK[2], ctypes.c_int(fd), ctypes.c_uint32(0)) != 0:
        return {"landlock": False, "landlock_error": _err()}
    os.close(fd)
    return {"landlock": True, "landlock_abi": int(abi), "landlock_net": abi >= 4, "landlock_scope": abi >= 6}


def _count_procs(uid: int) -> int:
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def main() -> None:
    cfg = json.loads(sys.argv[1])
    info: dict = {}
    report = os.fdopen(int(cfg["report_fd"]), "w") if cfg.get("report_fd") is not None else None
    root = os.geteuid() == 0
    uid, gid = os.getuid(), os.getgid()
    ns = CLONE_NEWNET | CLONE_NEWPID
    if root:
        info["namespaces"] = unshare(ns) or (unshare(CLONE_NEWNET) and "net")
    elif unshare(CLONE_NEWUSER | ns):
        try:  # look like ourselves inside the user namespace
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"{uid} {uid} 1")
            _write("/proc/self/gid_map", f"{gid} {gid} 1")
        except OSError:
            pass
        info["namespaces"] = "user+net+pid"
    else:
        info["namespaces"] = False
        info["namespaces_error"] = _err()
    if info["namespaces"] is True:
        info["namespaces"] = "net+pid"
    info["no_network"] = bool(info["namespaces"])
    info["pid_namespace"] = info["namespaces"] in ("net+pid", "user+net+pid")

    pid = os.fork()
    if pid:  # the boot process: wait for PID 1 of the namespace and pass its status on
        if report:
            report.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            os._exit(128 + os.WTERMSIG(status))
        os._exit(os.WEXITSTATUS(status))

    # PID 1 of the sandbox (or a plain child when no namespace could be made)
    work = cfg["dir"]
    os.chdir(work)
    if root and cfg.get("uid"):
        sandbox_uid = int(cfg["uid"])
        os.setgroups([])
        os.setgid(sandbox_uid)
        os.setuid(sandbox_uid)
        info["uid"] = sandbox_uid
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after setuid: a change of uid clears it
    info.update(landlock([work], cfg.get("read_paths", [])))
    lim = cfg["limits"]
    nproc = int(lim["nproc"])
    if not (root and cfg.get("uid")):
        nproc += _count_procs(os.getuid())  # RLIMIT_NPROC counts all of this uid's processes
    for name, value in (("RLIMIT_CPU", int(lim["cpu_s"])), ("RLIMIT_AS", int(lim["memory_mb"]) * 2**20),
                        ("RLIMIT_FSIZE", int(lim["file_mb"]) * 2**20), ("RLIMIT_NPROC", nproc),
                        ("RLIMIT_NOFILE", int(lim["open_files"])), ("RLIMIT_CORE", 0)):
        # CPU: soft limit sends SIGXCPU (the program is reported as over its CPU time), hard one a second later
        hard = value + 1 if name == "RLIMIT_CPU" else value
        resource.setrlimit(getattr(resource, name), (value, hard))
    info["rlimits"] = True
    if report:
        report.write(json.dumps(info) + "\n")
        report.close()
    env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
           "PYTHONDONTWRITEBYTECODE": "1", "DISTILL_SANDBOX": cfg.get("marker", "1")}
    argv = cfg["argv"]
    try:
        os.execve(argv[0], argv, env)
    except OSError as e:
        sys.stderr.write(f"distill-sandbox: exec failed: {e}\n")
        os._exit(125)


if __name__ == "__main__":
    main()
