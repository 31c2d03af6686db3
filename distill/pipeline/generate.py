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

import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from distill.shards import (LAYOUT_FILE, PROGRESS_FILE, SHARD_GLOB, Tally, iter_shards,  # noqa: F401 - re-exported
                            run_shards, shard_layout, shard_path)
from distill.spec import Sampling, Teacher, teacher_fingerprint
from distill.teachers import make_backend
from distill.teachers.base import sampling_dict


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
