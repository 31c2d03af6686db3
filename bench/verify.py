"""Verifier throughput: math-verify on whole traces versus distill's verifier on the same traces, one run.

    .venv/bin/python bench/verify.py [--rows 3000] [--think-chars 12000] [--repeats 5]

Traces are built from MATH-500 and GSM8K reference solutions (`datasets_spec/benchmarks`, copies of
../shared/benchmarks): a `<think>` block of reasoning (the solution repeated to about --think-chars characters,
R1-length by default), then a final answer, correct for 3 traces in 4 (else the answer plus one). The baseline
is what most pipelines do: `math_verify.parse` on the whole response, then `verify`, in one process.
distill's verifier runs as the pipeline runs it (`judge_many`, workers=1: this process plus one checker child,
which only works while this process waits).

Both are timed on the same traces, on one core: wall-clock and CPU seconds (this process plus the checker
child's), median of --repeats runs each. Throughput is per CPU-second (the figure that does not depend on other
load on the machine) and per wall-clock second. Verdicts are compared row by row on the baseline's rows; every
disagreement is printed with both verdicts, so it can be judged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "datasets_spec" / "benchmarks"


def build(rows: int, think_chars: int, seed: int = 0) -> list[tuple[str, str]]:
    from distill.verify import reference_answer

    src = [(json.loads(x)["solution"], json.loads(x)["answer"]) for x in (BENCH / "math500.jsonl").open()]
    src += [(json.loads(x)["answer"], reference_answer(json.loads(x)["answer"], "gsm8k"))
            for x in (BENCH / "gsm8k_test.jsonl").open()]
    rng = random.Random(seed)
    rng.shuffle(src)
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


def _checker_cpu() -> float:
    from distill.verify import checker

    return sum(p.cpu_seconds() for p in checker._POOLS.values())


def timed(fn, traces, repeats, with_checker=False):
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        c0 = time.process_time() + (_checker_cpu() if with_checker else 0.0)
        t0 = time.perf_counter()
        result = fn(traces)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() + (_checker_cpu() if with_checker else 0.0) - c0)
    return statistics.median(walls), statistics.median(cpus), result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--baseline-rows", type=int, default=300, help="the baseline is slow: time it on this many")
    ap.add_argument("--think-chars", type=int, default=12000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # math-verify logs a warning per timed-out/failed parse
    traces = build(args.rows, args.think_chars)
    base_rows = traces[: args.baseline_rows]
    from distill.verify import checker

    checker.pool(1).check_many([("x+1", "x")])  # start the checker child: a one-off cost of a run, not per trace
    tb, cb, vb = timed(baseline, base_rows, args.repeats)
    to, co, vo = timed(ours, traces, args.repeats, with_checker=True)
    n_b, n_o = len(base_rows), len(traces)
    agree = sum(a == b for a, b in zip(vb, vo))
    print(f"traces: {n_o} built from MATH-500 + GSM8K solutions, ~{args.think_chars:,} chars of reasoning each; "
          f"baseline timed on the first {n_b}; median of {args.repeats} runs; 1 core (os.cpu_count()={os.cpu_count()})")
    print(f"{'':34}{'traces/CPU-s':>14}{'traces/wall-s':>15}")
    print(f"{'math-verify on whole traces':34}{n_b / cb:14.1f}{n_b / tb:15.1f}")
    print(f"{'distill verifier':34}{n_o / co:14.1f}{n_o / to:15.1f}")
    print(f"ratio (per CPU-second): {(n_o / co) / (n_b / cb):.1f}x   (per wall-second: {(n_o / to) / (n_b / tb):.1f}x)")
    print(f"same verdicts on {agree}/{n_b} baseline rows ({100 * agree / n_b:.1f}%)")
    if agree < n_b:
        from distill.verify import judge

        for (resp, gold), a, b in zip(base_rows, vb, vo):
            if a != b:
                v = judge(resp, gold, "stop")
                print(f"  differs: reference {gold!r}: math-verify {a}, distill {b} ({v.reason}, {v.detail}, "
                      f"answer {v.extracted!r})")


if __name__ == "__main__":
    main()
