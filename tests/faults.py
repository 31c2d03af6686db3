"""Faults the tests inject into production code through its public hooks (never built into the code itself)."""

from __future__ import annotations

import os
from pathlib import Path

from transformers import TrainerCallback


class KillOnce(TrainerCallback):
    """A Ray Train worker of rank `rank` dies once (os._exit), at `step`, to prove the resume path loses nothing.
    `marker` records the kill, so the restarted worker does not die again."""

    def __init__(self, step: int, marker: Path, rank: int = 1):
        self.step, self.marker, self.rank = step, Path(marker), rank

    def on_step_end(self, args, state, control, **kw):
        import ray.train

        if state.global_step == self.step and ray.train.get_context().get_world_rank() == self.rank \
                and not self.marker.exists():
            self.marker.write_text(str(state.global_step))
            os._exit(1)


class SigkillAt(TrainerCallback):
    """The training process is SIGKILLed (no cleanup, no atexit, as an OOM kill or a lost node) at the end of optimizer
    step `step`: the checkpoints on disk are all a re-run has."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        import signal

        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class DriverStops(Exception):
    """The driver stopped mid-stage (what `StopAfterShards` raises)."""


class StopAfterShards:
    """An `on_shard` hook: the driver stops (raises DriverStops out of the shard loop) once `n` shards are
    committed, as a killed driver would leave them; `seen` records each committed shard's id, `infos` what the
    backend said about it."""

    def __init__(self, n: int):
        self.n, self.seen, self.infos = n, [], []

    def __call__(self, info: dict) -> None:
        self.seen.append(info["shard"])
        self.infos.append(info)
        if len(self.seen) >= self.n:
            raise DriverStops(f"stopped after {self.n} shards")


class StallOnce:
    """An engine step hook (`VLLMBackend(step_hook=...)`): the first engine to reach step `step` stalls there for
    an hour (its worker stays alive and answers, its shards never finish), as a wedged engine does. `marker`
    records the stall (with the worker's pid), so the replacement engine runs normally."""

    def __init__(self, marker: Path, step: int = 2):
        self.marker, self.step = Path(marker), step

    def __call__(self, steps: int) -> None:
        import time

        if steps == self.step and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            time.sleep(3600)
