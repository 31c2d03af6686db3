"""Stage 3, verify & filter: decide which traces a student learns from.

Modules:
  extract   the final-answer region (after `</think>`) and the answer in it: last brace-matched box, `####`,
            answer markers, a bold final line; never the last number of a possibly cut-off trace
  mathcmp   normalisation and exact comparison in-process (integers, decimals, fractions, sets, tuples,
            intervals, choices, units, percent, qualifying words, long decimals): the fast path, no sympy
  checker   math-verify for the rest, in killable worker processes with wall-clock and memory limits
  symbolic  the checker's rules on parsed answers: whole-answer parsing, equations, inequalities as sets
  judge     `judge` / `judge_many`: one Verdict per trace (correct / incorrect / unverifiable, with a reason)
  code      code answers: the final fenced block run against stdin/stdout or function-call tests
  sandbox   the sandboxed subprocess code runs in (rlimits, namespaces, Landlock, wall clock)
  filters   trace filters: think tags, length bounds, repetition loops, language mixing
  dedup     exact and MinHash near-duplicate problems and traces (numpy)
  decontam  8-gram overlap with the benchmarks the spec evaluates on
  stage     `verify_stage` (the pipeline stage, streaming, with the funnel) and `verify_file` (`distill verify`)
  targets   `filter.domain_targets`: kept traces per domain held after verification, shortfall reported
  distributed  the stage's batches as Ray tasks over a multi-node cluster (the Helm chart's verifier group)
  files     `distill verify`'s files: paths checked first, rows read with their types, bad rows by line and
            column, .jsonl/.parquet/.csv written atomically
  audit     `distill audit`: sample verdicts for review; precision and recall on labelled rows
"""

from distill.verify.extract import extract_answer, final_region, last_boxed, reference_answer
from distill.verify.judge import KEEP_REASONS, Verdict, compare_many, equivalent, judge, judge_many
from distill.verify.stage import STEPS, verify_file, verify_stage

__all__ = [
    "KEEP_REASONS", "STEPS", "Verdict", "compare_many", "equivalent", "extract_answer", "final_region", "judge",
    "judge_many", "last_boxed", "reference_answer", "verify_file", "verify_stage",
]
