"""Generation throughput on heavy-tailed completions: raw vLLM (one `generate` call over every request, the
continuous-batching ideal) versus the pipeline (`distill.shards.run_shards` with the vLLM backend: Ray actor,
`EngineLoop`, shards, Parquet commits), same engine settings, prompts and sampling.

    .venv/bin/python bench/generation.py --model smollm2-135m --max-num-seqs 8 --batches 8 --pairs 5

The workload is `--batches` engine batches (`max_num_seqs` requests each) of prompts whose completion lengths are
heavy-tailed, as R1 traces are (median ~4k tokens, tail to 32k): most prompts ask for a short answer, one in
`--long-every` asks for a long story, with `max_tokens` far above the median. Decoding is greedy by default, so
both sides generate exactly the same tokens and the ratio measures the pipeline alone. Sampled
(`--temperature 0.6`, as R1 samples), each run's completions differ: the two sides' token counts differed by up
to 10%, and so did their tokens/s (per-pair ratios 0.90-1.04). The measured p99 / median of completion lengths
is printed (the tail this bench is about; >= 4 wanted). The raw engine also runs the same requests batch by batch once
(`--batch-size` prompts per `generate` call: how the pipeline generated before it kept its engines fed), for
comparison.

Side by side: both engines are started once (start-up timed apart, left out of every rate) and kept for the
whole bench, each in a Ray actor placed the same way (`--num-cpus` reserved each, so the same thread count,
environment and in-process engine core): the raw one driven by plain `LLM.generate` calls, the pipeline's by
`run_shards` through its `VLLMBackend` (kept across runs, as eval keeps one). Each gets the same warm-up, then `--pairs`
raw/pipeline pairs run over the same requests, interleaved ABBA (raw first in odd pairs, pipeline first in even
ones) so drift and other jobs on the machine hit both alike; an idle engine waits on a queue and takes no CPU.
Each run prints the CPU seconds its engine process used and what the rest of the bench's process tree (driver,
Ray's processes, the idle engine) used meanwhile: the pipeline's own overhead shows there.
The LAST line ends with the median of the per-pair ratios pipeline / raw tokens/s (goal >= 0.95)."""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

SHORT = "What is {a} + {b}? Reply with the number only."
LONG = "Write a long, detailed story about a {thing}, with many chapters."
THINGS = ["lighthouse keeper", "river", "clockmaker", "dragon", "mountain village", "starship", "garden", "library"]


def load_prompts(args, n: int | None = None) -> list[dict]:
    rng = random.Random(args.seed)
    n = n or args.batches * args.max_num_seqs
    rows = []
    for i in range(n):
        long = i % args.long_every == args.long_every - 1
        prompt = LONG.format(thing=rng.choice(THINGS)) if long else SHORT.format(a=rng.randint(1, 99),
                                                                                  b=rng.randint(1, 99))
        rows.append({"problem_id": f"p{i}", "prompt": prompt})
    rng.shuffle(rows)  # the long ones land anywhere, several or none in a batch, as they would
    return rows


def engine_kwargs(args) -> dict:
    return {"max_model_len": args.max_model_len, "enforce_eager": True, "max_num_seqs": args.max_num_seqs,
            **json.loads(args.engine)}


def tail(lengths: list[int]) -> tuple[float, float]:
    q = statistics.quantiles(lengths, n=100, method="inclusive")
    return statistics.median(lengths), q[98]


# ------------------------------------------------------------------------------------------------- raw engine


class RawWorker:
    """The raw engine: a vllm.LLM in a Ray actor placed as the pipeline's engine actor is (same CPUs, thread
    count, environment and in-process engine core), driven by plain `LLM.generate` calls."""

    def __init__(self, model: str, seed: int, engine: dict, params: dict):
        t0 = time.time()
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # as the pipeline's CPU actor does
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        from vllm import LLM, SamplingParams
        from vllm.sampling_params import RequestOutputKind

        self.llm = LLM(model=model, seed=seed, **engine)
        # The pipeline's requests ask for their final output only (`EngineWorker._params`): the same here.
        self.params = SamplingParams(n=1, output_kind=RequestOutputKind.FINAL_ONLY, **params)
        self.tok = self.llm.get_tokenizer()
        self.start_seconds = time.time() - t0

    def info(self) -> dict:
        return {"pid": os.getpid(), "start_seconds": self.start_seconds}

    def run(self, prompts: list[str], batch_size: int | None = None) -> dict:
        """One generate call over every prompt, or (batch_size) the old way: one call per batch, each waiting for
        its longest request."""
        texts = [self.tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                              add_generation_prompt=True) for p in prompts]
        t0 = time.time()
        if batch_size:
            outs = [o for lo in range(0, len(texts), batch_size)
                    for o in self.llm.generate(texts[lo:lo + batch_size], self.params, use_tqdm=False)]
        else:
            outs = self.llm.generate(texts, self.params, use_tqdm=False)
        secs = time.time() - t0
        lengths = [len(c.token_ids) for o in outs for c in o.outputs]
        return {"tokens": sum(lengths), "seconds": secs, "lengths": lengths}


