"""Stage 6, eval: score a model on benchmark problems with the pipeline's own verifier.

R1's protocol: sample k answers per problem (temperature 0.6, top-p 0.95 by default), pass@1 is the mean
correctness over the k samples, averaged over problems; the standard error is over problems. The same
generation path as the teacher (vLLM actors in Ray) and the same `verify.judge` as the filter are used, so a
score means what "kept" means.

Writes `samples.parquet` (benchmark, problem_id, sample_index, response, finish_reason, extracted, correct,
reason) and `scores.json` ({model, benchmarks: {name: {pass@1, stderr, problems, k}}, decoding}).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distill import schemas
from distill.pipeline.generate import generate_table
from distill.sources import source_rows
from distill.spec import DEFAULT_TEMPLATE, Eval, Sampling, Source, VLLMTeacher
from distill.verify import judge_many


def benchmark_prompts(ev: Eval) -> pa.Table:
    rows = []
    for bench in ev.benchmarks:
        for i, row in enumerate(source_rows(Source(dataset=bench.name, limit=bench.problems))):
            rows.append({"benchmark": bench.name, "problem_id": f"{bench.name}-{i}", "answer": row["answer"],
                         "prompt": DEFAULT_TEMPLATE.replace("{problem}", row["problem"])})
    return pa.Table.from_pylist(rows)


def pass_at_1(correct_by_problem: dict[str, list[bool]]) -> tuple[float, float]:
    """Mean over problems of the fraction of correct samples, and its standard error over problems."""
    per = [sum(c) / len(c) for c in correct_by_problem.values()]
    n = len(per)
    mean = sum(per) / n
    var = sum((p - mean) ** 2 for p in per) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


def evaluate_model(model: str, label: str, ev: Eval, placement: VLLMTeacher, seed: int, out_dir: Path) -> dict:
    """`placement`: eval's own engines (`spec.eval_placement`), never the teacher's."""
    prompts = benchmark_prompts(ev)
    sampling = Sampling(n=ev.k, temperature=ev.temperature, top_p=ev.top_p, max_tokens=ev.max_tokens)
    engine = placement.model_copy(update={"model": model, "system_prompt": None})
    table = generate_table(prompts, model, sampling, engine, seed)
    rows = table.to_pylist()
    verdicts = judge_many([(r["response"], r["answer"], r["finish_reason"], False) for r in rows], workers=1)
    by_bench: dict[str, dict[str, list[bool]]] = {}
    for r, v in zip(rows, verdicts):
        by_bench.setdefault(r["benchmark"], {}).setdefault(r["problem_id"], []).append(v.correct)
    samples = pa.Table.from_pylist([
        {"benchmark": r["benchmark"], "problem_id": r["problem_id"], "sample_index": r["sample_index"],
         "response": r["response"], "finish_reason": r["finish_reason"], "extracted": v.extracted,
         "correct": v.correct, "reason": v.reason}
        for r, v in zip(rows, verdicts)
    ], schema=schemas.EVAL_SAMPLES)
    pq.write_table(samples, out_dir / "samples.parquet")
    scores = {
        "model": label,
        "benchmarks": {},
        "decoding": {"k": ev.k, "temperature": ev.temperature, "top_p": ev.top_p, "max_tokens": ev.max_tokens,
                     "seed": seed, "prompt_template": DEFAULT_TEMPLATE},
    }
    for bench in ev.benchmarks:
        problems = by_bench.get(bench.name, {})
        mean, stderr = pass_at_1(problems) if problems else (0.0, 0.0)
        scores["benchmarks"][bench.name] = {"pass@1": round(mean, 4), "stderr": round(stderr, 4),
                                            "problems": len(problems), "k": ev.k}
    (out_dir / "scores.json").write_text(json.dumps(scores, indent=2))
    return scores

