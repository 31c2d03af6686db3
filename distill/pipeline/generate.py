"""Stage 2, generate: the teacher writes reasoning traces for every problem, in shards that survive crashes.

Prompts are read from Parquet a shard at a time (`teacher.shard_size` problems, default `batch_size`) and handed
to a backend; each finished shard is written atomically (temporary file, then rename) as `shard-NNNNNN.parquet`.
A shard file exists only when all its traces are in it, so a re-run after a killed driver generates only the
missing shards, and every (problem_id, sample_index) appears exactly once. A bounded number of shards is in flight
(`backend.capacity()`) and finished shards go straight to disk: memory is bounded by the shard size, not the
prompt count.

Backends:
  vllm    vLLM's offline engine in Ray actors, one per replica (data parallel; `distill.teachers.vllm`). `tensor_parallel_size` and
          `pipeline_parallel_size` in `teacher.engine` become a Ray placement group per replica (`placement`).
          Continuous generation: each engine holds several shards at once and takes new requests as slots free
          (`distill.teachers.engine_loop`); a shard is committed when its last request finishes.
          A worker that dies, or whose shard runs past `teacher.shard_timeout_s`, is replaced and its shards are
          re-run (`teacher.max_shard_attempts` tries each).
  openai  any OpenAI-compatible endpoint (`distill.teachers.openai`): async, bounded concurrency, retries.

Rows, one per (problem_id, sample_index): the prompt columns, sample_index, response, reasoning, answer,
finish_reason ("stop" | "length" | "error"), prompt_tokens, completion_tokens, latency_s, teacher, backend,
temperature, top_p, max_tokens, seed, error (null, or why this sample has no trace), verified (adaptive
sampling's verdict, else null). `response` always holds the whole trace with the reasoning inside
`<think>...</think>` when the endpoint returned it separately.

Adaptive sampling (`sampling.until_verified`): each problem is sampled in rounds, its traces judged with
`distill.verify.judge` as they arrive, until it has `until_verified` correct traces or `max_samples` samples; on
the vLLM backend a problem's next round enters the engine as soon as its own samples are judged.

Throughput knobs never discard work: the shard key (`shard_key`) covers what decides a trace's content (prompts,
model, system prompt, sampling, seed, output-changing engine settings, CPU or GPU), not batch or shard sizes,
replicas, CPUs, GPU counts, concurrency, timeouts or retries (`spec.teacher_fingerprint`); a resumed shard set keeps
the shard size it started with (`shard_layout`).

Evaluation reuses `generate_table` with its own sampling settings.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from distill import artifacts, progress, schemas
from distill.spec import Sampling, Teacher, teacher_fingerprint
from distill.teachers import make_backend
from distill.teachers.base import sampling_dict

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
    pf = pq.ParquetFile(prompts)
    for sid, batch in enumerate(pf.iter_batches(batch_size=shard_size)):
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



# --------------------------------------------------------------------------------------------------------------
# entry points


def generate_table(prompts: pa.Table, model: str, sampling: Sampling | dict, teacher: Teacher, seed: int,
                   out_dir: Path | None = None, on_shard: Callable[[dict], None] | None = None) -> pa.Table | None:
    """Run prompts (a table with a `prompt` column) through the teacher's backend.

    With out_dir the traces are written there as shard files (an interrupted call resumes where it stopped;
    returns None); else they are returned as one table."""
    params = sampling_dict(sampling)
    shard_dir = Path(out_dir) if out_dir is not None else Path(_scratch_dir())
    backend = make_backend(teacher.model_copy(update={"model": model}), seed)
    try:
        run_shards(prompts, shard_dir, backend, params, teacher.shard_size or teacher.batch_size,
                   teacher.max_shard_attempts, on_shard=on_shard)
        if out_dir is not None:
            return None
        files = sorted(shard_dir.glob(SHARD_GLOB))
        return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default") if files else \
            pa.table({})
    finally:
        if out_dir is None:
            shutil.rmtree(shard_dir, ignore_errors=True)


def _scratch_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="distill-gen-")


def shard_key(prompts_file: Path, teacher: Teacher, sampling: Sampling | dict, seed: int) -> str:
    from distill import artifacts

    return artifacts.fingerprint("generate-shards", artifacts.file_digest(prompts_file), teacher_fingerprint(teacher),
                                 sampling_dict(sampling), seed)


def generate_stage(prompts_dir: Path, out_dir: Path, teacher: Teacher, sampling: Sampling, seed: int,
                   prices: Any = None, shard_dir: Path | None = None,
                   on_shard: Callable[[dict], None] | None = None) -> dict:
    """The generate stage: shards are generated into a persistent `shard_dir` (default: `.generate-shards/KEY`
    beside out_dir's parent, KEY the fingerprint of prompts, teacher, sampling and seed), so a killed run
    resumes there; when all are done they are hard-linked into out_dir and the shard directory is removed."""
    from distill import ledger

    prompts_file = Path(prompts_dir) / "prompts.parquet"
    if shard_dir is None:
        shard_dir = Path(out_dir).resolve().parent / ".generate-shards" / shard_key(prompts_file, teacher, sampling,
                                                                                     seed)
    params = sampling_dict(sampling)
    backend = make_backend(teacher, seed, teacher_id=teacher.model)
    t0 = time.time()
    res = run_shards(prompts_file, Path(shard_dir), backend, params, teacher.shard_size or teacher.batch_size,
                     teacher.max_shard_attempts, on_shard=on_shard)
    wall = time.time() - t0 + res.pop("prior_wall_seconds")
    # The tally covers only this call's shards; resumed shards are read back (one shard at a time).
    tally: Tally = res.pop("tally")
    written = sorted(Path(shard_dir).glob(SHARD_GLOB))
    full = Tally()
    for f in written:
        t = pq.read_table(f, columns=None)
        full.add(t, len(set(t.column("problem_id").to_pylist())) if "problem_id" in t.column_names else 0)
    out_dir = Path(out_dir)
    for f in written:
        try:
            os.link(f, out_dir / f.name)
        except OSError:
            shutil.copy2(f, out_dir / f.name)
    shutil.rmtree(shard_dir, ignore_errors=True)
    problems = pq.ParquetFile(prompts_file).metadata.num_rows
    accelerators = backend.accelerators()
    stats = {
        "problems": problems,
        "traces": full.traces,
        "errors": full.errors,
        "error_reasons": full.error_reasons,
        "prompt_tokens": full.prompt_tokens,
        "completion_tokens": full.completion_tokens,
        "finish_reasons": full.finish,
        "backend": teacher.backend,
        "accelerators": accelerators,
        **res,
        "wall_seconds": round(wall, 2),
        "tokens_per_second": round(tally.completion_tokens / res["generation_seconds"], 2)
        if res["generation_seconds"] else None,
    }
    if params.get("until_verified"):
        stats["adaptive"] = {
            "until_verified": params["until_verified"], "max_samples": params["max_samples"],
            "samples": full.samples, "verified": full.verified, "problems_verified": full.verified_problems,
            "samples_per_verified": round(full.samples / full.verified, 3) if full.verified else None,
        }
    stats["ledger"] = ledger.entry(full.prompt_tokens, full.completion_tokens, wall,
                                   accelerators * wall, prices)
    return stats
