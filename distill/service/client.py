"""`distill.Client`: run specs as Ray jobs on a cluster, follow them, and fetch the students they package.

    from distill import Client

    client = Client("http://127.0.0.1:8265", artifacts="/shared/distill")   # the Ray dashboard's address
    job = client.jobs.create("examples/quickstart.yaml")      # validated here first: a bad spec creates no job
    job = client.jobs.wait(job.id, timeout=3600)              # a Job in one of TERMINAL_STATES
    print(job.status, job.progress.counts)                    # SUCCEEDED {'problems': 40, 'traces': 160, ...}
    for model in client.models.list():
        print(model.id, model.scores["benchmarks"])
    client.models.download("quickstart-lora", variant="merged", dest="student/")

Built on Ray's `JobSubmissionClient`: whatever the job server refuses comes back as a typed `distill.service.errors`
exception carrying the server's own message. The spec travels inline in the job's metadata; the job's code is
this checkout (uploaded as the job's working dir) unless `working_dir=None`, for clusters whose image already
has distill installed (the Helm chart's).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import time
import uuid
import warnings
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Iterator

import yaml
from pydantic import BaseModel, Field

from distill.service import registry
from distill.service.errors import (ClientError, ClusterUnreachable, JobConflict, JobTimeout, ServerError, SpecInvalid,
                            Unauthorized, from_response)
from distill.service.job import META_NAME, META_OUTPUT, META_SPEC, META_SPEC_DIR
from distill.spec import Spec, SpecError, parse_spec
from distill.service.status import Progress, parse_log

REPO = Path(__file__).resolve().parents[2]
_ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


class JobState(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


#: A job in one of these states will not change again; `jobs.wait` returns on the first of them.
TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED})


class Job(BaseModel):
    id: str
    status: JobState
    message: str | None = None
    name: str | None = Field(None, description="the spec's name")
    output_dir: str | None = None
    entrypoint: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict, repr=False)
    progress: Progress | None = Field(None, description="stage and counts, from the job's own status lines")

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.status is JobState.SUCCEEDED


def _time(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc) if ms else None


def _job(info, progress: Progress | None = None) -> Job:
    meta = dict(info.metadata or {})
    return Job(id=info.submission_id or info.job_id, status=JobState(str(info.status.value)), message=info.message,
               name=meta.get(META_NAME), output_dir=meta.get(META_OUTPUT), entrypoint=info.entrypoint or "",
               start_time=_time(info.start_time), end_time=_time(info.end_time),
               exit_code=getattr(info, "driver_exit_code", None), metadata=meta, progress=progress)


def _server_class():
    from ray.job_submission import JobSubmissionClient

    class _JobServer(JobSubmissionClient):
        # Every failed request of the SDK goes through this one method: the single place to type its errors.
        def _raise_error(self, r):
            raise from_response(r.status_code, r.text)

    return _JobServer


@contextlib.contextmanager
def _errors(address: str | None):
    """Turn what the Ray SDK and `requests` raise into typed client errors."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except ClientError:
        raise
    except AuthenticationError as e:
        raise Unauthorized(str(e).split("\n")[0], 401) from None
    except (ConnectionError, requests.ConnectionError, requests.Timeout) as e:
        raise ClusterUnreachable(f"cannot reach the Ray job server at {address}: {e}") from None
    except requests.HTTPError as e:
        raise ServerError(f"{e}", e.response.status_code if e.response is not None else None) from None
    except RuntimeError as e:  # the SDK's own checks, e.g. "Version check returned 404" from a server that is not Ray
        raise ServerError(str(e)) from None


@contextlib.contextmanager
def _env_without(names):
    """Ray's SDK lets RAY_ADDRESS override an explicit address; an address given here must win."""
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