class RawEngine:
    def __init__(self, args):
        import ray

        from distill.models import resolve_model
        from distill.teachers.vllm import engine_options

        self.args = args
        actor = ray.remote(RawWorker).options(num_cpus=args.num_cpus, max_restarts=0)
        self.actor = actor.remote(resolve_model(args.model), args.seed, engine_options(engine_kwargs(args), True),
                                  {"temperature": args.temperature, "top_p": args.top_p, "max_tokens": args.max_tokens})
        info = ray.get(self.actor.info.remote())
        self.start_seconds, self.pid = info["start_seconds"], info["pid"]

    def run(self, n: int | None = None, batched: bool = False) -> dict:
        import ray

        prompts = [p["prompt"] for p in load_prompts(self.args, n)]
        return ray.get(self.actor.run.remote(prompts, self.args.batch_size if batched else None))

    def close(self) -> None:
        import ray

        ray.kill(self.actor)


def start_ray(args) -> None:
    """The embedded Ray `distill.cluster.ensure_ray` starts, with room for both engine actors (each reserves
    `--num-cpus`, as the pipeline's does): the same placement, environment and thread count for both."""
    import ray

    from distill import cluster

    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    ray.init(address="local", num_cpus=int(2 * args.num_cpus), include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}}, _system_config=cluster.EMBEDDED_SYSTEM_CONFIG)


# ------------------------------------------------------------------------------------------------- pipeline


class Pipeline:
    def __init__(self, args):
        import ray

        from distill.pipeline.eval import OneEngineStart
        from distill.spec import Sampling, VLLMTeacher
        from distill.teachers import make_backend
        from distill.teachers.base import sampling_dict

        self.args = args
        teacher = VLLMTeacher(model=args.model, num_cpus=args.num_cpus, batch_size=args.batch_size,
                              engine=engine_kwargs(args))
        self.params = sampling_dict(Sampling(n=1, temperature=args.temperature, top_p=args.top_p,
                                             max_tokens=args.max_tokens))
        os.environ.setdefault("DISTILL_PROGRESS", "0")
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-generation-"))
        # Started once and kept across runs (`run_shards` starts and closes the backend it is given; this one
        # closes at `shut`): each run measures generation, not another engine start.
        self.backend = OneEngineStart(make_backend(teacher, args.seed, teacher_id=teacher.model))
        self.backend.start()
        self.start_seconds = self.backend.start_seconds
        self.pid = ray.get(self.backend.actors[0].info.remote())["pid"]
        self.runs = 0

    def run(self, n: int | None = None) -> dict:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from distill.shards import SHARD_GLOB, run_shards

        self.runs += 1
        work = self.tmp / f"run{self.runs}"
        (work / "gen").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(load_prompts(self.args, n)), work / "prompts.parquet")
        st = run_shards(work / "prompts.parquet", work / "gen", self.backend, self.params, self.args.batch_size)
        lengths = [k for f in sorted((work / "gen").glob(SHARD_GLOB))
                   for k in pq.read_table(f, columns=["completion_tokens"]).column(0).to_pylist()]
        return {"tokens": st["tally"].completion_tokens, "seconds": st["generation_seconds"], "lengths": lengths}

    def close(self) -> None:
        import shutil

        self.backend.shut()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------- CPU accounting


class CpuMeter:
    """CPU seconds used during a run by one engine process, and by the rest of this bench's process tree (the
    driver, Ray's GCS, raylet and workers, the idle other engine)."""

    def __init__(self, engine_pid: int):
        import psutil

        from process_tree import tree

        self.engine_pid, self.tree, self.me = engine_pid, tree, psutil.Process()

    def _sample(self) -> tuple[float, float]:
        import psutil

        engine = rest = 0.0
        for p in self.tree(self.me):
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            used = t.user + t.system  # children's times are counted in their own entries
            if p.pid == self.engine_pid:
                engine += used
            else:
                rest += used
        return engine, rest

    def __enter__(self):
        self.t0 = self._sample()
        return self

    def __exit__(self, *exc):
        t1 = self._sample()
        self.engine, self.rest = t1[0] - self.t0[0], t1[1] - self.t0[1]


