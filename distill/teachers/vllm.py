"""The vLLM teacher: vLLM's offline engine in Ray actors, one per replica (data parallel), each kept fed across
shard boundaries by an `EngineLoop` (continuous generation: several shards in flight per actor).

`tensor_parallel_size` and `pipeline_parallel_size` in `teacher.engine` become a Ray placement group per replica
(`placement`). A worker that dies, or is killed because a shard ran past `teacher.shard_timeout_s`, is replaced
and its shards are re-run (`teacher.max_shard_attempts` tries each).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import sys
import threading
import time
from typing import Any, Callable

from distill import cluster
from distill.models import context_length, resolve_model
from distill.spec import VLLMTeacher
from distill.teachers.base import chat_preamble, engine_params
from distill.teachers.engine_loop import EngineLoop

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
    """A Ray actor holding one vLLM engine, kept fed by an `EngineLoop`: several shards run in it at once (a
    threaded actor: each `generate_shard` call waits in its own thread while the loop thread steps the engine)."""

    def __init__(self, model: str, engine: dict[str, Any], seed: int, preamble: list[dict], on_cpu: bool,
                 teacher_id: str | None = None, step_hook: Callable[[int], None] | None = None):
        """`engine`: the resolved keyword arguments for vllm.LLM (`VLLMBackend.engine_kwargs`); `step_hook`: see
        `EngineLoop` (tests inject faults through it); `preamble`: the messages before each prompt
        (`base.chat_preamble`)."""
        t0 = time.time()
        if on_cpu:
            # In-process engine: a separate engine-core process busy-polls a whole core, which on a small CPU
            # machine is a core taken from the model (measured 121 -> 198 tokens/s on 2 cores, SmolLM2-135M).
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # per-request INFO lines drown the progress
        from vllm import LLM

        # Per-request seeds crash the CPU build ("CPU Generator does not use offset"): seed the engine there.
        self.seed = seed
        self.per_request_seed = not on_cpu
        self.loop = EngineLoop(lambda: LLM(model=model, seed=seed, **engine), teacher_id or model, self._params,
                               step_hook)
        self.llm = self.loop.llm
        self.tokenizer = self.llm.get_tokenizer()
        self.preamble = preamble
        self.start_seconds = time.time() - t0

    def info(self) -> dict:
        return {"pid": os.getpid(), "start_seconds": self.start_seconds,
                "max_num_seqs": self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs}

    def chat(self, prompt: str) -> str:
        messages = [*self.preamble, {"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _params(self, base: dict, n: int, first_index: int, record_no: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        # FINAL_ONLY: the loop reads a request's output once, when it finishes. vLLM's default (CUMULATIVE) builds
        # every running request's whole output so far at every step: O(length^2) per trace at R1's lengths.
        kw = {**engine_params(base), "output_kind": RequestOutputKind.FINAL_ONLY}
        if self.per_request_seed:
            # A distinct, reproducible seed per (problem, round): the same spec gives the same traces.
            kw["seed"] = (self.seed * 1_000_003 + record_no * 1009 + first_index) % (2**31)
        return SamplingParams(n=n, **kw)

    def generate_shard(self, shard_id: int, records: list[dict], params: dict) -> dict:
        """The shard's rows, once its last request has finished (other shards keep the engine busy meanwhile)."""
        texts = [self.chat(r["prompt"]) for r in records]
        return self.loop.submit(shard_id, records, params, texts).result()


