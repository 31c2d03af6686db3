"""800k synthetic traces through the verify & filter stage (verify + filters + dedup + decontamination),
streamed: wall time and peak memory.

    .venv/bin/python bench/filter_scale.py [--traces 800000] [--chars 8000] [--workers 2]

Synthetic traces are written first (not timed) as Parquet parts shaped like the generate stage's output:
problems of ~60 random words (4 samples each), a `<think>` block of random sentences from MATH-500 and GSM8K
solutions (lognormal length around --chars characters), then a boxed answer. Injected at known rates, so the
funnel can be checked against them: 3% truncated, 0.5% generation loops, 0.5% language mixing, 1% exact and
1% near-duplicate traces, 0.5% of problems copied from an evaluated benchmark, 20% wrong answers (a tenth of all
answers are closed forms such as \\sqrt{k} that the exact fast path cannot settle, so the math-verify checker
processes get real work).

Then `verify_stage` runs once, as `distill run` runs it (decontaminating against all four benchmarks), and the
bench prints the wall time, traces/s, the peak resident memory of this process, of the largest worker, and of
the whole process tree (sampled every 0.2 s with psutil), and the funnel next to the injected counts.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from process_tree import tree  # bench/ is the script's own folder, first on sys.path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parent.parent / "datasets_spec" / "benchmarks"
RATES = {"truncated": 0.03, "repetition": 0.005, "language_mixing": 0.005, "duplicate_trace": 0.01,
         "near_duplicate_trace": 0.01, "contaminated_problem": 0.005, "wrong": 0.2}


def _corpus() -> tuple[list[str], list[str], list[str]]:
    texts, problems = [], []
    for name in ("math500.jsonl", "gsm8k_test.jsonl"):
        for line in (BENCH / name).open():
            r = json.loads(line)
            texts.append(r.get("solution") or r["answer"])
            problems.append(r.get("problem") or r["question"])
    sentences = [s.strip() for t in texts for s in re.split(r"(?<=[.!?])\s+", t) if len(s.strip()) > 20]
    words = sorted({w for t in texts for w in re.findall(r"[A-Za-z]{3,}", t)})
    return sentences, words, problems


def write_traces(out: Path, n: int, chars: int, seed: int = 0, part_rows: int = 20_000) -> dict:
    """Write n synthetic traces as Parquet parts; return the injected counts."""
    rng = np.random.default_rng(seed)
    py = random.Random(seed)
    sentences, words, bench_problems = _corpus()
    paragraphs = [" ".join(py.choice(sentences) for _ in range(4)) for _ in range(20_000)]
    par_len = np.array([len(p) for p in paragraphs])
    mean_par = float(par_len.mean())
    injected = {k: 0 for k in RATES}
    schema = pa.schema([("problem_id", pa.string()), ("problem", pa.string()), ("answer", pa.string()),
                        ("answer_format", pa.string()), ("prompt", pa.string()), ("sample_index", pa.int64()),
                        ("response", pa.string()), ("finish_reason", pa.string()), ("completion_tokens", pa.int64())])
    rows: dict[str, list] = {f.name: [] for f in schema}
    part = 0
    last_trace: dict[int, str] = {}

    def flush():
        nonlocal part, rows
        if rows["response"]:
            pq.write_table(pa.table(rows, schema=schema), out / f"shard-{part:06d}.parquet", compression="zstd")
            part += 1
            rows = {f.name: [] for f in schema}

    for i in range(n):
        p = i // 4
        s = i % 4
        if s == 0:
            if rng.random() < RATES["contaminated_problem"]:
                problem = py.choice(bench_problems)
                contaminated = True
            else:
                problem = f"Problem {p}. " + " ".join(py.choice(words) for _ in range(60)) + "?"
                contaminated = False
            kind = rng.random()
            answer = (str(p) if kind < 0.7 else f"\\frac{{{p + 1}}}{{{p % 97 + 2}}}" if kind < 0.9
                      else f"\\sqrt{{{p % 1000 + 2}}}")
            cur = (problem, answer, contaminated)
        problem, answer, contaminated = cur
        if contaminated:
            injected["contaminated_problem"] += 1
        target = max(500, int(rng.lognormal(np.log(chars), 0.5)))
        k = max(1, int(target / mean_par))
        body = " ".join(paragraphs[j] for j in rng.integers(0, len(paragraphs), k))
        finish = "stop"
        final = answer
        r = rng.random()
        c = 0.0
        if r < (c := c + RATES["truncated"]):
            finish = "length"
            injected["truncated"] += not contaminated
        elif r < (c := c + RATES["repetition"]):
            body = body[:2000] + (" " + paragraphs[int(rng.integers(len(paragraphs)))]) * 12
            injected["repetition"] += not contaminated
        elif r < (c := c + RATES["language_mixing"]):
            body = body[: len(body) // 2] + " 所以我们需要再检查一遍这个结果。 " + body[len(body) // 2 :]
            injected["language_mixing"] += not contaminated
        elif s > 0 and r < (c := c + RATES["duplicate_trace"]) and p in last_trace:
            body = last_trace[p]
            injected["duplicate_trace"] += not contaminated
        elif s > 0 and r < (c := c + RATES["near_duplicate_trace"]) and p in last_trace:
            prev = last_trace[p]
            body = prev[: -200] + " " + paragraphs[int(rng.integers(len(paragraphs)))][:200]
            injected["near_duplicate_trace"] += not contaminated
        elif rng.random() < RATES["wrong"]:
            final = f"{answer}+1" if not answer.isdigit() else str(int(answer) + 1)
            injected["wrong"] += not contaminated
        last_trace[p] = body
        if s == 3:
            last_trace.pop(p, None)
        response = f"<think>\n{body}\n</think>\n\nThe final answer is $\\boxed{{{final}}}$."
        if finish == "length":
            response = response[: len(response) * 3 // 4]
        for key, val in (("problem_id", f"syn-{p}"), ("problem", problem), ("answer", answer),
                         ("answer_format", "plain"), ("prompt", problem), ("sample_index", s),
                         ("response", response), ("finish_reason", finish), ("completion_tokens", len(response) // 4)):
            rows[key].append(val)
        if len(rows["response"]) >= part_rows:
            flush()
    flush()
    return injected


class TreeRSS:
    """Peak resident memory of this process plus all its descendants, sampled."""

    def __init__(self, every: float = 0.2):
        import psutil

        self.proc = psutil.Process()
        self.peak = 0
        self.per_process: dict[int, int] = {}  # pid -> its own peak RSS
        self.every = every
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in tree(self.proc):
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                self.per_process[p.pid] = max(self.per_process.get(p.pid, 0), rss)
            self.peak = max(self.peak, total)
            self._stop.wait(self.every)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces", type=int, default=800_000)
    ap.add_argument("--chars", type=int, default=8000, help="median characters of a trace's reasoning")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", help="work directory (default: a temporary one, removed after)")
    args = ap.parse_args()
    from distill.spec import Benchmark, Filter
    from distill.verify import verify_stage

    work = Path(args.dir or tempfile.mkdtemp(prefix="distill-filter-scale-"))
    gen, out = work / "generate", work / "verify"
    gen.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    # generated in a child process, so that this process's memory is the stage's alone
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        injected = ex.submit(write_traces, gen, args.traces, args.chars).result()
    size = sum(f.stat().st_size for f in gen.glob("*.parquet"))
    print(f"wrote {args.traces:,} synthetic traces ({size / 2**30:.2f} GiB of Parquet, zstd) in "
          f"{time.monotonic() - t0:.0f} s", flush=True)
    benchmarks = [Benchmark(name=b) for b in ("math500", "gsm8k_test", "aime24", "amc23")]
    with TreeRSS() as rss:
        t0 = time.monotonic()
        cpu0 = time.process_time()
        stats = verify_stage(gen, out, Filter(), workers=args.workers, benchmarks=benchmarks)
        wall = time.monotonic() - t0
    self_peak = rss.per_process.get(os.getpid(), 0) / 2**20
    child_peak = max([v for k, v in rss.per_process.items() if k != os.getpid()] or [0]) / 2**20
    print(f"verify_stage: {stats['generated']:,} traces in {wall / 60:.1f} min wall on {args.workers} workers "
          f"({stats['generated'] / wall:,.0f} traces/s; os.cpu_count()={os.cpu_count()}; this process "
          f"{time.process_time() - cpu0:.0f} CPU-s); phases {stats['seconds']}")
    print(f"peak RSS: whole process tree {rss.peak / 2**30:.2f} GiB (sampled); this process {self_peak / 1024:.2f} GiB; "
          f"largest worker {child_peak / 1024:.2f} GiB")
    print(f"kept {stats['kept']:,} of {stats['generated']:,}; checker: {stats['checked']}")
    print("funnel:")
    for step in stats["funnel"]:
        dropped = ", ".join(f"{k} {v:,}" for k, v in step.get("dropped", {}).items())
        print(f"  {step['step']:16} remaining {step['remaining']:>9,}  {dropped}")
    print("injected: " + ", ".join(f"{k} {v:,}" for k, v in injected.items()))
    print("(injected duplicates are upper bounds: a copy of a trace that was itself dropped is the first kept one;"
          " wrong answers also land in unverifiable when the checker cannot decide)")
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
