"""The `distill` command: run, validate, verify, audit, report, clean, publish."""

from __future__ import annotations

import argparse
import os
import sys


def _cmd_validate(args) -> int:
    from distill import preflight
    from distill.spec import load_spec

    spec = load_spec(args.spec)
    preflight.require(spec)  # models, sampling ranges, engine keys, sources, output_dir: all before any engine
    print(f"ok: {spec.name}: {len(spec.prompts.sources)} prompt source(s), {len(spec.students)} student(s), "
          f"{len(spec.eval.benchmarks)} benchmark(s); output {spec.output_dir}")
    return 0


def _cmd_run(args) -> int:
    from distill import preflight
    from distill.spec import load_spec

    spec = load_spec(args.spec)
    if args.output_dir:
        spec.output_dir = os.path.abspath(args.output_dir)
    preflight.require(spec)  # before the runner's heavy imports, Ray or any engine
    from distill.pipeline.runner import run

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


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _cmd_verify(args) -> int:
    import signal

    from distill.verify import verify_file

    # SIGTERM (kill, a scheduler's stop) ends it like Ctrl-C: the temporary output is removed, one line is printed.
    signal.signal(signal.SIGTERM, _raise_interrupt)
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


def _cmd_clean(args) -> int:
    from pathlib import Path

    from distill import cleanup

    root = Path(args.run_dir)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory")
    with cleanup.run_lock(root):
        stale, why = cleanup.unreachable_shard_sets(root)
        freed = cleanup.remove(cleanup.leftovers(root) + stale)
    for path, n in freed:
        print(f"removed {path.relative_to(root)}: {cleanup.human(n)}")
    if why:
        print(why)
    print(f"freed {cleanup.human(sum(n for _, n in freed))} in {root}")
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

    c = sub.add_parser("clean", help="remove what killed runs left in RUN_DIR and shard sets its spec cannot reach")
    c.add_argument("run_dir", metavar="RUN_DIR", help="a run's output directory")
    c.set_defaults(fn=_cmd_clean)

    from distill.service.cli_service import add_commands  # submit, jobs, models: a Ray cluster and its artifacts

    add_commands(sub)
    from distill.export.publish import add_command as add_publish  # publish: the Hugging Face Hub

    add_publish(sub)

    args = p.parse_args(argv)
    from distill.cleanup import RunBusy
    from distill.preflight import EmptyStage
    from distill.spec import SpecError

    try:
        return args.fn(args)
    except RunBusy as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except EmptyStage as e:
        print(f"stopped: {e}", file=sys.stderr)
        for line in getattr(e, "details", []):
            print(line, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C (and SIGTERM in `verify`): stages and outputs are written atomically, so nothing half-done is left
        if args.command == "run":
            print("interrupted: finished stages are kept; run it again to resume", file=sys.stderr)
        else:
            print("interrupted: stopped before finishing; no partial output was written", file=sys.stderr)
        return 130
    except SpecError as e:
        for line in str(e).splitlines():
            print(f"spec error: {line}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:
        for line in str(e).splitlines() or [type(e).__name__]:
            print(f"error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