def measured(engine, meter_pid: int) -> dict:
    with CpuMeter(meter_pid) as m:
        res = engine.run()
    return {**res, "tps": res["tokens"] / res["seconds"], "cpu_engine": m.engine, "cpu_rest": m.rest}


def describe(name: str, r: dict) -> str:
    med, p99 = tail(r["lengths"])
    return (f"{name} {r['tokens']} tokens in {r['seconds']:.2f}s = {r['tps']:.1f} tok/s (p99/median "
            f"{p99 / med:.1f}; CPU-s engine {r['cpu_engine']:.1f}, rest {r['cpu_rest']:.1f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--max-num-seqs", type=int, default=8, help="the engine's batch (vLLM max_num_seqs)")
    ap.add_argument("--batches", type=int, default=8, help="engine batches' worth of requests")
    ap.add_argument("--long-every", type=int, default=8, help="one prompt in this many asks for a long text")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--max-model-len", type=int, default=512)
    ap.add_argument("--temperature", type=float, default=0.0, help="0: greedy, the same tokens on both sides")
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-cpus", type=float, default=float(os.cpu_count() or 1))
    ap.add_argument("--batch-size", type=int, help="prompts per shard, and per call of the old batch-by-batch "
                                                   "run (default: max_num_seqs)")
    ap.add_argument("--engine", default="{}", help="more vllm.LLM kwargs as JSON")
    ap.add_argument("--pairs", type=int, default=5, help="raw/pipeline pairs, interleaved ABBA; medians quoted")
    ap.add_argument("--warmup-batches", type=int, default=2, help="engine batches each engine runs first, unmeasured")
    ap.add_argument("--no-batch-by-batch", action="store_true", help="skip the old batch-by-batch figure")
    args = ap.parse_args()
    args.batch_size = args.batch_size or args.max_num_seqs
    n = args.batches * args.max_num_seqs
    print(f"model {args.model}, {n} prompts ({args.batches} batches of max_num_seqs {args.max_num_seqs}; 1 in "
          f"{args.long_every} asks for a long text), temperature {args.temperature}, top_p {args.top_p}, "
          f"max_tokens {args.max_tokens}, shards of {args.batch_size}; {args.pairs} raw/pipeline pairs", flush=True)
    start_ray(args)
    raw = RawEngine(args)
    pipe = Pipeline(args)
    print(f"engine start: raw {raw.start_seconds:.1f}s, pipeline {pipe.start_seconds:.1f}s (both kept running)",
          flush=True)
    warm = args.warmup_batches * args.max_num_seqs
    raw.run(n=warm), pipe.run(n=warm)
    batched = None if args.no_batch_by_batch else raw.run(batched=True)
    raw_tps, pipe_tps, ratios, tails = [], [], [], []
    for i in range(args.pairs):
        order = [("raw", raw), ("pipeline", pipe)]
        if i % 2:
            order.reverse()
        res = {name: measured(eng, eng.pid) for name, eng in order}
        r, p = res["raw"], res["pipeline"]
        raw_tps.append(r["tps"]), pipe_tps.append(p["tps"]), ratios.append(p["tps"] / r["tps"])
        tails += [tail(r["lengths"]), tail(p["lengths"])]
        print(f"[{i + 1}/{args.pairs}] {describe('raw', r)}; {describe('pipeline', p)}; "
              f"ratio {p['tps'] / r['tps']:.3f}", flush=True)
    raw.close()
    pipe.close()
    med = statistics.median
    print(f"completion tokens: median {med(m for m, _ in tails):.0f}, p99 {med(q for _, q in tails):.0f} "
          f"(p99/median {med(q / m for m, q in tails):.1f}, medians over runs)")
    if batched:
        b_tps = batched["tokens"] / batched["seconds"]
        print(f"old batch-by-batch ({args.batch_size} prompts per generate call, raw engine, once): "
              f"{batched['tokens']} tokens in {batched['seconds']:.2f}s = {b_tps:.1f} tok/s "
              f"(ratio to the raw median {b_tps / med(raw_tps):.3f})")
    print(f"raw vllm.LLM.generate: {med(raw_tps):.1f} tokens/s (median of {args.pairs})")
    print(f"pipeline:              {med(pipe_tps):.1f} tokens/s (median of {args.pairs})")
    print(f"per-pair ratios {', '.join(f'{x:.3f}' for x in ratios)} (goal >= 0.95); "
          f"pipeline/raw tokens/s, median of {args.pairs}: {med(ratios):.3f}")


if __name__ == "__main__":
    main()
