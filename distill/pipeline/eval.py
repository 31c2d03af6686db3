"""Stage 6, eval: score a model on benchmark problems with the pipeline's own verifier.

R1's protocol: sample k answers per problem (temperature 0.6, top-p 0.95 by default), pass@1 is the mean
correctness over the k samples, averaged over problems; the standard error is over problems. The same
generation path as the teacher (vLLM actors in Ray) and the same `verify.judge` as the filter are used, so a
score means what "kept" means.

Writes `samples.parquet` (benchmark, problem_id, sample_index, response, finish_reason, extracted, correct,
reason) and `scores.json` ({model, benchmarks: {name: {pass@1, stderr, problems, k, format_failures}},
decoding}, and for a student evaluated after its base, `vs_base`: {model, benchmarks: {name: {difference,
paired_stderr, problems, k, exceeds_2se}}}, the paired comparison of `distill.stats` over the same problems).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distill import schemas
from distill.pipeline.generate import generate_table
from distill.sources import source_rows
from distill.spec import DEFAULT_TEMPLATE, Eval, Sampling, Source, Teacher, student_engine
from distill.stats import format_failure_rate, paired_difference, pass_at_1
from distill.verify import judge_many


def benchmark_prompts(ev: Eval) -> pa.Table:
    rows = []
    for bench in ev.benchmarks:
        for i, row in enumerate(source_rows(Source(dataset=bench.name, limit=bench.problems))):
            rows.append({"benchmark": bench.name, "problem_id": f"{bench.name}-{i}", "answer": row["answer"],
                         "prompt": DEFAULT_TEMPLATE.replace("{problem}", row["problem"])})
    return pa.Table.from_pylist(rows)


def correct_by_problem(samples: pa.Table) -> dict[str, dict[str, list[bool]]]:
    """{benchmark: {problem_id: [correct per sample, in sample order]}} from a samples table."""
    out: dict[str, dict[str, list[bool]]] = {}
    rows = sorted(samples.select(["benchmark", "problem_id", "sample_index", "correct"]).to_pylist(),
                  key=lambda r: (r["problem_id"], r["sample_index"]))
    for r in rows:
        out.setdefault(r["benchmark"], {}).setdefault(r["problem_id"], []).append(bool(r["correct"]))
    return out


def compare_to_base(samples: pa.Table, base_dir: Path) -> dict:
    """student − base per benchmark, paired over the problems both answered (the base's `eval/` directory)."""
    base = correct_by_problem(pq.read_table(base_dir / "samples.parquet"))
    label = json.loads((base_dir / "scores.json").read_text())["model"]
    mine = correct_by_problem(samples)
    return {"model": label, "benchmarks": {
        name: {k: round(v, 4) if isinstance(v, float) else v for k, v in paired_difference(base[name], probs).items()}
        for name, probs in mine.items() if name in base}}


def evaluate_model(model: str, label: str, ev: Eval, placement: Teacher, seed: int, out_dir: Path,
                   base_dir: Path | None = None) -> dict:
    prompts = benchmark_prompts(ev)
    sampling = Sampling(n=ev.k, temperature=ev.temperature, top_p=ev.top_p, max_tokens=ev.max_tokens)
    # Students are always served by vLLM here (the teacher's placement when it is a vLLM teacher).
    engine = student_engine(placement).model_copy(update={"model": model, "system_prompt": None, "replicas": 1})
    table = generate_table(prompts, model, sampling, engine, seed)
    rows = table.to_pylist()
    verdicts = judge_many([(r["response"], r["answer"], r["finish_reason"], False) for r in rows], workers=1)
    samples = pa.Table.from_pylist([
        {"benchmark": r["benchmark"], "problem_id": r["problem_id"], "sample_index": r["sample_index"],
         "response": r["response"], "finish_reason": r["finish_reason"], "extracted": v.extracted,
         "correct": v.correct, "reason": v.reason}
        for r, v in zip(rows, verdicts)
    ], schema=schemas.EVAL_SAMPLES)
    pq.write_table(samples, out_dir / "samples.parquet")
    by_bench = correct_by_problem(samples)
    outcomes: dict[str, list] = {}
    for r, v in zip(rows, verdicts):
        outcomes.setdefault(r["benchmark"], []).append((v.reason, r["finish_reason"], bool(v.correct)))
    scores = {
        "model": label,
        "benchmarks": {},
        "decoding": {"k": ev.k, "temperature": ev.temperature, "top_p": ev.top_p, "max_tokens": ev.max_tokens,
                     "seed": seed, "prompt_template": DEFAULT_TEMPLATE},
    }
    for bench in ev.benchmarks:
        problems = by_bench.get(bench.name, {})
        mean, stderr = pass_at_1(problems) if problems else (0.0, 0.0)
        failures = format_failure_rate(outcomes.get(bench.name, []))  # no answer or cut off: form, not value
        scores["benchmarks"][bench.name] = {"pass@1": round(mean, 4), "stderr": round(stderr, 4),
                                            "problems": len(problems), "k": ev.k, "format_failures": round(failures, 4)}
    if base_dir is not None:
        scores["vs_base"] = compare_to_base(samples, base_dir)
    (out_dir / "scores.json").write_text(json.dumps(scores, indent=2))
    return scores

