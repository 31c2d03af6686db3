"""Progress of a running spec, for whoever watches a job: `<output_dir>/status.json` and one log line per change.

The runner leaves enough on disk to tell where it is without being asked: a stage being built is a hidden
`.<stage>.tmp-*` directory, a finished one has its `_DONE.json` marker (fingerprint, stats, seconds, finished).
`StatusReporter` polls that from a thread, so it needs no hook in the runner and shows the same thing whether the
run is local or a Ray job. Markers older than this run are reported as `cached`: up to date and skipped, or (until
the run reaches them) about to be redone.

Each change is written to `status.json` (atomically) and printed as `[distill status] {json}` - the line a client
reads back from the job's logs (`distill.Client.jobs.retrieve`), so progress travels wherever logs do.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, Field

from distill import artifacts, progress
from distill.pipeline import graph
from distill.pipeline.stages import STAGES

STATUS_FILE = "status.json"
LOG_PREFIX = "[distill status] "
State = Literal["RUNNING", "SUCCEEDED", "FAILED", "STOPPED"]
# Display order; train/eval/package repeat per student.
# (count name, stage, stats key): the funnel people ask about while a run is going.
_COUNTS = (("problems", "prompts", "problems"), ("traces", "generate", "traces"), ("correct", "verify", "correct"),
           ("kept", "verify", "kept"), ("sft_examples", "sft", "examples"))


class StageStatus(BaseModel):
    state: Literal["running", "done", "cached", "failed", "stopped"]
    seconds: float | None = None
    finished: float | None = None
    stats: dict = Field(default_factory=dict)
    # while running: {"done", "total", "unit", "counts"[, "phase"]} from the stage's progress bar (distill.progress)
    progress: dict | None = None


class Progress(BaseModel):
    """What the log line carries: where the run is and its counts (no per-stage stats, to keep logs small)."""

    state: State
    stage: str | None = None
    stages: dict[str, str] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict)
    # running stages' progress: {stage: {"done", "total", "unit", "counts"}}
    progress: dict[str, dict] = Field(default_factory=dict)
    error: str | None = None
    output_dir: str | None = None


class RunStatus(BaseModel):
    """The whole of `status.json`."""

    state: State = "RUNNING"
    stage: str | None = None
    spec: str
    job_id: str | None = None
    output_dir: str
    started: float
    updated: float
    stages: dict[str, StageStatus] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict)
    error: str | None = None
    packages: list[str] = Field(default_factory=list)

    def progress(self) -> Progress:
        return Progress(state=self.state, stage=self.stage, stages={k: v.state for k, v in self.stages.items()},
                        counts=self.counts, error=self.error, output_dir=self.output_dir,
                        progress={k: v.progress for k, v in self.stages.items() if v.progress})


def scan(root: Path, since: float) -> dict[str, StageStatus]:
    """Every stage under `root`: finished (markers), and running (temporary build directories made since `since`)."""
    stages: dict[str, StageStatus] = {}
    for path in [*root.glob(f"*/{artifacts.MARKER}"), *root.glob(f"*/*/{artifacts.MARKER}")]:
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue  # scratch (e.g. the generate stage's resumable shards), not a stage
        m = artifacts.marker(path.parent)
        if m is not None:
            state = "done" if m.get("finished", 0) >= since else "cached"
            stages[path.parent.relative_to(root).as_posix()] = StageStatus(
                state=state, seconds=m.get("seconds"), finished=m.get("finished"), stats=m.get("stats") or {})
    for tmp in [*root.glob(".*.tmp-*"), *root.glob("*/.*.tmp-*")]:
        # A killed run leaves its temporary directory behind: only ones made by this run mean "running".
        if tmp.is_dir() and tmp.stat().st_mtime >= since - 1:
            key = (tmp.parent.relative_to(root) / tmp.name[1:].rsplit(".tmp-", 1)[0]).as_posix()
            stages[key] = StageStatus(state="running")
    for key, rec in progress.read_all(root).items():
        if key in stages and stages[key].state == "running" and rec.get("updated", 0) >= since - 1:
            stages[key].progress = {k: rec[k] for k in ("done", "total", "unit", "counts", "phase") if k in rec}
    return dict(sorted(stages.items(), key=lambda kv: graph.rank(STAGES, kv[0])))


def counts(stages: dict[str, StageStatus]) -> dict[str, int]:
    out = {name: stages[stage].stats[key] for name, stage, key in _COUNTS
           if stage in stages and key in stages[stage].stats}
    for prefix, name in (("train/", "students_trained"), ("eval/", "models_evaluated"),
                         ("package/", "students_packaged")):
        out[name] = sum(1 for k, v in stages.items() if k.startswith(prefix) and v.state in ("done", "cached"))
    return out


def current_stage(stages: dict[str, StageStatus]) -> str | None:
    active = [k for k, v in stages.items() if v.state in ("running", "failed", "stopped")]
    if active:
        return active[-1]
    done = [(v.finished or 0, k) for k, v in stages.items()]
    return max(done)[1] if done else None


def _change_key(s: RunStatus) -> str:
    """What must change for a new status line: anything but the time, with progress in whole percent (and its
    counts left out), so a long stage prints ~100 lines, not one per poll."""
    d = s.model_dump(exclude={"updated"})
    for st in d["stages"].values():
        p = st.get("progress")
        if p:
            st["progress"] = [p.get("phase"), int(100 * p["done"] / p["total"]) if p.get("total") else p["done"]]
    return json.dumps(d, sort_keys=True, default=str)


def parse_log(logs: str) -> Progress | None:
    """The last progress line in a job's logs, or None when the job printed none (yet)."""
    for line in reversed(logs.splitlines()):
        at = line.find(LOG_PREFIX)
        if at >= 0:
            try:
                return Progress.model_validate_json(line[at + len(LOG_PREFIX):])
            except ValueError:
                continue  # a line cut by a crash; an earlier one is still good
    return None