class VLLMBackend:
    """`teacher.replicas` EngineWorker actors, each with several shards in flight; a dead worker is replaced and
    its shards handed out again. A watchdog kills a worker whose shard runs past `teacher.shard_timeout_s` (or
    whose engine does not start within `teacher.engine_start_timeout_s`): its shards then fail like those of a
    dead worker and are retried."""

    name = "vllm"

    def __init__(self, teacher: VLLMTeacher, seed: int, teacher_id: str | None = None,
                 step_hook: Callable[[int], None] | None = None):
        self.model, self.teacher, self.seed = resolve_model(teacher.model), teacher, seed
        self.teacher_id = teacher_id or self.model  # what the trace rows name as their teacher
        self.step_hook = step_hook
        self.plan = placement(teacher)
        self.actors: list[Any] = []
        self.pgs: list[Any] = []
        self.load: dict[int, int] = {}  # actor slot -> shards in flight
        self.ready: dict[int, list] = {}  # actor slot -> [created at, ready at or None, info future]
        self.inflight: set[cf.Future] = set()
        self.lock = threading.Lock()
        self.per_actor = 2
        self.restarts = 0
        self.timeouts = 0
        self.start_seconds = 0.0
        self.closed = threading.Event()

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
        # One thread per shard in flight, two more so `info` is answered while all of them wait.
        cls = ray.remote(EngineWorker).options(max_restarts=0, max_concurrency=MAX_SHARDS_PER_WORKER + 2, **opts)
        return cls.remote(self.model, self.engine_kwargs(), self.seed, chat_preamble(self.teacher), self.on_cpu(),
                          self.teacher_id, self.step_hook)

    def _watch(self, slot: int) -> None:
        """Start the clock on a (new) actor in `slot`: its engine must be up within engine_start_timeout_s."""
        fut = self.actors[slot].info.remote().future()
        entry = [time.time(), None, fut]
        fut.add_done_callback(lambda f: entry.__setitem__(1, time.time()))
        self.ready[slot] = entry

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
        for slot in range(len(self.actors)):
            self._watch(slot)
        try:  # engines up: generation time starts now
            infos = ray.get([a.info.remote() for a in self.actors], timeout=self.teacher.engine_start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise TimeoutError(f"teacher: the vLLM engine did not start within teacher.engine_start_timeout_s "
                               f"({self.teacher.engine_start_timeout_s:g} s)") from None
        self.per_actor = shards_per_worker(infos[0]["max_num_seqs"], self.teacher.shard_size or self.teacher.batch_size)
        self.start_seconds = time.time() - t0
        threading.Thread(target=self._watchdog, name="shard-watchdog", daemon=True).start()

    def capacity(self) -> int:
        return self.per_actor * len(self.actors)

    def submit(self, shard_id: int, records: list[dict], params: dict) -> cf.Future:
        slot = min(self.load, key=self.load.get)
        self.load[slot] += 1
        fut = self.actors[slot].generate_shard.remote(shard_id, records, params).future()
        fut.slot, fut.actor, fut.shard, fut.submitted = slot, self.actors[slot], shard_id, time.time()
        with self.lock:
            self.inflight.add(fut)
        return fut

    def done(self, fut: cf.Future) -> None:
        self.load[fut.slot] = max(0, self.load[fut.slot] - 1)
        with self.lock:
            self.inflight.discard(fut)

    def _watchdog(self) -> None:
        """Kill the worker of any shard past its deadline (the clock starts when the shard was handed over or its
        worker's engine was up, whichever is later), and any worker whose engine does not come up in time."""
        import ray

        limit, start_limit = self.teacher.shard_timeout_s, self.teacher.engine_start_timeout_s
        killed: set[int] = set()  # id() of the workers killed already (their shards fail and are retried)
        while not self.closed.wait(min(1.0, limit / 10)):
            now = time.time()
            with self.lock:
                late = [(f.actor, f"shard {f.shard} ran past teacher.shard_timeout_s ({limit:g} s)")
                        for f in self.inflight if not f.done()
                        and (up := self.ready.get(f.slot, [0, None])[1]) and now - max(f.submitted, up) > limit]
                late += [(self.actors[s], f"an engine did not start within teacher.engine_start_timeout_s "
                                          f"({start_limit:g} s)") for s, (created, up, _) in self.ready.items()
                         if up is None and now - created > start_limit]
            for actor, why in late:
                if id(actor) in killed:
                    continue
                killed.add(id(actor))
                print(f"[generate] {why}: killing its engine worker", file=sys.stderr, flush=True)
                self.timeouts += 1
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # noqa: BLE001 - already gone
                    pass

    def recover(self, fut: cf.Future, exc: BaseException) -> bool:
        """A shard failed. If its worker died (or was killed for a timeout), replace the worker (once) and let
        the shard be re-run."""
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
            fresh = self._new_actor()
            with self.lock:
                self.actors[fut.slot] = fresh
                self._watch(fut.slot)
            self.restarts += 1
        return True

    def close(self) -> None:
        import ray

        self.closed.set()
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


# Shards in flight per worker: enough queued requests that the engine never drains while shards wait on their
# longest traces. A shard stays open until its tail finishes, and with heavy-tailed lengths (R1: median ~4k
# tokens, tail 32k) a tail outlasts ~TAIL_BATCHES engine batches of median requests, all of which must be queued
# meanwhile: TAIL_BATCHES x `max_num_seqs` prompts. At least 2, at most MAX_SHARDS_PER_WORKER (each in-flight
# shard is a waiting thread in the actor, and is generated again if its worker dies).
TAIL_BATCHES = 8
MAX_SHARDS_PER_WORKER = 64


def shards_per_worker(max_num_seqs: int, shard_size: int) -> int:
    return max(2, min(MAX_SHARDS_PER_WORKER, 1 + -(-TAIL_BATCHES * int(max_num_seqs) // max(1, shard_size))))


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
