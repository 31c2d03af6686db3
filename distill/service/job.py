"""What a Ray job runs (`python jobs/distill.py`, or `python -m distill.service.job` where distill is installed).

Where the spec comes from, first found wins:
  --spec PATH     a file in the job's working dir (relative paths inside it resolve against its directory)
  --spec URL      s3://, gs://, https://, file://... read with fsspec (the backend, e.g. s3fs, must be installed)
  $DISTILL_SPEC   the spec's YAML text (e.g. from a runtime_env's env_vars)
  job metadata    'distill.spec' (YAML text), as `distill.Client.jobs.create` submits it; 'distill.spec_dir' is the
                  directory, relative to the working dir, that relative paths in it resolve against
While the run goes, `<output_dir>/status.json` and `[distill status]` log lines report its stage and counts
(`distill.service.status`). A stop request (SIGTERM from `ray job stop`) ends the run cleanly: the stage being built is
discarded, finished stages stay, status says STOPPED, and a later submission resumes where this one stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import yaml

from distill import preflight
from distill.spec import SpecError, Spec, load_spec, parse_spec
from distill.service.status import StatusReporter

SPEC_ENV = "DISTILL_SPEC"
# Job metadata keys: set by distill.Client.jobs.create (all four) and the Helm chart's RayJob (name, output dir).
META_SPEC, META_SPEC_DIR = "distill.spec", "distill.spec_dir"
META_NAME, META_OUTPUT = "distill.name", "distill.output_dir"
_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor: {"runtime_env": .., "metadata": ..}


class Stopped(BaseException):
    """Raised in the main thread on SIGTERM. A BaseException so that no `except Exception` on the way swallows it."""


# Set by the SIGTERM handler. The exception alone is not enough: raised inside ray.get's signal check, Ray
# re-raises it as a SystemError, so the flag is what tells a stop from a failure.
_stop_requested = threading.Event()


def _log(msg: str) -> None:
    print(f"[distill {time.strftime('%H:%M:%S')}] job: {msg}", flush=True)


def job_metadata() -> dict[str, str]:
    raw = os.environ.get(_JOB_CONFIG_ENV)
    return dict(json.loads(raw).get("metadata") or {}) if raw else {}


def spec_from_text(text: str, base_dir: Path, origin: str) -> Spec:
    """Parse a spec given as YAML text: input paths resolve against base_dir, a relative output_dir against the
    current directory (as `distill.spec.load_spec` does for a file)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"spec ({origin}): not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise SpecError(f"spec ({origin}): the top level must be a mapping")
    spec = parse_spec(data, base_dir=base_dir)
    spec.output_dir = str(Path(spec.output_dir).resolve())
    return spec


def read_spec(arg: str | None, meta: dict[str, str]) -> tuple[Spec, str]:
    """The job's spec and where it came from (for the log)."""
    if arg and "://" not in arg:
        return load_spec(arg), arg
    if arg:
        import fsspec

        with fsspec.open(arg, "r") as f:
            return spec_from_text(f.read(), Path.cwd(), arg), arg
    if os.environ.get(SPEC_ENV):
        return spec_from_text(os.environ[SPEC_ENV], Path.cwd(), f"${SPEC_ENV}"), f"${SPEC_ENV}"
    if meta.get(META_SPEC):
        base = (Path.cwd() / meta.get(META_SPEC_DIR, "")).resolve()
        return spec_from_text(meta[META_SPEC], base, "job metadata"), f"job metadata '{META_SPEC}'"
    raise SpecError(f"spec: none given: pass --spec PATH|URL, set ${SPEC_ENV}, or submit with metadata '{META_SPEC}'")