def read(output_dir: str | Path) -> RunStatus | None:
    try:
        return RunStatus.model_validate_json((Path(output_dir) / STATUS_FILE).read_text())
    except FileNotFoundError:
        return None


class StatusReporter:
    """Polls a run directory every `interval` seconds and publishes each change; `finish` publishes the end."""

    def __init__(self, output_dir: str | Path, spec_name: str, job_id: str | None = None, interval: float = 2.0,
                 mirror: str | None = None, echo: Callable[[str], None] = lambda s: print(s, flush=True)):
        self.root = Path(output_dir)
        self.interval = interval
        self.mirror = mirror  # a URL (object store) that gets a copy of status.json on every change
        self.echo = echo
        now = time.time()
        self.status = RunStatus(spec=spec_name, job_id=job_id, output_dir=str(self.root), started=now, updated=now)
        self._last: str | None = None
        self._running: str | None = None  # the last stage seen running
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="distill-status", daemon=True)

    def start(self) -> StatusReporter:
        self.publish()
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.publish()
            except Exception as e:  # progress is best effort: never let it take the run down
                self.echo(f"[distill status] warning: {type(e).__name__}: {e}")

    def publish(self, **final) -> RunStatus:
        with self._lock:
            stages = scan(self.root, self.status.started) if self.root.is_dir() else {}
            running = [k for k, v in stages.items() if v.state == "running"]
            if running:
                self._running = running[-1]
            if final.get("state") in ("FAILED", "STOPPED"):
                end = final["state"].lower()
                # The runner removes a stage's temporary directory on the way out, or is killed before it can:
                # either way the stage it was building ended with the run.
                if self._running and stages.get(self._running, StageStatus(state="cached")).state == "cached":
                    stages[self._running] = StageStatus(state=end)
                stages = {k: StageStatus(state=end) if v.state == "running" else v for k, v in stages.items()}
            s = self.status.model_copy(update={"stages": stages, "counts": counts(stages),
                                               "stage": current_stage(stages), **final})
            key = _change_key(s)
            if key != self._last:
                s.updated = time.time()
                self._write(s)
                self.echo(LOG_PREFIX + s.progress().model_dump_json())
                self._last = key
            self.status = s
            return s

    def finish(self, state: State, error: str | None = None, packages: list[str] | None = None) -> RunStatus:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval + 5)
        return self.publish(state=state, error=error, packages=list(packages or []))

    def _write(self, s: RunStatus) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        text = s.model_dump_json(indent=2)
        tmp = self.root / f".{STATUS_FILE}.tmp-{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, self.root / STATUS_FILE)
        if self.mirror:
            try:
                import fsspec

                with fsspec.open(f"{self.mirror.rstrip('/')}/{STATUS_FILE}", "w") as f:
                    f.write(text)
            except Exception as e:  # an unreachable bucket must not stop the run; the local file is still there
                self.echo(f"[distill status] warning: could not mirror status to {self.mirror}: {e}")
