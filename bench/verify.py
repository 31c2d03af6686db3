"""Verifier throughput: math-verify on whole traces versus distill's verifier on the same traces, one run.

    .venv/bin/python bench/verify.py [--rows 2000] [--think-chars 12000]

Traces are built from MATH-500 and GSM8K reference solutions: a `<think>` block of reasoning (the solution
repeated to about --think-chars characters, R1-length by default), then a final answer, correct for 3 traces
in 4. The baseline is what most pipelines do: `math_verify.parse` on the whole response, then `verify`.
Prints traces/s per core of each, the ratio, and how often the two agree.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "datasets_spec" / "benchmarks"


def build(rows: int, think_chars: int) -> list[tuple[str, str]]:
    from distill.verify import reference_answer

    src = [(json.loads(x)["solution"], json.loads(x)["answer"]) for x in (BENCH / "math500.jsonl").open()]
    src += [(json.loads(x)["answer"], reference_answer(json.loads(x)["answer"], "gsm8k"))
            for x in (BENCH / "gsm8k_test.jsonl").open()]
    rng = random.Random(0)
    out = []
    for i in range(rows):
        solution, answer = src[i % len(src)]
        reasoning = (solution + "\n") * max(1, think_chars // max(1, len(solution)))
        final = answer if rng.random() < 0.75 else f"{answer}+1"
        out.append((f"<think>\n{reasoning[:think_chars]}\n</think>\n\nThe final answer is $\\boxed{{{final}}}$.", answer))
    return out


def baseline(traces):
    from math_verify import parse, verify

    return [bool(verify(parse(f"${gold}$"), parse(resp))) for resp, gold in traces]


def ours(traces):
    from distill.verify import judge_many

    return [v.correct for v in judge_many([(r, g, "stop", True) for r, g in traces], workers=1)]


def timed(fn, traces, repeats):
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn(traces)
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--think-chars", type=int, default=12000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    traces = build(args.rows, args.think_chars)
    base_rows = traces[: max(50, args.rows // 10)]  # the baseline is slow on long traces: time a slice of them
    tb, vb = timed(baseline, base_rows, args.repeats)
    to, vo = timed(ours, traces, args.repeats)
    agree = sum(a == b for a, b in zip(vb, vo)) / len(vb)
    print(f"traces: {args.rows} (baseline timed on {len(base_rows)}), ~{args.think_chars} chars of reasoning each, 1 core")
    print(f"math-verify on whole traces: {len(base_rows) / tb:9.1f} traces/s (median of {args.repeats})")
    print(f"distill verifier:            {len(traces) / to:9.1f} traces/s (median of {args.repeats})")
    print(f"ratio: {(len(traces) / to) / (len(base_rows) / tb):.1f}x; verdicts agree on {100 * agree:.1f}% of the baseline's rows")
