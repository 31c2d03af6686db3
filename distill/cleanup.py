"""Leftovers of killed runs, and the lock that makes removing them safe.

A stage is built in a hidden `.<stage>.tmp-<id>` directory and renamed into place when it finishes; a run killed
mid-stage (SIGKILL, OOM, a lost node) leaves that directory behind, and a replaced stage may leave a
`.<stage>.old-<id>`. Generate keeps its shards in `.generate-shards/<key>` until the stage finishes, so a killed
run resumes there; a shard set whose key no longer matches the spec (a changed teacher, sampling or prompts) is
never read again.

`run_lock` is held by every `distill run` for its whole length, so no live run shares a run directory; under it,
a re-run removes the temporary directories of killed runs (`remove_leftovers`). `distill clean RUN_DIR` also
removes the shard sets the run's current spec cannot reach, and says what it frees.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

LOCK_FILE = ".distill.lock"
SHARDS_DIR = ".generate-shards"
CURRENT_FILE = "CURRENT"  # in SHARDS_DIR: the key of the shard set the last run's spec generates into
_PATTERNS = (".*.tmp-*", ".*.old-*")
FILE_AGE_S = 60  # a temporary *file* younger than this may be a status/progress write in flight: left alone


class RunBusy(RuntimeError):
    """Another live `distill` process holds the run directory."""


@contextlib.contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Exclusive use of a run directory (an advisory lock on `<root>/.distill.lock`, released on exit or death)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(f"{root}: another distill process is using this run directory") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def leftovers(root: Path) -> list[Path]:
    """Temporary stage directories (and old temporary files) that killed runs left under `root`."""
    now = time.time()
    out = []
    for pattern in _PATTERNS:
        for p in [*root.glob(pattern), *root.glob(f"*/{pattern}")]:
            try:
                if p.is_dir() or now - p.lstat().st_mtime > FILE_AGE_S:
                    out.append(p)
            except FileNotFoundError:
                continue
    return sorted(set(out))


def note_current_shards(root: Path, key: str) -> None:
    """Record which shard set the run's current spec generates into (the runner calls this before generate)."""
    (root / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    (root / SHARDS_DIR / CURRENT_FILE).write_text(key)


def unreachable_shard_sets(root: Path) -> tuple[list[Path], str | None]:
    """Generate shard sets under `root` that the run's current spec would not resume from, and why none could be
    judged (None when they could)."""
    sets = sorted(p for p in (root / SHARDS_DIR).glob("*") if p.is_dir())
    if not sets:
        return [], None
    try:
        current = (root / SHARDS_DIR / CURRENT_FILE).read_text().strip()
    except OSError:  # a run directory from before the record was kept: cannot tell, so keep them all
        return [], f"kept {len(sets)} generate shard set(s): no record of which one the current spec uses"
    return [p for p in sets if p.name != current], None


def size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, n)).st_size
    return total


def remove(paths: list[Path]) -> list[tuple[Path, int]]:
    """Remove each path; (path, bytes freed) for each."""
    out = []
    for p in paths:
        n = size(p)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        out.append((p, n))
    return out


def remove_leftovers(root: Path) -> list[tuple[Path, int]]:
    """What a re-run removes (call under `run_lock`)."""
    return remove(leftovers(root))


def human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
