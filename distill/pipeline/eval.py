"""Stage 6, eval: score a model on benchmark problems with the pipeline's own verifier.

R1's protocol: sample k answers per problem (temperature 0.6, top-p 0.95 by default), pass@1 is the mean
correctness over the k samples, averaged over problems; the standard error is over problems. The same
generation path as the teacher (vLLM actors in Ray) and the same `verify.judge` as the filter are used, so a
score means what "kept" means.

Writes `samples.parquet` (benchmark, problem_id, sample_index, response, finish_reason, extracted, correct,
reason) and `scores.json` ({model, benchmarks: {name: {pass@1, stderr, problems, k, max_tokens, truncation_rate,
format_failures}}, decoding}, and for a student evaluated after its base, `vs_base`: {model, benchmarks: {name:
{difference, paired_stderr, problems, k, exceeds_2se}}}, the paired comparison of `distill.stats` over the same
problems). Each benchmark may set its own `k` and `max_tokens` (R1/open-r1: 64 samples for AIME, 4 for
MATH-500); a sample cut off at max_tokens counts as wrong, and each benchmark's truncation rate is reported.

Samples are generated as generate's traces are (`run_shards` into a shard directory: shards committed
atomically, a re-run generates only the missing ones), one shard set per distinct (k, max_tokens), all on one
engine start, and judged a shard at a time with the filter's workers and limits.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from distill import schemas
from distill.shards import SHARD_GLOB, run_shards
from distill.sources import source_rows
from distill.spec import DEFAULT_TEMPLATE, Benchmark, Eval, Filter, Sampling, Source, VLLMTeacher
from distill.stats import format_failure_rate, paired_difference, pass_at_1
from distill.teachers import make_backend
from distill.teachers.base import sampling_dict
from distill.verify import judge_many


def benchmark_prompts(ev: Eval, benchmarks: list[Benchmark] | None = None) -> pa.Table:
    rows = []
    for bench in ev.benchmarks if benchmarks is None else benchmarks:
        for i, row in enumerate(source_rows(Source(dataset=bench.name, limit=bench.problems))):
            rows.append({"benchmark": bench.name, "problem_id": f"{bench.name}-{i}", "answer": row["answer"],
                         "prompt": DEFAULT_TEMPLATE.replace("{problem}", row["problem"])})
    return pa.Table.from_pylist(rows)


def correct_by_problem(samples: pa.Table) -> dict[str, dict[str, list[bool]]]:
    """{benchmark: {problem_id: [correct per sample, in sample order]}} from a samples table; a sample cut off at
    max_tokens is wrong, as in `benchmark_scores`."""
    out: dict[str, dict[str, list[bool]]] = {}
    cols = ["benchmark", "problem_id", "sample_index", "correct"]
    cols += ["finish_reason"] if "finish_reason" in samples.column_names else []
    rows = sorted(samples.select(cols).to_pylist(), key=lambda r: (r["problem_id"], r["sample_index"]))
    for r in rows:
        ok = bool(r["correct"]) and r.get("finish_reason") != "length"
        out.setdefault(r["benchmark"], {}).setdefault(r["problem_id"], []).append(ok)
    return out


def compare_to_base(samples: pa.Table, base_dir: Path) -> dict:
    """student − base per benchmark, paired over the problems both answered (the base's `eval/` directory)."""
    base = correct_by_problem(pq.read_table(base_dir / "samples.parquet"))
    label = json.loads((base_dir / "scores.json").read_text())["model"]
    mine = correct_by_problem(samples)
    return {"model": label, "benchmarks": {
        name: {k: round(v, 4) if isinstance(v, float) else v for k, v in paired_difference(base[name], probs).items()}
        for name, probs in mine.items() if name in base}}


def benchmark_scores(samples: list[dict], ev: Eval) -> dict[str, dict]:
    """Each benchmark's score from its judged samples (benchmark, problem_id, correct, finish_reason): pass@1 ±
    stderr, its k and max_tokens, and its truncation rate, the share of samples that hit max_tokens (finish
    reason 'length'), which count as wrong (R1's protocol: an answer cut off is no answer)."""
    by_bench: dict[str, dict[str, list[bool]]] = {}
    truncated: dict[str, int] = {}
    outcomes: dict[str, list] = {}  # (reason, finish_reason, right) per sample: the format-failure share
    for r in samples:
        cut = r["finish_reason"] == "length"
        right = bool(r["correct"]) and not cut
        truncated[r["benchmark"]] = truncated.get(r["benchmark"], 0) + cut
        by_bench.setdefault(r["benchmark"], {}).setdefault(r["problem_id"], []).append(right)
        outcomes.setdefault(r["benchmark"], []).append((r.get("reason"), r["finish_reason"], right))
    out = {}
    for bench in ev.benchmarks:
        problems = by_bench.get(bench.name, {})
        mean, stderr = pass_at_1(problems) if problems else (0.0, 0.0)
        n_samples = sum(len(c) for c in problems.values())
        k, max_tokens = ev.protocol(bench)
        out[bench.name] = {"pass@1": round(mean, 4), "stderr": round(stderr, 4), "problems": len(problems), "k": k,
                           "max_tokens": max_tokens,
                           "truncation_rate": round(truncated.get(bench.name, 0) / n_samples, 4) if n_samples else 0.0,
                           # no answer or cut off: wrong on form, not on value (what a student learns first)
                           "format_failures": round(format_failure_rate(outcomes.get(bench.name, [])), 4)}
    return out


def shard_size_for(placement: VLLMTeacher, k: int) -> int:
    """Problems per eval shard: the placement's `shard_size`, else about one engine batch of samples (batch_size / k
    problems), so a killed eval of 64-sample benchmarks loses at most a batch, not the whole benchmark."""
    return placement.shard_size or max(1, placement.batch_size // k)


def judged_rows(shard: pa.Table, judge: Filter) -> list[dict]:
    """One shard's samples judged with the filter's workers and limits (what "kept" means is what "correct" means);
    drop_truncated: an answer cut off at max_tokens is wrong, whatever it had boxed so far."""
    rows = shard.select(["benchmark", "problem_id", "sample_index", "response", "finish_reason", "answer"]).to_pylist()
    verdicts = judge_many([(r["response"], r["answer"], r["finish_reason"], True) for r in rows],
                          workers=judge.judge_workers(), timeout_s=judge.verify_timeout_s,
                          memory_mb=judge.verify_memory_mb)
    return [{"benchmark": r["benchmark"], "problem_id": r["problem_id"], "sample_index": r["sample_index"],
             "response": r["response"], "finish_reason": r["finish_reason"], "extracted": v.extracted,
             "correct": v.correct, "reason": v.reason} for r, v in zip(rows, verdicts)]


class OneEngineStart:
    """A backend shared by all of a model's shard sets: `run_shards` starts and closes its backend around each set;
    here the engine starts once, at the first shard any set submits, and `shut` closes it after the last set (an
    engine start is minutes for a large model; R1's protocol has a set per distinct k and max_tokens)."""

    def __init__(self, backend):
        self.backend, self.started = backend, False

    def start(self) -> None:
        if not self.started:
            self.backend.start()
            self.started = True

    def close(self) -> None:
        """Kept open for the next set (`shut` closes it)."""

    def shut(self) -> None:
        if self.started:
            self.backend.close()

    def __getattr__(self, name):  # submit, done, recover, capacity, start_seconds, ...: the backend's own
        return getattr(self.backend, name)


def evaluate_model(model: str, label: str, ev: Eval, placement: VLLMTeacher, seed: int, out_dir: Path,
                   base_dir: Path | None = None, judge: Filter | None = None, shard_dir: Path | None = None,
                   on_shard: Callable[[dict], None] | None = None) -> dict:
    """Score `model` on eval's benchmarks into out_dir (samples.parquet, scores.json).

    `placement`: eval's own engines (`spec.eval_placement`), never the teacher's. `judge`: the spec's filter, whose
    workers (default: all cores) and timeouts judge the answers. `shard_dir`: where the samples are generated in
    shards, committed as generate's are (a killed eval re-run with the same directory generates only the missing
    shards; the caller keys it by what decides the samples); unset, a scratch directory (nothing to resume).
    Removed once the scores are written."""
    judge = judge or Filter()
    engine = placement.model_copy(update={"model": model, "system_prompt": None, "examples": []})
    scratch = shard_dir is None
    shard_dir = Path(tempfile.mkdtemp(prefix="distill-eval-")) if scratch else Path(shard_dir)
    # One shard set per distinct (k, max_tokens): a shard is generated with one set of sampling params.
    groups: dict[tuple[int, int], list[Benchmark]] = {}
    for bench in ev.benchmarks:
        groups.setdefault(ev.protocol(bench), []).append(bench)
    backend = OneEngineStart(make_backend(engine, seed))
    try:
        sets = []
        try:
            for (k, max_tokens), benches in groups.items():
                sampling = Sampling(n=k, temperature=ev.temperature, top_p=ev.top_p, max_tokens=max_tokens)
                group_dir = shard_dir / f"k{k}-max{max_tokens}"
                run_shards(benchmark_prompts(ev, benches), group_dir, backend, sampling_dict(sampling),
                           shard_size_for(placement, k), placement.max_shard_attempts, on_shard=on_shard)
                sets.append(group_dir)
        finally:
            backend.shut()
        # Judged a shard at a time into samples.parquet: memory bounded by a shard, not by problems x k.
        with pq.ParquetWriter(out_dir / "samples.parquet", schemas.EVAL_SAMPLES) as writer:
            for group_dir in sets:
                for f in sorted(group_dir.glob(SHARD_GLOB)):
                    writer.write_table(pa.Table.from_pylist(judged_rows(pq.read_table(f), judge),
                                                            schema=schemas.EVAL_SAMPLES))
        samples = pq.read_table(out_dir / "samples.parquet", columns=[
            "benchmark", "problem_id", "sample_index", "finish_reason", "correct", "reason"])
        scores = {
            "model": label,
            "benchmarks": benchmark_scores(samples.to_pylist(), ev),
            "decoding": {"k": ev.k, "temperature": ev.temperature, "top_p": ev.top_p, "max_tokens": ev.max_tokens,
                         "seed": seed, "prompt_template": DEFAULT_TEMPLATE},
        }
        if base_dir is not None:
            scores["vs_base"] = compare_to_base(samples, base_dir)
        (out_dir / "scores.json").write_text(json.dumps(scores, indent=2))
        shutil.rmtree(shard_dir, ignore_errors=True)  # the scores are written: nothing left to resume
        return scores
    finally:
        if scratch:
            shutil.rmtree(shard_dir, ignore_errors=True)
