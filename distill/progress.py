"""Live progress inside a long stage (generate, verify, train, eval): a terminal bar, and counts a cluster job
publishes while it runs.

`Bar(stage, total, unit)` draws a tqdm bar on stderr (off with DISTILL_PROGRESS=0) and, when the run directory is
known, rewrites `<run dir>/.progress/<stage>.json` (atomically, at most once a second, and on close):
{"stage", "done", "total", "unit", "counts", "updated"} (and "phase", in a stage of several passes). The runner
names the run directory (`configure`, which also sets DISTILL_RUN_DIR so that Ray Train workers and other
processes it starts write to the same place).
`distill.service.status.StatusReporter` polls the run directory and folds these files into `status.json` and its
`[distill status]` log line: that line is how the counts reach `distill jobs status` and
`Client.jobs.retrieve` while a job runs on a Ray cluster or Kubernetes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ENV = "DISTILL_RUN_DIR"
STAGE_ENV = "DISTILL_STAGE"  # the stage the runner is building: the default name of a bar
DIR = ".progress"


def configure(run_dir: str | Path | None) -> None:
    if run_dir is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = str(Path(run_dir).resolve())


def set_stage(stage: str | None) -> None:
    if stage is None:
        os.environ.pop(STAGE_ENV, None)
    else:
        os.environ[STAGE_ENV] = stage


def current_stage(default: str) -> str:
    return os.environ.get(STAGE_ENV) or default


def run_dir() -> Path | None:
    d = os.environ.get(ENV)
    return Path(d) if d else None


def file_for(root: Path, stage: str) -> Path:
    return root / DIR / (stage.replace("/", "--") + ".json")


def read_all(root: Path) -> dict[str, dict]:
    """stage -> its last progress record, for every stage that has written one under `root`."""
    from distill.artifacts import read_json

    recs = (read_json(f) for f in sorted((root / DIR).glob("*.json")))
    return {r["stage"]: r for r in recs if isinstance(r, dict) and "stage" in r}  # None: being replaced


class Bar:
    """Progress of one stage in `unit`s; `update(n, **counts)` adds n done and replaces the counts given."""

    def __init__(self, stage: str | None, total: int | None, unit: str, initial: int = 0, default: str = "stage",
                 phase: str | None = None):
        stage = stage or current_stage(default)
        self.stage, self.total, self.unit, self.phase = stage, total, unit, phase
        self.done = initial
        self.counts: dict[str, int | float] = {}
        self._written = 0.0
        self._root = run_dir()
        self._bar = None
        if os.environ.get("DISTILL_PROGRESS", "1") != "0":
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=f"{stage}: {phase}" if phase else stage, unit=unit,
                             file=sys.stderr,
                             dynamic_ncols=True)
        self._write(force=True)

    def update(self, n: int = 1, **counts) -> None:
        self.done += n
        self.counts.update(counts)
        if self._bar is not None:
            self._bar.update(n)
            if counts:
                self._bar.set_postfix(counts, refresh=False)
        self._write()

    def close(self) -> None:
        self._write(force=True)
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write(self, force: bool = False) -> None:
        if self._root is None or (not force and time.time() - self._written < 1.0):
            return
        self._written = time.time()
        rec = {"stage": self.stage, "done": self.done, "total": self.total, "unit": self.unit,
               "counts": self.counts, "updated": self._written}
        if self.phase:  # a stage with several passes (verify): which one `done`/`total` count
            rec["phase"] = self.phase
        path = file_for(self._root, self.stage)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
            tmp.write_text(json.dumps(rec))
            os.replace(tmp, path)
        except OSError:  # progress is best effort: a full or read-only disk must not fail the stage
            pass
