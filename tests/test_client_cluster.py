"""A real local Ray cluster (`ray start --head` on 127.0.0.1, token auth on, its own ports and temp dir) driven
through distill.Client, the `distill` CLI and `ray job submit`: refusals come back typed with the server's
words; a tiny spec runs as a job to SUCCEEDED with progress on the way and its student listed by `models`; a
second job is cancelled and ends STOPPED.

The head is stopped by signalling the `ray start --block` process it runs under (and sweeping what it leaves),
not with `ray stop`, which would also stop any other Ray on the machine - other tests' embedded ones included.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from distill import Client
from distill.service.client import JobState
from distill.service.errors import ClusterUnreachable, JobConflict, JobNotFound, JobTimeout, SpecInvalid, Unauthorized
from distill.service.status import parse_log, read
from tests.conftest import REPO, tiny_spec

VENV_BIN = Path(sys.executable).parent


# A real Ray head and real jobs: integration tests, out of the unit run (`pytest -m "not slow"`).
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Head:
    address: str
    token: str
    env: dict  # what a CLI process needs to reach it


def _stop(proc: subprocess.Popen) -> None:
    import psutil

    try:
        root = psutil.Process(proc.pid)
        procs = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for p in psutil.process_iter():  # the session `ray start` leads: raylet, GCS, dashboard, workers
        try:
            if os.getsid(p.pid) == proc.pid:
                procs.append(p)
        except OSError:
            pass
    proc.terminate()  # `ray start --block` takes its node down with it
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    alive = [p for p in procs if p.is_running() and p.pid != proc.pid]
    for p in alive:
        p.terminate()
    _, alive = psutil.wait_procs(alive, timeout=15)
    for p in alive:
        p.kill()


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    token = uuid.uuid4().hex
    # Its own temp dir (short: Ray's socket paths must stay under 107 characters): then no other `ray.init()` on
    # this machine finds this cluster as "the current one".
    temp_dir = tempfile.mkdtemp(prefix="dray-", dir="/tmp")
    dash = _free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "DISTILL_ARTIFACTS")}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env['PATH']}",  # the jobs' `python` is this environment's
               RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    log = tmp_path_factory.mktemp("ray") / "head.log"
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--block", f"--temp-dir={temp_dir}",
           "--node-ip-address=127.0.0.1", f"--port={_free_port()}", "--include-dashboard=true",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={_free_port()}",
           f"--dashboard-agent-listen-port={_free_port()}", "--num-cpus=2", "--disable-usage-stats"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if requests.get(f"{address}/api/version", headers={"Authorization": f"Bearer {token}"},
                            timeout=5).ok:
                break
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"ray head did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    cli_env = {**env, "RAY_ADDRESS": "", "RAY_AUTH_TOKEN": token}
    cli_env.pop("RAY_AUTH_MODE")
    try:
        yield Head(address, token, cli_env)
    finally:
        try:
            client = Client(address, token=token)
            for job in client.jobs.list(all=True):
                if not job.terminal:
                    client.jobs.cancel(job.id)
        finally:
            _stop(proc)
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
def client(head, artifacts) -> Client:
    return Client(head.address, artifacts=artifacts, token=head.token)


def _spec(student_base) -> dict:
    """The end-to-end test's tiny spec without eval: this file is about the service, not the scores."""
    return tiny_spec("svc", "run1", student_base, with_eval=False)


def _cli(head, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=REPO, env=head.env,
                          capture_output=True, text=True, timeout=120)


def _poll(fn, until, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if until(value):
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}; last: {value!r}"
        time.sleep(1)


# -- refusals: typed, with the cluster's own message, and no job left behind ----------------------------------

def test_malformed_spec_is_refused_before_any_job_is_created(client, tmp_path):
    before = client.jobs.list(all=True)
    bad = {**_spec("smollm2-135m"), "teacher": {"model": "smollm2-135m", "bogus": True},
           "students": [{"name": "no spaces allowed", "base": "smollm2-135m"}]}
    with pytest.raises(SpecInvalid) as e:
        client.jobs.create(bad)
    assert e.value.message.splitlines() == ["teacher.bogus: unknown key",
                                            "students[0].name: String should match pattern '^[A-Za-z0-9._-]+$'"]
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text("name: [unclosed\n")
    with pytest.raises(SpecInvalid, match="spec: not valid YAML"):
        client.jobs.create(spec_file)
    assert client.jobs.list(all=True) == before


