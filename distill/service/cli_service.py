"""The cluster-facing `distill` commands: `submit`, `jobs list|status|logs|cancel|wait`, `models list|download`.

The address is the Ray dashboard's (http://HEAD:8265); without --address, RAY_API_SERVER_ADDRESS or RAY_ADDRESS
(as `ray job`). A cluster with token auth takes its token from $RAY_AUTH_TOKEN: there is deliberately no flag,
so it never lands in shell history or `ps`. Exit codes: 0 done, 1 the job did not succeed or the cluster said no,
2 the spec was refused.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import warnings

from distill.service.errors import ClientError, SpecInvalid


def _handled(fn):
    @functools.wraps(fn)
    def run(args) -> int:
        try:
            return fn(args)
        except SpecInvalid as e:
            for line in e.message.splitlines():
                print(f"spec error: {line}", file=sys.stderr)
            return 2
        except ClientError as e:
            print(f"error: {e.message}", file=sys.stderr)
            return 1
    return run


def _client(args, **kw):
    from distill.service.client import Client

    return Client(args.address, artifacts=getattr(args, "artifacts", None), **kw)


def _describe(job) -> str:
    lines = [f"job:     {job.id}", f"status:  {job.status.value}"]
    if job.message:
        lines.append(f"message: {job.message.splitlines()[0][:200]}")
    if job.name:
        lines.append(f"spec:    {job.name}  output: {job.output_dir}")
    p = job.progress
    if p:
        stages = ", ".join(f"{k} {v}" for k, v in p.stages.items())
        lines.append(f"stage:   {p.stage or '-'}" + (f"  ({stages})" if stages else ""))
        for stage, bar in p.progress.items():
            total = f"/{bar['total']}" if bar.get("total") else ""
            extra = "".join(f", {k} {v}" for k, v in (bar.get("counts") or {}).items())
            lines.append(f"running: {stage} {bar['done']}{total} {bar['unit']}s{extra}")
        if p.counts:
            lines.append("counts:  " + ", ".join(f"{k} {v}" for k, v in p.counts.items()))
        if p.error and p.state != "STOPPED":
            lines.append(f"error:   {p.error[:300]}")
    return "\n".join(lines)


@_handled
def _cmd_submit(args) -> int:
    kw = {} if not args.no_working_dir else {"working_dir": None}
    client = _client(args, **kw)
    resources = json.loads(args.entrypoint_resources) if args.entrypoint_resources else None
    with warnings.catch_warnings(record=True) as caught:  # preflight's "could not check" lines, as one line each
        warnings.simplefilter("always")
        job = client.jobs.create(args.spec, output_dir=args.output_dir, job_id=args.job_id, upload=args.upload,
                                 entrypoint_num_gpus=args.entrypoint_num_gpus, entrypoint_resources=resources)
    for w in caught:
        print(f"spec warning: {w.message}", file=sys.stderr)
    print(f"submitted {job.id}: spec {job.name}, output {job.output_dir}")
    if not args.wait:
        print(f"  distill jobs status {job.id}\n  distill jobs logs {job.id} --follow\n  distill jobs cancel {job.id}")
        return 0
    job = client.jobs.wait(job.id, timeout=args.timeout)
    print(_describe(job))
    return 0 if job.succeeded else 1


@_handled
def _cmd_list(args) -> int:
    jobs = _client(args).jobs.list(all=args.all)
    if args.json:
        print(json.dumps([j.model_dump(mode="json", exclude={"metadata"}) for j in jobs], indent=2))
        return 0
    print(f"{'JOB':<40} {'STATUS':<10} {'SPEC':<20} {'STARTED':<20} OUTPUT")
    for j in jobs:
        started = j.start_time.astimezone().strftime("%Y-%m-%d %H:%M:%S") if j.start_time else "-"
        print(f"{j.id:<40} {j.status.value:<10} {j.name or '-':<20} {started:<20} {j.output_dir or '-'}")
    return 0


@_handled
def _cmd_status(args) -> int:
    job = _client(args).jobs.retrieve(args.job_id)
    print(job.model_dump_json(indent=2, exclude={"metadata"}) if args.json else _describe(job))
    return 0


@_handled
def _cmd_logs(args) -> int:
    jobs = _client(args).jobs
    if args.follow:
        for chunk in jobs.tail(args.job_id):
            print(chunk, end="", flush=True)
    else:
        print(jobs.logs(args.job_id), end="")
    return 0


@_handled
def _cmd_cancel(args) -> int:
    jobs = _client(args).jobs
    job = jobs.cancel(args.job_id)
    print(f"stop requested for {job.id} ({job.status.value})")
    if args.wait:
        job = jobs.wait(args.job_id, timeout=args.timeout)
        print(_describe(job))
    return 0


@_handled
def _cmd_wait(args) -> int:
    job = _client(args).jobs.wait(args.job_id, timeout=args.timeout)
    print(_describe(job))
    return 0 if job.succeeded else 1


def _root(args) -> str:
    if getattr(args, "root", None):
        return args.root
    if not args.artifacts:
        raise ClientError("no artifacts root: pass --artifacts PATH_OR_URL or set DISTILL_ARTIFACTS")
    return args.artifacts


@_handled
def _cmd_models_list(args) -> int:
    from distill.service import registry

    models = registry.list_models(_root(args))
    if args.json:
        print(json.dumps([m.model_dump(exclude={"files"}) for m in models], indent=2))
        return 0
    for m in models:
        scores = ", ".join(f"{b} {100 * s['pass@1']:.1f}" for b, s in (m.scores.get("benchmarks") or {}).items())
        print(f"{m.id}  ({m.method} on {m.base_model}; {', '.join(m.variants)})  {scores or 'not evaluated'}")
    return 0


@_handled
def _cmd_models_download(args) -> int:
    from distill.service import registry

    dest = registry.download(_root(args), args.name, args.variant, args.dest)
    print(f"{args.name} ({args.variant}) -> {dest}")
    return 0


def add_commands(sub) -> None:
    """Register the commands on `distill`'s subparsers."""
    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument("--address", help="Ray dashboard URL, e.g. http://127.0.0.1:8265 (default: "
                                        "RAY_API_SERVER_ADDRESS, then RAY_ADDRESS)")
    art = argparse.ArgumentParser(add_help=False)
    art.add_argument("--artifacts", default=os.environ.get("DISTILL_ARTIFACTS"),
                     help="root the jobs write under: shared path or fsspec URL (default: $DISTILL_ARTIFACTS)")

    s = sub.add_parser("submit", parents=[conn, art], help="run a spec as a job on a Ray cluster")
    s.add_argument("spec")
    s.add_argument("--output-dir", help="where the job writes (shared storage); default: the spec's, under --artifacts")
    s.add_argument("--job-id", help="submission id (default: distill-<name>-<random>)")
    s.add_argument("--upload", help="URL the job copies the finished run to (s3://bucket/prefix)")
    s.add_argument("--no-working-dir", action="store_true",
                   help="upload no code: the cluster's image has distill installed")
    s.add_argument("--entrypoint-num-gpus", type=float, help="GPUs for the driver, which also trains")
    s.add_argument("--entrypoint-resources", help='custom resources for the driver, JSON: {"distill.trainer": 1}')
    s.add_argument("--wait", action="store_true", help="wait for the job to end; exit 1 unless it succeeded")
    s.add_argument("--timeout", type=float, help="seconds --wait waits")
    s.set_defaults(fn=_cmd_submit)

    j = sub.add_parser("jobs", help="distillation jobs on a Ray cluster").add_subparsers(dest="jobs_command",
                                                                                        required=True)
    p = j.add_parser("list", parents=[conn], help="jobs, oldest first")
    p.add_argument("--all", action="store_true", help="every Ray job, not only distillation jobs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_list)
    p = j.add_parser("status", parents=[conn], help="state, stage and counts of one job")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_status)
    p = j.add_parser("logs", parents=[conn], help="a job's driver logs")
    p.add_argument("job_id")
    p.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")
    p.set_defaults(fn=_cmd_logs)
    p = j.add_parser("cancel", parents=[conn], help="stop a job (finished stages are kept)")
    p.add_argument("job_id")
    p.add_argument("--wait", action="store_true", help="wait until it is STOPPED")
    p.add_argument("--timeout", type=float, default=120)
    p.set_defaults(fn=_cmd_cancel)
    p = j.add_parser("wait", parents=[conn], help="wait for a job to end; exit 1 unless it succeeded")
    p.add_argument("job_id")
    p.add_argument("--timeout", type=float)
    p.set_defaults(fn=_cmd_wait)

    m = sub.add_parser("models", help="packaged students under an artifacts root").add_subparsers(
        dest="models_command", required=True)
    p = m.add_parser("list", parents=[art], help="every packaged student, with its scores")
    p.add_argument("root", nargs="?", help="artifacts root (local path or fsspec URL); same as --artifacts")
    p.add_argument("--json", action="store_true", help="machine-readable: one JSON list")
    p.set_defaults(fn=_cmd_models_list)
    p = m.add_parser("download", parents=[art], help="copy a student's weights, checking their sha256")
    p.add_argument("name", help="student name, or <run>/<name> when several runs packaged one")
    p.add_argument("--variant", choices=["merged", "adapter", "gguf"], default="merged",
                   help="gguf: the F16 and Q8_0 GGUF files and the Ollama Modelfile")
    p.add_argument("--dest", help="directory (default ./<name>-<variant>)")
    p.set_defaults(fn=_cmd_models_download)
