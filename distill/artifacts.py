"""Stage artifacts: atomic commits, fingerprint markers, and Parquet helpers shared by every stage.

A stage writes into a hidden temporary directory beside its final one and renames it into place only when
it finished, with a `_DONE.json` marker holding the fingerprint of its config and inputs. A later run whose
fingerprint matches skips the stage; a crash mid-stage leaves no half-written artifact behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from distill import canonical

MARKER = "_DONE.json"
CODE_VERSION = "1"  # bump when a stage's output changes for the same config, to invalidate old markers


def fingerprint(*parts: Any) -> str:
    return canonical.digest([CODE_VERSION, *parts])


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or half-written (readers of a run in progress)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def marker(stage_dir: Path) -> dict | None:
    try:
        return json.loads((stage_dir / MARKER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_done(stage_dir: Path, fp: str) -> bool:
    m = marker(stage_dir)
    return m is not None and m.get("fingerprint") == fp


def commit_stage(stage_dir: Path, fp: str, build: Callable[[Path], dict | None]) -> dict:
    """Run `build(tmp_dir)` and atomically publish tmp_dir as stage_dir with its marker.

    `build` returns the stage's stats (saved in the marker). Returns the marker."""
    stage_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = stage_dir.parent / f".{stage_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    t0 = time.time()
    try:
        stats = build(tmp) or {}
        m = {"fingerprint": fp, "stats": stats, "seconds": round(time.time() - t0, 2), "finished": time.time()}
        (tmp / MARKER).write_text(json.dumps(m, indent=2, default=str))
        if stage_dir.exists():
            old = stage_dir.parent / f".{stage_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(stage_dir, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, stage_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return m


def read_table(stage_dir: Path, name: str | None = None) -> pa.Table:
    """One Parquet file, or every part file of a stage directory, as one table."""
    path = stage_dir / name if name else stage_dir
    if path.is_file():
        return pq.read_table(path)
    files = sorted(p for p in path.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet files in {path}")
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


def write_table_atomic(table: pa.Table, path: str | Path) -> None:
    """Write Parquet or JSONL (by suffix) to a temporary file, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        if path.suffix == ".parquet":
            pq.write_table(table, tmp)
        else:
            with open(tmp, "w") as f:
                for row in table.to_pylist():
                    f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