class Client:
    """A Ray cluster's job server, seen as distillation jobs and the models they package.

    address: the dashboard URL (http://HEAD:8265); default RAY_API_SERVER_ADDRESS, then RAY_ADDRESS, as `ray job`.
    artifacts: the root the jobs write under (a shared path, or an fsspec URL the jobs upload to); relative
        `output_dir`s of specs go under it, and `models` looks there.
    token: Ray's auth token (clusters with RAY_AUTH_MODE=token); default $RAY_AUTH_TOKEN. Never logged.
    working_dir: code to upload with each job: "auto" is this checkout, None uploads nothing (the cluster's
        image has distill).
    """

    def __init__(self, address: str | None = None, *, artifacts: str | Path | None = None, token: str | None = None,
                 headers: dict[str, str] | None = None, verify: bool | str = True,
                 working_dir: str | Path | None = "auto"):
        headers = dict(headers or {})
        token = token or os.environ.get("RAY_AUTH_TOKEN")
        if token:
            headers.setdefault("Authorization", f"Bearer {token}")
        with _errors(address), _env_without(_ADDRESS_ENV if address else ()):
            self._ray = _server_class()(address, headers=headers or None, verify=verify)
        self.address = self._ray.get_address()
        self.artifacts = str(artifacts) if artifacts is not None else None
        if working_dir == "auto":
            working_dir = REPO if (REPO / "jobs" / "distill.py").exists() else None
        self.working_dir = Path(working_dir).resolve() if working_dir is not None else None
        self.jobs = Jobs(self)
        self.models = Models(self)

    def __repr__(self) -> str:
        return f"Client(address={self.address!r}, artifacts={self.artifacts!r})"

    def _call(self, fn, *args, **kwargs):
        with _errors(self.address):
            return fn(*args, **kwargs)


