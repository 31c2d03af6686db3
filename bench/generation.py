"""Generation throughput on heavy-tailed completions: raw vLLM (one `generate` call over every request, the
continuous-batching ideal) versus the pipeline (`distill.pipeline.generate.generate_stage`: Ray actor, shards,
Parquet commits), same engine settings, prompts and sampling.

    .venv/bin/python bench/generation.py --model smollm2-135m --max-num-seqs 8 --batches 8 --repeats 3

The workload is `--batches` engine batches (`max_num_seqs` requests each) of prompts whose completion lengths are
heavy-tailed, as R1 traces are (median ~4k tokens, tail to 32k): most prompts ask for a short answer, one in
`--long-every` asks for a long story, sampled as R1 is (temperature 0.6, top_p 0.95) with `max_tokens` far
above the median. The measured
p99 / median of completion lengths is printed (the tail this bench is about; >= 4 wanted). The raw engine also
runs the same requests batch by batch (`--batch-size` prompts per `generate` call: how the pipeline generated
before it kept its engines fed), for comparison. Prints tokens/s of each for --repeats interleaved raw/pipeline
pairs; the LAST line ends with the median of the per-pair ratios pipeline / raw (goal >= 0.95).

Engine start-up is timed separately and left out of every rate. The raw engine runs in a subprocess with the
same thread count and in-process engine core as the pipeline's actor, and exits before the pipeline's engine
starts (one engine in memory at a time)."""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SHORT = "What is {a} + {b}? Reply with the number only."
LONG = "Write a long, detailed story about a {thing}, with many chapters."
THINGS = ["lighthouse keeper", "river", "clockmaker", "dragon", "mountain village", "starship", "garden", "library"]


def load_prompts(args) -> list[dict]:
    rng = random.Random(args.seed)
    n = args.batches * args.max_num_seqs
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


def raw(args) -> dict:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # as the pipeline's CPU actor does
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from vllm import LLM, SamplingParams

    from distill.models import resolve_model
    from distill.teachers.vllm import CPU_ENGINE_DEFAULTS

    t0 = time.time()
    llm = LLM(model=resolve_model(args.model), seed=args.seed, **{**CPU_ENGINE_DEFAULTS, **engine_kwargs(args)})
    start = time.time() - t0
    tok = llm.get_tokenizer()
    texts = [tok.apply_chat_template([{"role": "user", "content": p["prompt"]}], tokenize=False,
                                     add_generation_prompt=True) for p in load_prompts(args)]
    params = SamplingParams(n=1, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens)
    t0 = time.time()
    outs = llm.generate(texts, params, use_tqdm=False)
    secs = time.time() - t0
    lengths = [len(c.token_ids) for o in outs for c in o.outputs]
    res = {"tokens": sum(lengths), "seconds": secs, "start_seconds": start, "lengths": lengths}
    if args.batch_by_batch:
        t0 = time.time()
        outs = [o for lo in range(0, len(texts), args.batch_size)
                for o in llm.generate(texts[lo:lo + args.batch_size], params, use_tqdm=False)]
        res["batched"] = {"tokens": sum(len(c.token_ids) for o in outs for c in o.outputs),
                          "seconds": time.time() - t0}
    return res