def test_cluster_errors_are_typed_with_the_servers_message(head, client, tmp_path):
    with pytest.raises(Unauthorized, match="Missing authentication token"):
        Client(head.address)
    with pytest.raises(Unauthorized, match="Invalid authentication token"):
        Client(head.address, token="wrong")
    with pytest.raises(ClusterUnreachable, match=f"127.0.0.1:{_free_port()}|cannot reach"):
        Client(f"http://127.0.0.1:{_free_port()}", token=head.token)
    for call in (client.jobs.retrieve, client.jobs.cancel, client.jobs.logs, client.jobs.wait):
        with pytest.raises(JobNotFound) as e:
            call("no-such-job")
        assert e.value.message == "Job no-such-job does not exist." and e.value.status == 404

    # A job that fails at once (its output dir sits under a file, which only the cluster can tell: the job's own
    # preflight says so in one line, exit code 2): FAILED is terminal, with Ray's message.
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    job_id = f"fails-{uuid.uuid4().hex[:6]}"
    job = client.jobs.create(_spec("smollm2-135m"), output_dir=str(blocker / "run"), job_id=job_id)
    assert job.id == job_id and job.status in (JobState.PENDING, JobState.RUNNING)
    with pytest.raises(JobConflict, match=f"Job with submission_id {job_id} already exists"):
        client.jobs.create(_spec("smollm2-135m"), output_dir=str(tmp_path / "other"), job_id=job_id)
    done = client.jobs.wait(job_id, timeout=180, poll_interval=0.5)
    assert done.status is JobState.FAILED and done.terminal and not done.succeeded
    why = f"output_dir: cannot create {blocker / 'run'}: {blocker} is a file"
    assert why in done.message and done.exit_code == 2 and "Traceback" not in done.message
    assert why in "".join(client.jobs.tail(job_id))  # a finished job's stream ends by itself
    assert done.name == "svc" and done.output_dir == str(blocker / "run")


