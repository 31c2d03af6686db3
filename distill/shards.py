"""Shard machinery shared by the stages that generate with a teacher backend (generate, eval): prompts are cut
into shards, handed to a backend a bounded number at a time, and each finished shard is committed atomically as
`shard-NNNNNN.parquet`, so a re-run generates only the missing ones (see `distill/pipeline/generate.py`)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from distill import artifacts, progress, schemas
from distill.streaming import iter_batches

SHARD_GLOB = "shard-*.parquet"
PROGRESS_FILE = "_progress.json"
LAYOUT_FILE = "_layout.json"

# --------------------------------------------------------------------------------------------------------------
# shards


def iter_shards(prompts: pa.Table | Path, shard_size: int) -> Iterator[tuple[int, list[dict]]]:
    """(shard_id, records) for consecutive slices of shard_size prompts; a Parquet path is streamed."""
    if isinstance(prompts, pa.Table):
        for sid, lo in enumerate(range(0, prompts.num_rows, shard_size)):
            yield sid, prompts.slice(lo, shard_size).to_pylist()
        return
    for sid, batch in enumerate(iter_batches(prompts, rows=shard_size)):  # no pre-buffering: see streaming.py
        yield sid, batch.to_pylist()


def shard_path(shard_dir: Path, shard_id: int) -> Path:
    return shard_dir / f"shard-{shard_id:06d}.parquet"


def shard_layout(shard_dir: Path, shard_size: int) -> int:
    """The shard size of the set in shard_dir: the one it was started with once a shard is committed (the shard
    key leaves batch and shard sizes out, so a re-run with other sizes resumes the same set), else `shard_size`,
    recorded in LAYOUT_FILE before any shard is written."""
    layout = shard_dir / LAYOUT_FILE
    recorded = (artifacts.read_json(layout) or {}).get("shard_size")
    if recorded and any(shard_dir.glob(SHARD_GLOB)):
        return int(recorded)
    tmp = shard_dir / f".{LAYOUT_FILE}.tmp"
    tmp.write_text(json.dumps({"shard_size": shard_size}))
    os.replace(tmp, layout)
    return shard_size


def _write_shard(rows: list[dict], path: Path) -> pa.Table:
    table = schemas.conform(pa.Table.from_pylist(rows), schemas.TRACE_FIELDS)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)  # atomic: a shard is on disk whole or not at all
    finally:
        tmp.unlink(missing_ok=True)
    return table


class Tally:
    """Running stats over shards, without keeping any trace in memory."""

    def __init__(self):
        self.traces = self.errors = self.prompt_tokens = self.completion_tokens = 0
        self.samples = self.verified = self.problems = 0
        self.finish: dict[str, int] = {}
        self.error_reasons: dict[str, int] = {}
        self.verified_problems = 0

    def add(self, table: pa.Table, problems: int) -> None:
        d = table.select([c for c in ("finish_reason", "prompt_tokens", "completion_tokens", "error", "verified",
                                      "problem_id") if c in table.column_names]).to_pylist()
        self.problems += problems
        per_problem: dict[Any, int] = {}
        for r in d:
            self.samples += 1
            self.prompt_tokens += r.get("prompt_tokens") or 0
            self.completion_tokens += r.get("completion_tokens") or 0
            fr = r.get("finish_reason") or "stop"
            self.finish[fr] = self.finish.get(fr, 0) + 1
            if r.get("error"):
                self.errors += 1
                reason = str(r["error"]).split(":")[0]
                self.error_reasons[reason] = self.error_reasons.get(reason, 0) + 1
            else:
                self.traces += 1
            if r.get("verified"):
                self.verified += 1
                per_problem[r.get("problem_id")] = 1
        self.verified_problems += len(per_problem)


def run_shards(prompts: pa.Table | Path, shard_dir: Path, backend, params: dict, shard_size: int,
               max_attempts: int = 3, on_shard: Callable[[dict], None] | None = None, stage: str | None = None) -> dict:
    """Generate every missing shard of `prompts` into shard_dir. Returns stats (this call's and the total)."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    for stale in shard_dir.glob(".shard-*.tmp-*"):  # a write the last driver did not finish
        stale.unlink(missing_ok=True)
    shard_size = shard_layout(shard_dir, shard_size)
    total_rows = prompts.num_rows if isinstance(prompts, pa.Table) else pq.ParquetFile(prompts).metadata.num_rows
    n_shards = -(-total_rows // shard_size)
    done_before = {int(p.stem.split("-")[1]) for p in shard_dir.glob(SHARD_GLOB)}
    bar = progress.Bar(stage, n_shards, "shard", initial=len(done_before & set(range(n_shards))), default="generate")
    tally = Tally()
    t_start = t_call = time.time()
    # Wall time of earlier, interrupted calls on these shards (up to each one's last committed shard): the ledger
    # charges the whole generation, not just the call that finished it.
    prior_wall = (artifacts.read_json(shard_dir / PROGRESS_FILE) or {}).get("wall_total_s", 0.0) if done_before else 0.0
    attempts: dict[int, int] = {}
    pending: dict[cf.Future, tuple[int, list[dict]]] = {}
    todo = ((sid, recs) for sid, recs in iter_shards(prompts, shard_size) if sid not in done_before)
    retry: list[tuple[int, list[dict]]] = []
    started = False
    written = 0
    t_done = None  # when the last shard was committed (the backend's shutdown is not generation time)

    def progress_file() -> None:
        state = {"stage": bar.stage, "shards_total": n_shards, "shards_done": len(done_before) + written,
                 "traces": tally.traces, "errors": tally.errors, "elapsed_s": round(time.time() - t_start, 1),
                 "wall_total_s": round(prior_wall + time.time() - t_call, 2), "updated": time.time()}
        tmp = shard_dir / f".{PROGRESS_FILE}.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, shard_dir / PROGRESS_FILE)

    try:
        exhausted = False
        while True:
            while not exhausted or retry:
                if started and len(pending) >= backend.capacity():
                    break
                if retry:
                    sid, recs = retry.pop()
                else:
                    nxt = next(todo, None)
                    if nxt is None:
                        exhausted = True
                        continue
                    sid, recs = nxt
                if not started:
                    backend.start()
                    started = True
                    t_start = time.time()
                attempts[sid] = attempts.get(sid, 0) + 1
                pending[backend.submit(sid, recs, params)] = (sid, recs)
            if not pending:
                break
            finished, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                sid, recs = pending.pop(fut)
                backend.done(fut)
                try:
                    result = fut.result()
                except Exception as e:  # noqa: BLE001 - a dead worker: re-run the shard on a fresh one
                    if attempts[sid] < max_attempts and backend.recover(fut, e):
                        print(f"[generate] shard {sid}: {type(e).__name__}, retrying "
                              f"({attempts[sid]}/{max_attempts})", file=sys.stderr, flush=True)
                        retry.append((sid, recs))
                        continue
                    raise
                table = _write_shard(result["rows"], shard_path(shard_dir, sid))
                tally.add(table, len(recs))
                written += 1
                progress_file()
                bar.update(1, traces=tally.traces, errors=tally.errors)
                if on_shard is not None:
                    on_shard({"shard": sid, "rows": table.num_rows, **{k: v for k, v in result.items()
                                                                       if k != "rows"}})
        t_done = time.time()
    finally:
        bar.close()
        if started:
            backend.close()
    return {"shards": n_shards, "shards_resumed": len(done_before & set(range(n_shards))),
            "shards_generated": written, "engine_start_seconds": round(getattr(backend, "start_seconds", 0.0), 2),
            "generation_seconds": round((t_done or time.time()) - t_start, 2) if written else 0.0,
            "worker_restarts": getattr(backend, "restarts", 0), "prior_wall_seconds": prior_wall, "tally": tally}
