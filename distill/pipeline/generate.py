"""Stage 2, generate: the teacher writes reasoning traces for every problem, in shards that survive crashes.

Prompts are read from Parquet a shard at a time (`teacher.shard_size` problems, default `batch_size`) and handed
to a backend; each finished shard is written atomically (temporary file, then rename) as `shard-NNNNNN.parquet`.
A shard file exists only when all its traces are in it, so a re-run after a killed driver generates only the
missing shards, and every (problem_id, sample_index) appears exactly once. At most two shards per worker are in
flight and finished shards go straight to disk: memory is bounded by the shard size, not the prompt count.

Backends:
  vllm    vLLM's offline engine in Ray actors, one per replica (data parallel). `tensor_parallel_size` and
          `pipeline_parallel_size` in `teacher.engine` become a Ray placement group per replica (`placement`).
          A worker that dies is replaced and its shards are re-run (`teacher.max_shard_attempts` tries each).
  openai  any OpenAI-compatible endpoint (`distill.teachers.openai`): async, bounded concurrency, retries.

Rows, one per (problem_id, sample_index): the prompt columns, sample_index, response, reasoning, answer,
finish_reason ("stop" | "length" | "error"), prompt_tokens, completion_tokens, latency_s, teacher, backend,
temperature, top_p, max_tokens, seed, error (null, or why this sample has no trace), verified (adaptive
sampling's verdict, else null). `response` always holds the whole trace with the reasoning inside
`<think>...</think>` when the endpoint returned it separately.

Adaptive sampling (`sampling.until_verified`): each problem is sampled in rounds, its traces judged with
`distill.verify.judge` as they arrive, until it has `until_verified` correct traces or `max_samples` samples.

Evaluation reuses `generate_table` with its own sampling settings.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import re
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from distill import artifacts, cluster, progress
from distill.models import resolve_model
from distill.spec import Sampling, Teacher

# On the CPU build vLLM sizes its KV cache as a fraction of host RAM (`gpu_memory_utilization`, default 0.9:
# fails whenever anything else holds memory, and at 0.3 several engines on one machine OOM it). A fixed 1 GiB
# (~23k tokens of SmolLM2-135M) is plenty for small models and predictable; override in `teacher.engine`.
CPU_ENGINE_DEFAULTS = {"kv_cache_memory_bytes": 1 << 30, "max_model_len": 4096, "dtype": "float32"}
SHARD_GLOB = "shard-*.parquet"
PROGRESS_FILE = "_progress.json"

# --------------------------------------------------------------------------------------------------------------
# trace helpers shared by the backends


_THINK = re.compile(r"<think>(.*?)</think>", re.S)


def split_reasoning(text: str | None, reasoning: str | None = None) -> tuple[str, str, str]:
    """Normalise an endpoint's output to (response, reasoning, answer).

    `reasoning` is a separately returned reasoning (`reasoning_content`); else it is read from an inline
    `<think>...</think>`. An unclosed `<think>` leaves the answer empty and everything in reasoning.
    `response` is the whole trace as the verifier reads it: `<think>\\nREASONING\\n</think>\\n\\nANSWER`."""
    text = text or ""
    if reasoning:
        answer = text.strip()
        return f"<think>\n{reasoning.strip()}\n</think>\n\n{answer}", reasoning.strip(), answer
    m = _THINK.search(text)
    if m:
        return text, m.group(1).strip(), text[m.end():].strip()
    if "<think>" in text:
        return text, text.split("<think>", 1)[1].strip(), ""
    return text, "", text.strip()


def trace_row(record: dict, sample_index: int, text: str | None, *, reasoning: str | None = None,
              finish_reason: str | None, prompt_tokens: int, completion_tokens: int, latency_s: float,
              teacher: str, backend: str, params: dict, seed: int | None, error: str | None = None,
              verified: bool | None = None) -> dict:
    response, reasoning_out, answer = split_reasoning(text, reasoning)
    return {
        **record,
        "sample_index": sample_index,
        "response": response,
        "reasoning": reasoning_out,
        "answer_text": answer,
        "finish_reason": "error" if error else (finish_reason or "stop"),
        "prompt_tokens": int(prompt_tokens or 0),
        "completion_tokens": int(completion_tokens or 0),
        "latency_s": round(float(latency_s), 4),
        "teacher": teacher,
        "backend": backend,
        "temperature": float(params.get("temperature", 0.0)),
        "top_p": float(params.get("top_p", 1.0)),
        "max_tokens": int(params.get("max_tokens", 0)),
        "seed": seed,
        "error": error,
        "verified": verified,
    }


def sampling_dict(sampling: Sampling | dict) -> dict:
    return sampling.model_dump() if hasattr(sampling, "model_dump") else dict(sampling)


def engine_params(params: dict) -> dict:
    """The keyword arguments of vllm.SamplingParams (without n) from a Sampling dict."""
    return {k: params[k] for k in ("temperature", "top_p", "max_tokens") if k in params}


class Adaptive:
    """Per-problem bookkeeping for `until_verified`: how many more samples each problem gets in this round."""

    def __init__(self, params: dict):
        self.k = params.get("until_verified")
        self.budget = params.get("max_samples") or params.get("n", 1)
        self.n = params.get("n", 1)

    @property
    def on(self) -> bool:
        return self.k is not None

    def first_round(self, record: dict) -> int:
        if not self.on:
            return self.n
        if not record.get("answer"):
            return 1  # nothing to verify against: one sample, like any unreferenced problem
        return min(self.k, self.budget)

    def next_round(self, record: dict, spent: int, verified: int) -> int:
        if not self.on or not record.get("answer") or verified >= self.k or spent >= self.budget:
            return 0
        return min(self.k - verified, self.budget - spent)

    def judge(self, text: str, record: dict, finish_reason: str | None) -> bool | None:
        if not self.on or not record.get("answer"):
            return None
        from distill.verify import judge

        return bool(judge(text, str(record["answer"]), finish_reason).correct)


# --------------------------------------------------------------------------------------------------------------
# placement: tensor / pipeline parallelism on Ray


def placement(teacher: Teacher) -> dict:
    """How one replica is placed on Ray: the actor's options, a placement group (or None), engine extras.

    tp x pp == 1: the actor itself asks for `num_gpus` (and `num_cpus`). tp x pp > 1 on GPUs: one bundle per
    engine worker ({GPU: 1, CPU: 1}), STRICT_PACK when only tensor parallel (TP wants one node's NVLink), PACK
    when pipeline parallel (stages may span nodes); the actor holds no GPU itself, runs inside the group with
    `placement_group_capture_child_tasks` so vLLM's Ray executor places its workers on the group's bundles."""
    tp = int(teacher.engine.get("tensor_parallel_size", 1) or 1)
    pp = int(teacher.engine.get("pipeline_parallel_size", 1) or 1)
    world = tp * pp
    if world == 1 or teacher.num_gpus == 0:
        return {"actor": {"num_cpus": teacher.num_cpus, "num_gpus": teacher.num_gpus}, "bundles": None,
                "strategy": None, "engine": {}, "accelerators": teacher.num_gpus, "world_size": world}
    if teacher.num_gpus not in (1, world):
        raise ValueError(f"teacher.num_gpus is {teacher.num_gpus} per replica but tensor_parallel_size x "
                         f"pipeline_parallel_size is {world}: set num_gpus to {world} (or 1 per engine worker)")
    bundles = [{"CPU": teacher.num_cpus, "GPU": 0}] + [{"GPU": 1, "CPU": 1} for _ in range(world)]
    return {"actor": {"num_cpus": teacher.num_cpus, "num_gpus": 0, "placement_group_bundle_index": 0},
            "bundles": bundles, "strategy": "STRICT_PACK" if pp == 1 else "PACK",
            "engine": {"distributed_executor_backend": "ray"}, "accelerators": world, "world_size": world}


# --------------------------------------------------------------------------------------------------------------
# the vLLM offline backend


class EngineWorker:
    """A Ray actor holding one vLLM engine. Turns a shard of prompt records into trace rows."""

    def __init__(self, model: str, engine: dict[str, Any], seed: int, system_prompt: str | None, on_cpu: bool,
                 teacher_id: str | None = None):
        t0 = time.time()
        if on_cpu:
            # In-process engine: a separate engine-core process busy-polls a whole core, which on a small CPU
            # machine is a core taken from the model (measured 121 -> 198 tokens/s on 2 cores, SmolLM2-135M).
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # per-request INFO lines drown the progress
        from vllm import LLM

        opts = {**(CPU_ENGINE_DEFAULTS if on_cpu else {}), **engine}
        # Per-request seeds crash the CPU build ("CPU Generator does not use offset"): seed the engine there.
        self.llm = LLM(model=model, seed=seed, **opts)
        self.tokenizer = self.llm.get_tokenizer()
        self.system_prompt = system_prompt
        self.model = teacher_id or model
        self.seed = seed
        self.per_request_seed = not on_cpu
        self.start_seconds = time.time() - t0

    def info(self) -> dict:
        return {"pid": os.getpid(), "start_seconds": self.start_seconds}

    def chat(self, prompt: str) -> str:
        messages = [{"role": "user", "content": prompt}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _params(self, base: dict, n: int, first_index: int, record_no: int):
        from vllm import SamplingParams

        kw = engine_params(base)
        if self.per_request_seed:
            # A distinct, reproducible seed per (problem, round): the same spec gives the same traces.
            kw["seed"] = (self.seed * 1_000_003 + record_no * 1009 + first_index) % (2**31)
        return SamplingParams(n=n, **kw)

    def generate_shard(self, shard_id: int, records: list[dict], params: dict, batch_size: int) -> dict:
        t_start = time.time()
        ad = Adaptive(params)
        rows: list[dict] = []
        samples = 0
        for lo in range(0, len(records), batch_size):
            chunk = records[lo:lo + batch_size]
            texts = [self.chat(r["prompt"]) for r in chunk]
            spent = [0] * len(chunk)
            verified = [0] * len(chunk)
            want = [ad.first_round(r) for r in chunk]
            while any(want):
                idx = [i for i, w in enumerate(want) if w > 0]
                sp = [self._params(params, want[i], spent[i], lo + i) for i in idx]
                t0 = time.time()
                outs = self.llm.generate([texts[i] for i in idx], sp, use_tqdm=False)
                latency = time.time() - t0
                for pos, (i, out) in enumerate(zip(idx, outs)):
                    for j, c in enumerate(out.outputs):
                        ok = ad.judge(c.text, chunk[i], c.finish_reason)
                        verified[i] += bool(ok)
                        rows.append(trace_row(
                            chunk[i], spent[i] + j, c.text, finish_reason=c.finish_reason,
                            prompt_tokens=len(out.prompt_token_ids or []), completion_tokens=len(c.token_ids),
                            latency_s=latency, teacher=self.model, backend="vllm", params=params,
                            seed=sp[pos].seed, verified=ok))
                    spent[i] += len(out.outputs)
                    samples += len(out.outputs)
                want = [ad.next_round(r, spent[i], verified[i]) if want[i] else 0 for i, r in enumerate(chunk)]
        return {"shard": shard_id, "rows": rows, "pid": os.getpid(), "seconds": time.time() - t_start}


class VLLMBackend:
    """`teacher.replicas` EngineWorker actors; a dead worker is replaced and its shards handed out again."""

    name = "vllm"

    def __init__(self, model: str, teacher: Teacher, seed: int, teacher_id: str | None = None):
        self.model, self.teacher, self.seed = model, teacher, seed
        self.teacher_id = teacher_id or model
        self.plan = placement(teacher)
        self.actors: list[Any] = []
        self.pgs: list[Any] = []
        self.load: dict[int, int] = {}  # actor slot -> shards in flight
        self.restarts = 0
        self.start_seconds = 0.0

    def _new_actor(self):
        import ray

        opts = dict(self.plan["actor"])
        pg = None
        if self.plan["bundles"]:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            pg = ray.util.placement_group(self.plan["bundles"], strategy=self.plan["strategy"])
            ray.get(pg.ready())
            self.pgs.append(pg)
            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                pg, placement_group_capture_child_tasks=True,
                placement_group_bundle_index=opts.pop("placement_group_bundle_index"))
        cls = ray.remote(EngineWorker).options(max_restarts=0, max_concurrency=1, **opts)
        return cls.remote(self.model, {**self.teacher.engine, **self.plan["engine"]}, self.seed,
                          self.teacher.system_prompt, self.teacher.num_gpus == 0, self.teacher_id)

    def start(self) -> None:
        import ray

        cluster.ensure_ray()
        t0 = time.time()
        self.actors = [self._new_actor() for _ in range(self.teacher.replicas)]
        self.load = {i: 0 for i in range(len(self.actors))}
        ray.get([a.info.remote() for a in self.actors])  # engines up: generation time starts now
        self.start_seconds = time.time() - t0

    def capacity(self) -> int:
        return 2 * len(self.actors)  # two shards per worker: the next one is queued while one runs

    def submit(self, shard_id: int, records: list[dict], params: dict) -> cf.Future:
        slot = min(self.load, key=self.load.get)
        self.load[slot] += 1
        fut = self.actors[slot].generate_shard.remote(
            shard_id, records, params, self.teacher.batch_size).future()
        fut.slot, fut.actor = slot, self.actors[slot]
        return fut

    def done(self, fut: cf.Future) -> None:
        self.load[fut.slot] = max(0, self.load[fut.slot] - 1)

    def recover(self, fut: cf.Future, exc: BaseException) -> bool:
        """A shard failed. If its worker died, replace the worker (once) and let the shard be re-run."""
        import ray

        if not isinstance(exc, (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError,
                                ray.exceptions.WorkerCrashedError)):
            return False
        if self.actors[fut.slot] is fut.actor:  # not replaced yet by another failed shard of the same worker
            try:
                ray.kill(fut.actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
            _wait_dead(fut.actor)
            self.actors[fut.slot] = self._new_actor()
            self.restarts += 1
        return True

    def close(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001
                pass
        for a in self.actors:
            _wait_dead(a)
        for pg in self.pgs:
            ray.util.remove_placement_group(pg)
        self.actors = []

    def accelerators(self) -> float:
        return self.plan["accelerators"] * self.teacher.replicas


def _wait_dead(actor, timeout: float = 30.0) -> None:
    """Wait until a killed actor's process is gone, so its engine's memory is free before the next one starts."""
    import ray

    t_end = time.time() + timeout
    while time.time() < t_end:
        try:
            ray.get(actor.info.remote(), timeout=5)
        except Exception:  # noqa: BLE001 - RayActorError once it is dead
            return
        time.sleep(0.2)


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


# Trace columns whose values may all be null in one shard: fixed types, so every shard has the same schema.
TRACE_TYPES = {"seed": pa.int64(), "error": pa.string(), "verified": pa.bool_(), "latency_s": pa.float64(),
               "reasoning": pa.string(), "answer_text": pa.string(), "response": pa.string()}


def _write_shard(rows: list[dict], path: Path) -> pa.Table:
    table = pa.Table.from_pylist(rows)
    for name, typ in TRACE_TYPES.items():
        if name in table.column_names and table.schema.field(name).type != typ:
            i = table.column_names.index(name)
            table = table.set_column(i, pa.field(name, typ), table.column(name).cast(typ))
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
    finally:
        bar.close()
        if started:
            backend.close()
    return {"shards": n_shards, "shards_resumed": len(done_before & set(range(n_shards))),
            "shards_generated": written, "engine_start_seconds": round(getattr(backend, "start_seconds", 0.0), 2),
            "generation_seconds": round(time.time() - t_start, 2) if written else 0.0,
            "worker_restarts": getattr(backend, "restarts", 0), "prior_wall_seconds": prior_wall, "tally": tally}



def make_backend(model: str, teacher: Teacher, seed: int, teacher_id: str | None = None):
    if teacher.backend == "openai":
        from distill.teachers.openai import OpenAIBackend

        return OpenAIBackend(teacher, seed)
    return VLLMBackend(resolve_model(model), teacher, seed, teacher_id=teacher_id or resolve_model(model))


# --------------------------------------------------------------------------------------------------------------
# entry points


def generate_table(prompts: pa.Table, model: str, sampling: Sampling | dict, teacher: Teacher, seed: int,
                   out_dir: Path | None = None, on_shard: Callable[[dict], None] | None = None) -> pa.Table | None:
    """Run prompts (a table with a `prompt` column) through the teacher's backend.

    With out_dir the traces are written there as shard files (an interrupted call resumes where it stopped;
    returns None); else they are returned as one table."""
    params = sampling_dict(sampling)
    shard_dir = Path(out_dir) if out_dir is not None else Path(_scratch_dir())
    backend = make_backend(model, teacher.model_copy(update={"model": model}), seed)
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

    return artifacts.fingerprint("generate-shards", artifacts.file_digest(prompts_file), teacher.model_dump(),
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
    backend = make_backend(teacher.model, teacher, seed, teacher_id=teacher.model)
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
    accelerators = backend.accelerators() if hasattr(backend, "accelerators") else 0.0
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