def test_ray_job_submit_runs_the_entrypoint_with_a_spec_url(head, tmp_path):
    """The plain Ray way: `ray job submit -- python jobs/distill.py --spec URL` (here a bad spec, so it is quick)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**_spec("smollm2-135m"), "sampling": {"n": 0}}))
    env = {**head.env, "RAY_AUTH_MODE": "token"}
    proc = subprocess.run(
        [str(VENV_BIN / "ray"), "job", "submit", "--address", head.address, "--working-dir", str(REPO), "--",
         "python", "jobs/distill.py", "--spec", spec.as_uri(), "--output-dir", str(tmp_path / "run")],
        env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "spec error: sampling.n: Input should be greater than or equal to 1" in out, out
    assert "failed" in out.lower()


def test_cli_submits_a_spec_file_and_cancels_it(head, client, tmp_path):
    """`distill submit` with the quickstart file: its relative input path resolves next to the spec on the
    cluster too, its relative output_dir goes under --artifacts."""
    job_id = f"cli-{uuid.uuid4().hex[:6]}"
    out = _cli(head, "submit", "examples/quickstart.yaml", "--address", head.address, "--artifacts", str(tmp_path),
               "--job-id", job_id)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"submitted {job_id}: spec quickstart, output {tmp_path}/runs/quickstart")
    assert f"distill jobs cancel {job_id}" in out.stdout
    # Ray cannot stop a job before its driver starts (ray-project/ray#58353): cancel once it runs.
    _poll(lambda: client.jobs.retrieve(job_id, progress=False), lambda j: j.status is not JobState.PENDING,
          180, "the job to start")
    out = _cli(head, "jobs", "cancel", job_id, "--wait", "--address", head.address)
    assert out.returncode == 0 and f"stop requested for {job_id}" in out.stdout and "status:  STOPPED" in out.stdout
    bad = _cli(head, "submit", "examples/quickstart.yaml", "--address", head.address)  # no --artifacts
    assert bad.returncode == 2 and bad.stderr.startswith("spec error: output_dir: runs/quickstart is not absolute")


# -- a whole run, watched, listed and downloaded; then a run cancelled ----------------------------------------

def test_spec_runs_to_succeeded_then_a_second_job_is_cancelled(head, client, artifacts, tiny_llama, tmp_path):
    spec = _spec(tiny_llama)
    job = client.jobs.create(spec)  # relative output_dir "run1": under the client's artifacts root
    run1 = artifacts / "run1"
    assert job.output_dir == str(run1) and job.name == "svc" and job.id.startswith("distill-svc-")

    # While it runs: progress from the job's own status lines, status.json beside the run, a timed-out wait,
    # and no second job allowed into the same run directory.
    job = _poll(lambda: client.jobs.retrieve(job.id), lambda j: j.terminal or (j.progress and j.progress.stage),
                600, "a stage to start")
    assert job.status is JobState.RUNNING and job.progress.state == "RUNNING", job
    assert read(run1).state == "RUNNING" and read(run1).job_id == job.id
    with pytest.raises(JobTimeout) as e:
        client.jobs.wait(job.id, timeout=1)
    assert e.value.job_status is JobState.RUNNING and f"job {job.id} is still RUNNING after 1s" in e.value.message
    with pytest.raises(JobConflict, match=f"job {job.id} \\(RUNNING\\) is already writing to {run1}"):
        client.jobs.create(spec)

    job = client.jobs.wait(job.id, timeout=1200)
    assert job.status is JobState.SUCCEEDED, client.jobs.logs(job.id)[-5000:]
    p = job.progress
    assert p.state == "SUCCEEDED" and p.stage == "package/tiny-lora"
    assert list(p.stages) == ["prompts", "generate", "verify", "sft", "train/tiny-lora", "package/tiny-lora"]
    assert set(p.stages.values()) == {"done"}
    assert p.counts["problems"] == 12 and p.counts["traces"] == 72 and p.counts["students_packaged"] == 1
    # While generate ran, its shard progress travelled in the job's status lines.
    bars: dict = {}
    for line in client.jobs.logs(job.id).splitlines():
        seen_line = parse_log(line)
        bars.update(seen_line.progress if seen_line else {})
    assert bars.get("generate", {}).get("unit") == "shard" and bars["generate"]["total"] == 1, bars
    status = read(run1)
    assert status.state == "SUCCEEDED" and status.packages == [str(run1 / "package" / "tiny-lora")]
    assert status.stages["verify"].stats["kept"] == p.counts["kept"]

    # The packaged student, through the registry.
    manifest = json.loads((run1 / "package" / "tiny-lora" / "manifest.json").read_text())
    [model] = client.models.list()
    assert model.id == "run1/tiny-lora" and model.name == manifest["name"] == "tiny-lora"
    assert model.files == manifest["files"] and model.lineage == manifest["lineage"]
    assert model.lineage["generated"] == 72 and model.variants == ["adapter", "gguf", "merged"]
    merged = client.models.download("tiny-lora", "merged", tmp_path / "student")
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(merged).num_parameters() > 0
    assert (client.models.download("tiny-lora", "adapter", tmp_path / "adapter") / "adapter_config.json").exists()
    gguf = client.models.download("tiny-lora", variant="gguf", dest=tmp_path / "gguf")
    assert sorted(p.name for p in gguf.iterdir()) == ["Modelfile", "tiny-lora-F16.gguf", "tiny-lora-Q8_0.gguf"]

    # The CLI sees the same.
    listing = _cli(head, "jobs", "list", "--address", head.address)
    assert listing.returncode == 0 and job.id in listing.stdout and "SUCCEEDED" in listing.stdout, listing.stderr
    status_out = _cli(head, "jobs", "status", job.id, "--address", head.address)
    assert "status:  SUCCEEDED" in status_out.stdout and "problems 12, traces 72" in status_out.stdout
    models_out = _cli(head, "models", "list", "--artifacts", str(artifacts))
    assert models_out.stdout.startswith("run1/tiny-lora  (lora on") and "adapter, gguf, merged" in models_out.stdout

    # A second run of the same spec elsewhere, cancelled once the teacher is at work.
    second = client.jobs.create(spec, output_dir=str(artifacts / "run2"))
    second = _poll(lambda: client.jobs.retrieve(second.id),
                   lambda j: j.terminal or (j.progress and j.progress.stages.get("generate") == "running"),
                   600, "the second job to generate")
    assert second.status is JobState.RUNNING
    client.jobs.cancel(second.id)
    second = client.jobs.wait(second.id, timeout=120, poll_interval=0.5)
    assert second.status is JobState.STOPPED and second.message == "Job was intentionally stopped."
    run2 = read(artifacts / "run2")
    assert run2.state == "STOPPED" and run2.stages["generate"].state == "stopped"
    assert run2.stages["prompts"].state == "done" and not (artifacts / "run2" / "package").exists()
    assert [m.id for m in client.models.list()] == ["run1/tiny-lora"]
    logs = _cli(head, "jobs", "logs", second.id, "--address", head.address)
    assert "[distill status]" in logs.stdout