class Jobs:
    def __init__(self, client: Client):
        self._c = client

    # -- create ---------------------------------------------------------------------------------------------
    def create(self, spec: str | Path | dict | Spec, *, output_dir: str | None = None, job_id: str | None = None,
               upload: str | None = None, runtime_env: dict | None = None, entrypoint_num_cpus: float | None = None,
               entrypoint_num_gpus: float | None = None, entrypoint_resources: dict[str, float] | None = None,
               metadata: dict[str, str] | None = None) -> Job:
        """Validate `spec` (a YAML file, a dict, or a Spec) and submit it as one job. Raises SpecInvalid, before
        anything reaches the cluster, for a spec `distill validate` would refuse.

        output_dir: where the job writes; default the spec's own when absolute, else under `artifacts`. It must
            be storage the job's node sees (a relative one would land in the job's scratch working dir: refused).
        upload: a URL the job copies the finished run to (object store).
        entrypoint_num_gpus / entrypoint_resources: where the driver (which also trains) runs, e.g.
            {"distill.trainer": 1} on the Helm chart's trainer group."""
        data, base_dir, spec_dir = self._load(spec)
        data["output_dir"] = self._output_dir(data, output_dir)
        try:
            parsed = parse_spec(data, base_dir=base_dir)
        except SpecError as e:
            raise SpecInvalid(str(e)) from None
        self._preflight(parsed)
        self._refuse_busy(data["output_dir"])

        wd = self._c.working_dir
        entrypoint = "python jobs/distill.py" if wd and (wd / "jobs" / "distill.py").exists() \
            else "python -m distill.service.job"
        if upload:
            entrypoint += f" --upload {shlex.quote(upload)}"
        env = dict(runtime_env or {})
        if wd is not None:
            env.setdefault("working_dir", str(wd))  # Ray skips .git, .venv and whatever .gitignore names
        meta = {**(metadata or {}), META_SPEC: yaml.safe_dump(data, sort_keys=False), META_SPEC_DIR: spec_dir,
                META_NAME: parsed.name, META_OUTPUT: data["output_dir"]}
        job_id = job_id or f"distill-{parsed.name.lower()}-{uuid.uuid4().hex[:8]}"
        self._c._call(self._c._ray.submit_job, entrypoint=entrypoint, submission_id=job_id, runtime_env=env,
                      metadata=meta, entrypoint_num_cpus=entrypoint_num_cpus,
                      entrypoint_num_gpus=entrypoint_num_gpus, entrypoint_resources=entrypoint_resources)
        return self.retrieve(job_id, progress=False)

    def _load(self, spec) -> tuple[dict, Path, str]:
        """(spec as a dict, directory its relative paths resolve against here, the same relative to the working dir)."""
        wd = self._c.working_dir
        if isinstance(spec, Spec):
            return spec.model_dump(), wd or Path.cwd(), ""
        if isinstance(spec, dict):
            return dict(spec), wd or Path.cwd(), ""
        path = Path(spec)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise SpecInvalid(f"spec: file not found: {path}") from None
        except yaml.YAMLError as e:
            raise SpecInvalid(f"spec: not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise SpecInvalid("spec: the top level must be a mapping")
        here = path.resolve().parent
        if wd is not None and here.is_relative_to(wd):
            return data, here, here.relative_to(wd).as_posix()
        # Outside the uploaded code, the job resolves relative paths against its working dir: check them so here.
        return data, wd or here, ""

    def _output_dir(self, data: dict, explicit: str | None) -> str:
        out = explicit or data.get("output_dir")
        root = self._c.artifacts
        if out and os.path.isabs(out):
            return out
        if root and "://" not in root:
            return str(Path(root) / (out or data.get("name", "run")))
        raise SpecInvalid(f"output_dir: {out or 'unset'} is not absolute: on a cluster it would land in the job's "
                          f"scratch working dir. Give an absolute path on shared storage, output_dir=, or "
                          f"Client(artifacts=SHARED_ROOT)")

    @staticmethod
    def _preflight(parsed: Spec) -> None:
        # The checks `distill validate` runs; paths only the cluster sees (output_dir) come back as warnings.
        from distill import preflight

        found = preflight.check(parsed, on_cluster=True)
        for line in found.warnings:
            warnings.warn(line, stacklevel=3)
        if found.errors:
            raise SpecInvalid("\n".join(found.errors))

    def _refuse_busy(self, output_dir: str) -> None:
        # Two live jobs in one run directory would rebuild the same stages over each other.
        for job in self.list():
            if not job.terminal and job.output_dir == output_dir:
                raise JobConflict(f"job {job.id} ({job.status.value}) is already writing to {output_dir}; cancel "
                                  f"it or choose another output_dir")

    # -- read -----------------------------------------------------------------------------------------------
    def retrieve(self, job_id: str, *, progress: bool = True) -> Job:
        info = self._c._call(self._c._ray.get_job_info, job_id)
        prog = parse_log(self.logs(job_id)) if progress and info.status.value != "PENDING" else None
        return _job(info, prog)

    def list(self, *, all: bool = False) -> list[Job]:
        """Distillation jobs on the cluster, oldest first (`all=True`: every Ray job). Without progress: cheap."""
        jobs = [_job(i) for i in self._c._call(self._c._ray.list_jobs)]
        jobs = [j for j in jobs if all or META_NAME in j.metadata]  # set by create() and by the chart's RayJob
        return sorted(jobs, key=lambda j: (j.start_time is None, j.start_time or 0))

    def logs(self, job_id: str) -> str:
        return self._c._call(self._c._ray.get_job_logs, job_id)

    def tail(self, job_id: str) -> Iterator[str]:
        """Log chunks as the job writes them, until it ends."""
        self.retrieve(job_id, progress=False)  # JobNotFound here rather than a bare websocket error later
        stream = self._c._ray.tail_job_logs(job_id)
        loop = asyncio.new_event_loop()
        try:
            while True:
                try:
                    with _errors(self._c.address):
                        yield loop.run_until_complete(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            loop.run_until_complete(stream.aclose())
            loop.close()

    # -- control --------------------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> Job:
        """Ask the job to stop (SIGTERM to its driver, SIGKILL after RAY_JOB_STOP_WAIT_TIME_S); returns at once.
        `wait` then sees STOPPED. Finished stages stay on disk: submitting the spec again resumes.
        Ray cannot stop a job still PENDING for resources the cluster lacks (ray-project/ray#58353)."""
        self._c._call(self._c._ray.stop_job, job_id)
        return self.retrieve(job_id, progress=False)

    def wait(self, job_id: str, timeout: float | None = None, poll_interval: float = 2.0) -> Job:
        """Block until the job is in one of TERMINAL_STATES and return it; JobTimeout after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = JobState(str(self._c._call(self._c._ray.get_job_status, job_id).value))
            if status in TERMINAL_STATES:
                return self.retrieve(job_id)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                err = JobTimeout(f"job {job_id} is still {status.value} after {timeout:g}s")
                err.job_status = status
                raise err
            time.sleep(poll_interval if left is None else min(poll_interval, left))


class Models:
    """Packaged students under the client's artifacts root (see `distill.service.registry`)."""

    def __init__(self, client: Client):
        self._c = client

    def _root(self) -> str:
        if not self._c.artifacts:
            raise ClientError("models live under an artifacts root: Client(address, artifacts=PATH_OR_URL)")
        return self._c.artifacts

    def list(self) -> list[registry.Model]:
        return registry.list_models(self._root())

    def retrieve(self, name: str) -> registry.Model:
        return registry.find(self._root(), name)

    def download(self, name: str, variant: registry.Variant = "merged", dest: str | Path | None = None) -> Path:
        return registry.download(self._root(), name, variant, dest)


__all__ = ["Client", "Job", "JobState", "TERMINAL_STATES"]
