"""Generation throughput: raw `vllm.LLM.generate` versus the pipeline (`distill.pipeline.generate.generate_stage`: Ray
actor, shards, Parquet commits), same engine settings, same prompts, same sampling, in one run.

    .venv/bin/python bench/generation.py --model smollm2-135m --prompts 64 --max-tokens 128 --repeats 3

Prints completion tokens/s of each and the ratio pipeline / raw (target >= 0.97) for each of --repeats
interleaved pairs, then the medians. Engine start-up is timed
separately and left out of both rates. The raw engine runs in a subprocess with the same thread count and
in-process engine core as the pipeline's actor, and exits before the pipeline's engine starts (one engine
in memory at a time)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def load_prompts(n: int) -> list[dict]:
    from distill.spec import DEFAULT_TEMPLATE

    rows = [json.loads(x) for x in (REPO / "datasets_spec/data/arithmetic.jsonl").read_text().splitlines()]
    rows = (rows * (n // len(rows) + 1))[:n]
    return [{"problem_id": f"{r['id']}-{i}", "answer": r["answer"],
             "prompt": DEFAULT_TEMPLATE.replace("{problem}", r["question"])} for i, r in enumerate(rows)]


def raw(args) -> dict:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # as the pipeline's CPU actor does
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from vllm import LLM, SamplingParams

    from distill.teachers.vllm import CPU_ENGINE_DEFAULTS
    from distill.models import resolve_model

    t0 = time.time()
    llm = LLM(model=resolve_model(args.model), seed=args.seed, **{**CPU_ENGINE_DEFAULTS, **json.loads(args.engine)})
    start = time.time() - t0
    tok = llm.get_tokenizer()
    texts = [tok.apply_chat_template([{"role": "user", "content": p["prompt"]}], tokenize=False,
                                     add_generation_prompt=True) for p in load_prompts(args.prompts)]
    params = SamplingParams(n=args.n, temperature=args.temperature, top_p=0.95, max_tokens=args.max_tokens)
    t0 = time.time()
    outs = llm.generate(texts, params, use_tqdm=False)
    secs = time.time() - t0
    tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
    return {"tokens": tokens, "seconds": secs, "start_seconds": start}


def pipeline(args) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distill.pipeline.generate import generate_stage
    from distill.spec import Sampling, VLLMTeacher

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "prompts").mkdir()
        (tmp / "gen").mkdir()
        pq.write_table(pa.Table.from_pylist(load_prompts(args.prompts)), tmp / "prompts" / "prompts.parquet")
        teacher = VLLMTeacher(model=args.model, num_cpus=args.num_cpus, batch_size=args.batch_size,
                          engine=json.loads(args.engine))
        sampling = Sampling(n=args.n, temperature=args.temperature, top_p=0.95, max_tokens=args.max_tokens)
        os.environ.setdefault("DISTILL_PROGRESS", "0")
        st = generate_stage(tmp / "prompts", tmp / "gen", teacher, sampling, args.seed)
    return {"tokens": st["completion_tokens"], "seconds": st["generation_seconds"],
            "start_seconds": st["engine_start_seconds"], "wall_seconds": st["wall_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-cpus", type=float, default=float(os.cpu_count() or 1))
    ap.add_argument("--batch-size", type=int, default=64, help="prompts per engine call (pipeline)")
    ap.add_argument("--engine", default='{"max_model_len": 512, "enforce_eager": true, '
                                        '"gpu_memory_utilization": 0.08}', help="vllm.LLM kwargs as JSON")
    ap.add_argument("--only", choices=["raw", "pipeline"], help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=3, help="raw/pipeline pairs, interleaved; medians are quoted")
    args = ap.parse_args()
    if args.only == "raw":
        print("RESULT " + json.dumps(raw(args)), flush=True)
        return
    print(f"model {args.model}, {args.prompts} prompts x n={args.n}, max_tokens {args.max_tokens}, "
          f"engine {args.engine}")
    raw_tps, pipe_tps, ratios = [], [], []
    for i in range(args.repeats):  # interleaved: machine noise hits both alike
        r, p = raw_run(args), pipeline(args)
        r_tps, p_tps = r["tokens"] / r["seconds"], p["tokens"] / p["seconds"]
        raw_tps.append(r_tps), pipe_tps.append(p_tps), ratios.append(p_tps / r_tps)
        print(f"[{i + 1}/{args.repeats}] raw {r['tokens']} tokens in {r['seconds']:.2f}s = {r_tps:.1f} tok/s "
              f"(engine start {r['start_seconds']:.1f}s); pipeline {p['tokens']} tokens in {p['seconds']:.2f}s = "
              f"{p_tps:.1f} tok/s (engine start {p['start_seconds']:.1f}s, stage wall {p['wall_seconds']:.1f}s); "
              f"ratio {p_tps / r_tps:.3f}", flush=True)
    med = statistics.median
    print(f"raw vllm.LLM.generate: {med(raw_tps):.1f} tokens/s (median of {args.repeats})")
    print(f"pipeline:              {med(pipe_tps):.1f} tokens/s (median of {args.repeats})")
    print(f"ratio pipeline/raw: {med(ratios):.3f} median of per-pair ratios "
          f"{', '.join(f'{x:.3f}' for x in ratios)} (target >= 0.97)")


def raw_run(args) -> dict:
    """The raw engine in its own process, with the thread count Ray gives the pipeline's actor."""
    env = {**os.environ, "OMP_NUM_THREADS": str(int(args.num_cpus))}
    proc = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", "raw"], env=env,
                          capture_output=True, text=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not line:
        sys.exit(proc.stdout[-2000:] + proc.stderr[-4000:])
    return json.loads(line[-1][7:])

if __name__ == "__main__":
    main()
