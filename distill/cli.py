"""The `distill` command: run, validate, verify, audit, report."""

from __future__ import annotations

import argparse
import os
import sys


def _cmd_validate(args) -> int:
    from distill.spec import load_spec

    spec = load_spec(args.spec)
    print(f"ok: {spec.name}: {len(spec.prompts.sources)} prompt source(s), {len(spec.students)} student(s), "
          f"{len(spec.eval.benchmarks)} benchmark(s); output {spec.output_dir}")
    return 0


def _cmd_run(args) -> int:
    from distill.run import run
    from distill.spec import load_spec

    spec = load_spec(args.spec)
    if args.output_dir:
        spec.output_dir = os.path.abspath(args.output_dir)
    summary = run(spec)
    _print_comparison(summary)
    print(f"\nrun directory: {summary['output_dir']}")
    for pkg in summary["packages"]:
        print(f"package:       {pkg}\nmodel card:    {pkg}/README.md")
    if summary.get("report"):
        print(f"report:        {summary['report']}")
    return 0


def _print_comparison(summary: dict) -> None:
    """Each packaged student's base-vs-student table, from its manifest (what the run achieved, significant or not)."""
    import json
    from pathlib import Path

    from distill.stats import comparison_rows, format_table

    for pkg in summary["packages"]:
        m = json.loads((Path(pkg) / "manifest.json").read_text())
        if m["scores"].get("benchmarks"):
            print("\n" + format_table(comparison_rows(m["scores"], m["base_scores"]), m["name"]))


def _cmd_verify(args) -> int:
    from distill.verify import verify_file

    counts = verify_file(args.input, args.output, workers=args.workers, answer_format=args.answer_format)
    total = sum(counts.values())
    print(f"{total} rows -> {args.output}: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    return 0


def _cmd_audit(args) -> int:
    from distill.verify.audit import audit

    return audit(args.input, sample_size=args.sample, seed=args.seed, out_path=args.out,
                 answer_format=args.answer_format, workers=args.workers, min_precision=args.min_precision,
                 min_recall=args.min_recall)


def _cmd_report(args) -> int:
    from distill.report import write_report

    print(f"report: {write_report(args.run_dir)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="distill", description="Distil reasoning traces from a teacher into students.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a spec from prompts to packaged students (finished stages are skipped)")
    r.add_argument("spec")
    r.add_argument("--output-dir", help="override the spec's output_dir")
    r.set_defaults(fn=_cmd_run)

    v = sub.add_parser("validate", help="check a spec without running anything")
    v.add_argument("spec")
    v.set_defaults(fn=_cmd_validate)

    f = sub.add_parser("verify", help="judge existing traces: rows with problem, answer, response")
    f.add_argument("input", help=".jsonl or .parquet")
    f.add_argument("output", help=".jsonl or .parquet (rows plus correct, reason, extracted)")
    f.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    f.add_argument("--answer-format", default="plain", choices=["plain", "gsm8k", "boxed"],
                   help="how the answer column is written: a value, a GSM8K '#### N' solution, or a \\boxed{} solution")
    f.set_defaults(fn=_cmd_verify)

    a = sub.add_parser("audit", help="sample verdicts for review, or score the verifier on labelled rows")
    a.add_argument("input", help="a run directory, judged traces (.parquet/.jsonl), or rows with a 'label' column")
    a.add_argument("--sample", type=int, default=20, help="accepted and rejected verdicts to sample (each)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", help="write the sample (JSONL, with empty labels) or the scores (JSON) here")
    a.add_argument("--answer-format", default="plain", choices=["plain", "gsm8k", "boxed", "code"])
    a.add_argument("--workers", type=int, default=1, help="checker processes")
    a.add_argument("--min-precision", type=float, help="exit 1 when precision on labelled rows is lower")
    a.add_argument("--min-recall", type=float, help="exit 1 when recall on labelled rows is lower")
    a.set_defaults(fn=_cmd_audit)

    rp = sub.add_parser("report", help="write RUN_DIR/report.html: funnel, lengths, scores and cost (also mid-run)")
    rp.add_argument("run_dir", metavar="RUN_DIR", help="a run's output directory")
    rp.set_defaults(fn=_cmd_report)

    from distill.cli_service import add_commands  # submit, jobs, models: a Ray cluster and its artifacts

    add_commands(sub)

    args = p.parse_args(argv)
    from distill.spec import SpecError

    try:
        return args.fn(args)
    except SpecError as e:
        for line in str(e).splitlines():
            print(f"spec error: {line}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
