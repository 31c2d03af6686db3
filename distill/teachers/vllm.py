"""The vLLM teacher: vLLM's offline engine in Ray actors, one per replica (data parallel).

`tensor_parallel_size` and `pipeline_parallel_size` in `teacher.engine` become a Ray placement group per replica
(`placement`). A worker that dies is replaced and its shards are re-run (`teacher.max_shard_attempts` tries each).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from typing import Any

from distill import cluster
from distill.models import context_length, resolve_model
from distill.spec import VLLMTeacher
from distill.teachers.base import Adaptive, engine_params, trace_row

# On the CPU build vLLM sizes its KV cache as a fraction of host RAM (`gpu_memory_utilization`, default 0.9:
# fails whenever anything else holds memory, and at 0.3 several engines on one machine OOM it). A fixed 1 GiB
# (~23k tokens of SmolLM2-135M) is plenty for small models and predictable; override in `teacher.engine`.
# `enforce_eager`: on CPU, compiling the model graph takes ~90 s of a ~110 s engine start (measured on 2 cores,
# SmolLM2-135M) for little decode speed on small models; eager mode starts in ~20 s. A spec that sets it wins.
CPU_ENGINE_DEFAULTS = {"kv_cache_memory_bytes": 1 << 30, "max_model_len": 4096, "dtype": "float32",
                       "enforce_eager": True}


def engine_options(engine: dict[str, Any], on_cpu: bool, model_context: int | None = None) -> dict[str, Any]:
    """The keyword arguments `vllm.LLM` gets besides model and seed: the spec's engine settings over the CPU
    build's defaults (on CPU only; on GPUs vLLM's own defaults stand). The CPU default context is capped at the
    model's own (`model_context`): vLLM refuses a max_model_len above it (e.g. a 1k-context student's eval)."""
    defaults = dict(CPU_ENGINE_DEFAULTS) if on_cpu else {}
    if defaults and model_context:
        defaults["max_model_len"] = min(defaults["max_model_len"], model_context)
    return {**defaults, **engine}


def placement(teacher: VLLMTeacher) -> dict:
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


class EngineWorker:
    """A Ray actor holding one vLLM engine. Turns a shard of prompt records into trace rows."""

    def __init__(self, model: str, engine: dict[str, Any], seed: int, system_prompt: str | None, on_cpu: bool,
                 teacher_id: str | None = None):
        """`engine`: the resolved keyword arguments for vllm.LLM (`VLLMBackend.engine_kwargs`)."""
        t0 = time.time()
        if on_cpu:
            # In-process engine: a separate engine-core process busy-polls a whole core, which on a small CPU
            # machine is a core taken from the model (measured 121 -> 198 tokens/s on 2 cores, SmolLM2-135M).
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # per-request INFO lines drown the progress
        from vllm import LLM

        # Per-request seeds crash the CPU build ("CPU Generator does not use offset"): seed the engine there.
        self.llm = LLM(model=model, seed=seed, **engine)
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

    def __init__(self, teacher: VLLMTeacher, seed: int, teacher_id: str | None = None):
        self.model, self.teacher, self.seed = resolve_model(teacher.model), teacher, seed
        self.teacher_id = teacher_id or self.model  # what the trace rows name as their teacher
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
        return cls.remote(self.model, self.engine_kwargs(), self.seed, self.teacher.system_prompt, self.on_cpu(),
                          self.teacher_id)

    def on_cpu(self) -> bool:
        return self.teacher.num_gpus == 0  # no GPU asked for: the actor runs vLLM's CPU build

    def engine_kwargs(self) -> dict[str, Any]:
        """Exactly what each replica's vllm.LLM gets besides model and seed."""
        context = context_length(self.model) if self.on_cpu() and "max_model_len" not in self.teacher.engine else None
        return engine_options({**self.teacher.engine, **self.plan["engine"]}, self.on_cpu(), context)

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