def pipeline(args) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distill.pipeline.generate import generate_stage
    from distill.spec import Sampling, VLLMTeacher

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "prompts").mkdir()
        (tmp / "gen").mkdir()
        pq.write_table(pa.Table.from_pylist(load_prompts(args)), tmp / "prompts" / "prompts.parquet")
        teacher = VLLMTeacher(model=args.model, num_cpus=args.num_cpus, batch_size=args.batch_size,
                              engine=engine_kwargs(args))
        sampling = Sampling(n=1, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens)
        os.environ.setdefault("DISTILL_PROGRESS", "0")
        st = generate_stage(tmp / "prompts", tmp / "gen", teacher, sampling, args.seed)
        lengths = [n for f in sorted((tmp / "gen").glob("*.parquet"))
                   for n in pq.read_table(f, columns=["completion_tokens"]).column(0).to_pylist()]
    return {"tokens": st["completion_tokens"], "seconds": st["generation_seconds"], "lengths": lengths,
            "start_seconds": st["engine_start_seconds"], "wall_seconds": st["wall_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--max-num-seqs", type=int, default=8, help="the engine's batch (vLLM max_num_seqs)")
    ap.add_argument("--batches", type=int, default=8, help="engine batches' worth of requests")
    ap.add_argument("--long-every", type=int, default=8, help="one prompt in this many asks for a long text")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--max-model-len", type=int, default=512)
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-cpus", type=float, default=float(os.cpu_count() or 1))
    ap.add_argument("--batch-size", type=int, help="prompts per shard, and per call of the old batch-by-batch "
                                                   "run (default: max_num_seqs)")
    ap.add_argument("--engine", default="{}", help="more vllm.LLM kwargs as JSON")
    ap.add_argument("--only", choices=["raw"], help=argparse.SUPPRESS)
    ap.add_argument("--batch-by-batch", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=3, help="raw/pipeline pairs, interleaved; medians are quoted")
    args = ap.parse_args()
    args.batch_size = args.batch_size or args.max_num_seqs
    if args.only == "raw":
        print("RESULT " + json.dumps(raw(args)), flush=True)
        return
    n = args.batches * args.max_num_seqs
    print(f"model {args.model}, {n} prompts ({args.batches} batches of max_num_seqs {args.max_num_seqs}; 1 in "
          f"{args.long_every} asks for a long text), temperature {args.temperature}, top_p {args.top_p}, max_tokens {args.max_tokens}, "
          f"shards of {args.batch_size}", flush=True)
    raw_tps, pipe_tps, ratios = [], [], []
    for i in range(args.repeats):  # interleaved: machine noise hits both alike
        r, p = raw_run(args, batch_by_batch=i == 0), pipeline(args)
        r_tps, p_tps = r["tokens"] / r["seconds"], p["tokens"] / p["seconds"]
        raw_tps.append(r_tps), pipe_tps.append(p_tps), ratios.append(p_tps / r_tps)
        (rm, r99), (pm, p99) = tail(r["lengths"]), tail(p["lengths"])
        print(f"[{i + 1}/{args.repeats}] completion tokens: raw median {rm:.0f} p99 {r99:.0f} (p99/median "
              f"{r99 / rm:.1f}), pipeline median {pm:.0f} p99 {p99:.0f} (p99/median {p99 / pm:.1f})", flush=True)
        if "batched" in r:
            b = r["batched"]
            print(f"[{i + 1}/{args.repeats}] old batch-by-batch ({args.batch_size} prompts per generate call): "
                  f"{b['tokens']} tokens in {b['seconds']:.2f}s = {b['tokens'] / b['seconds']:.1f} tok/s "
                  f"(ratio to raw {b['tokens'] / b['seconds'] / r_tps:.3f})", flush=True)
        print(f"[{i + 1}/{args.repeats}] raw {r['tokens']} tokens in {r['seconds']:.2f}s = {r_tps:.1f} tok/s "
              f"(engine start {r['start_seconds']:.1f}s); pipeline {p['tokens']} tokens in {p['seconds']:.2f}s = "
              f"{p_tps:.1f} tok/s (engine start {p['start_seconds']:.1f}s, stage wall {p['wall_seconds']:.1f}s); "
              f"ratio {p_tps / r_tps:.3f}", flush=True)
    med = statistics.median
    print(f"raw vllm.LLM.generate: {med(raw_tps):.1f} tokens/s (median of {args.repeats})")
    print(f"pipeline:              {med(pipe_tps):.1f} tokens/s (median of {args.repeats})")
    print(f"per-pair ratios {', '.join(f'{x:.3f}' for x in ratios)} (goal >= 0.95); "
          f"pipeline/raw tokens/s, median of {args.repeats}: {med(ratios):.3f}")


def raw_run(args, batch_by_batch: bool) -> dict:
    """The raw engine in its own process, with the thread count Ray gives the pipeline's actor."""
    env = {**os.environ, "OMP_NUM_THREADS": str(int(args.num_cpus))}
    extra = ["--batch-by-batch"] if batch_by_batch else []
    proc = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", "raw", *extra], env=env,
                          capture_output=True, text=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not line:
        sys.exit(proc.stdout[-2000:] + proc.stderr[-4000:])
    return json.loads(line[-1][7:])


if __name__ == "__main__":
    main()