def upload_run(local_dir: str | Path, url: str) -> int:
    """Copy a finished run directory to `url` (any fsspec filesystem); hidden scratch entries are skipped."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    local_dir = Path(local_dir)
    n = 0
    for path in sorted(local_dir.rglob("*")):
        rel = path.relative_to(local_dir)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            target = f"{root.rstrip('/')}/{rel.as_posix()}"
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(path), target)
            n += 1
    return n


def _on_sigterm(signum, frame):
    if not _stop_requested.is_set():  # raise once: a second SIGTERM must not interrupt the cleanup
        _stop_requested.set()
        raise Stopped()


@contextlib.contextmanager
def _stop_signal(on_stop):
    """SIGTERM: call `on_stop()` at once from a helper thread, and raise Stopped in the main thread.

    Python runs signal handlers in the main thread only when it next runs bytecode, and a driver blocked in
    ray.get (an engine still loading) may not for longer than Ray waits before SIGKILL (RAY_JOB_STOP_WAIT_TIME_S,
    3 s by default). The wakeup fd is written by the C-level handler the moment the signal lands, so the helper
    thread can record STOPPED before any SIGKILL."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    r, w = socket.socketpair()
    w.setblocking(False)
    previous_fd = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)

    def watch():
        while data := r.recv(64):
            if signal.SIGTERM in data:
                _stop_requested.set()
                on_stop()
                return

    threading.Thread(target=watch, name="distill-sigterm", daemon=True).start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGTERM, previous)
        w.close()  # ends the helper thread's recv
        r.close()


def run_with_status(spec: Spec, reporter: StatusReporter, upload: str | None = None) -> int:
    from distill import cluster
    from distill.pipeline.runner import Runner  # heavy (torch, vLLM): only once the spec is known to be good

    # Connect first: ray.init() installs its own SIGTERM handler (sys.exit), which would replace ours and turn a
    # stop request into an anonymous SystemExit. The runner finds Ray initialised and keeps this connection.
    cluster.configure(spec.ray_address)
    cluster.ensure_ray()
    stopped = "stopped on request (SIGTERM)"
    with _stop_signal(lambda: reporter.finish("STOPPED", error=stopped)):
        reporter.start()
        try:
            summary = Runner(spec).run()
            if upload:
                _log(f"uploaded {upload_run(spec.output_dir, upload)} files to {upload}")
        except BaseException as e:
            if not _stop_requested.is_set():
                reporter.finish("FAILED", error=f"{type(e).__name__}: {e}")
                raise
            reporter.finish("STOPPED", error=stopped)
            _log("stopped on request; finished stages are kept, a new submission resumes from them")
            return 143
    reporter.finish("SUCCEEDED", packages=summary["packages"])
    for pkg in summary["packages"]:
        _log(f"package: {pkg}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jobs/distill.py", description="Run one distillation spec as a Ray job.")
    p.add_argument("--spec", help=f"spec file (relative to the working dir) or URL; default: ${SPEC_ENV}, then the "
                                  f"job's metadata '{META_SPEC}'")
    p.add_argument("--output-dir", default=os.environ.get("DISTILL_OUTPUT_DIR"),
                   help="override the spec's output_dir; on a cluster, shared storage (a PVC mount)")
    p.add_argument("--upload", default=os.environ.get("DISTILL_UPLOAD_URL"),
                   help="after success, copy the run directory to this URL (s3://bucket/prefix, gs://...)")
    p.add_argument("--status-interval", type=float, default=2.0, help="seconds between progress checks")
    args = p.parse_args(argv)

    meta = job_metadata()
    try:
        spec, origin = read_spec(args.spec, meta)
    except SpecError as e:
        for line in str(e).splitlines():
            print(f"spec error: {line}", file=sys.stderr)
        return 2
    except OSError as e:  # a URL that cannot be read
        print(f"error: cannot read spec {args.spec}: {e}", file=sys.stderr)
        return 2
    if args.output_dir:
        spec.output_dir = os.path.abspath(args.output_dir)
    try:
        preflight.require(spec)  # the same checks as `distill validate`, now where the job's paths are visible
    except SpecError as e:
        for line in str(e).splitlines():
            print(f"spec error: {line}", file=sys.stderr)
        return 2
    _log(f"spec {spec.name} from {origin}; output {spec.output_dir}")
    if os.environ.get(_JOB_CONFIG_ENV) and "runtime_resources" in Path(spec.output_dir).parts:
        # The working dir Ray unpacked for this job is scratch on one node: pass --output-dir on shared storage.
        _log(f"warning: {spec.output_dir} is inside the job's temporary working dir and will not outlive it")
    reporter = StatusReporter(spec.output_dir, spec.name, job_id=meta.get("job_submission_id"),
                              interval=args.status_interval, mirror=args.upload)
    try:
        return run_with_status(spec, reporter, args.upload)
    except preflight.EmptyStage as e:  # recorded as FAILED with this message; a stop, not a crash
        print(f"stopped: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # vLLM spawns processes: keep the entry point guarded
    sys.exit(main())
