"""The client's pieces that need no cluster: job states, error mapping (with a fault injected by a small HTTP
server on loopback, for failures a healthy Ray cluster does not produce), the job entrypoint's spec sources and
upload, progress from a real run directory, and the model registry on a package built by `package_student`."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time

import pytest
import yaml

from distill import artifacts, progress
from distill.service import job, registry
from distill.service.client import TERMINAL_STATES, Client, JobState
from distill.service.errors import IntegrityError, JobConflict, JobNotFound, ModelNotFound, ServerError, SpecInvalid
from distill.pipeline.package import package_student
from distill.spec import SpecError, Student
from distill.service.status import StatusReporter, parse_log, read

SPEC = {"name": "unit", "output_dir": "run", "teacher": {"model": "smollm2-135m"},
        "prompts": {"sources": [{"dataset": "gsm8k_sample", "limit": 2}]},
        "students": [{"name": "s", "base": "smollm2-135m"}]}


def test_terminal_states_match_rays():
    from ray.job_submission import JobStatus

    assert {s.value for s in JobState} == {s.value for s in JobStatus}
    assert {s.value for s in TERMINAL_STATES} == {s.value for s in JobStatus if s.is_terminal()}


# -- error mapping against a job server that fails in ways a healthy cluster does not -------------------------

RAY_TRACEBACK = ("Traceback (most recent call last):\n  File \"job_head.py\", line 419, in submit_job\n"
                 "RuntimeError: Request failed with status code 400: Traceback (most recent call last):\n"
                 "  File \"job_manager.py\", line 553, in submit_job\n"
                 "ValueError: Job with submission_id j1 already exists. Please use a different submission_id.\n.\n.")


class _FaultyJobServer(http.server.BaseHTTPRequestHandler):
    """Answers the version handshake like Ray 2.60, then fails every job call in a chosen way."""

    faults = {
        "/api/jobs/crash": (500, "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                                 "KeyError: 'job_info' is missing from the GCS"),
        "/api/jobs/busy": (503, "Service Unavailable"),
        "/api/jobs/gone": (404, "Job gone does not exist."),
        "/api/jobs/": (500, RAY_TRACEBACK),
    }

    def _send(self, code: int, body: str, ctype: str = "text/plain"):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/api/version":
            return self._send(200, json.dumps({"version": "4", "ray_version": "2.60.0", "ray_commit": "x"}),
                              "application/json")
        if self.path == "/api/packages/gcs/_ray_pkg_x.zip":
            return self._send(404, "")
        self._fail()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._fail()

    def _fail(self):  # /api/jobs/<id>, /api/jobs/<id>/logs, /api/jobs/<id>/stop: by the job id
        key = next((k for k in self.faults if self.path == k or self.path.startswith(k + "/")), None)
        self._send(*self.faults.get(key, (500, "unexpected")))

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def faulty_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FaultyJobServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_server_failures_become_typed_errors_with_the_servers_message(faulty_server, tmp_path):
    client = Client(faulty_server, working_dir=None)
    with pytest.raises(ServerError) as e:
        client.jobs.retrieve("crash")
    assert e.value.status == 500 and e.value.message == "'job_info' is missing from the GCS"
    with pytest.raises(ServerError) as e:
        client.jobs.logs("busy")
    assert e.value.status == 503 and e.value.message == "Service Unavailable."
    with pytest.raises(JobNotFound) as e:
        client.jobs.cancel("gone")
    assert e.value.message == "Job gone does not exist."
    # Ray's head wraps the agent's 400 in a 500 with two tracebacks: the innermost line is the message.
    with pytest.raises(JobConflict) as e:
        client._call(client._ray.submit_job, entrypoint="true", submission_id="j1")
    assert e.value.message == "Job with submission_id j1 already exists. Please use a different submission_id."


def test_create_refuses_bad_specs_before_contacting_the_job_server(faulty_server):
    client = Client(faulty_server, working_dir=None)  # any job call to this server fails: none may be made
    bad = {**SPEC, "teacher": {"model": "smollm2-135m", "replicas": 0, "bogus": 1}, "sampling": {"n": "many"}}
    with pytest.raises(SpecInvalid) as e:
        client.jobs.create(bad, output_dir="/shared/run")
    assert e.value.message.splitlines() == ["teacher.replicas: Input should be greater than or equal to 1",
                                            "teacher.bogus: unknown key",
                                            "sampling.n: Input should be a valid integer, unable to parse string "
                                            "as an integer"]
    with pytest.raises(SpecInvalid, match="output_dir: run is not absolute"):
        client.jobs.create(SPEC)


def test_a_server_that_is_not_ray_is_reported(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ServerError, match="Version check returned 404"):
            Client(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


# -- the job entrypoint: where the spec comes from ------------------------------------------------------------

def test_job_reads_the_spec_from_a_file_a_url_the_env_and_job_metadata(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a job's working dir
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "problems.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n')
    text = yaml.safe_dump({**SPEC, "prompts": {"sources": [{"path": "problems.jsonl"}]}})
    (tmp_path / "specs" / "s.yaml").write_text(text)

    # Input paths are found next to the spec, the output goes under the working dir (as `distill run`).
    spec, origin = job.read_spec("specs/s.yaml", {})
    assert spec.prompts.sources[0].path == str(tmp_path / "specs" / "problems.jsonl")
    assert spec.output_dir == str(tmp_path / "run") and origin == "specs/s.yaml"
    (tmp_path / "problems.jsonl").write_text((tmp_path / "specs" / "problems.jsonl").read_text())
    spec, origin = job.read_spec((tmp_path / "specs" / "s.yaml").as_uri(), {})  # a URL has no directory here
    assert spec.prompts.sources[0].path == str(tmp_path / "problems.jsonl") and origin.startswith("file://")
    monkeypatch.setenv("DISTILL_SPEC", text)
    assert job.read_spec(None, {})[1] == "$DISTILL_SPEC"
    monkeypatch.delenv("DISTILL_SPEC")
    (tmp_path / "problems.jsonl").unlink()

    # As Ray's job supervisor hands metadata to the driver.
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(
        {"runtime_env": {}, "metadata": {"job_submission_id": "j9", "distill.spec": text,
                                         "distill.spec_dir": "specs"}}))
    meta = job.job_metadata()
    spec, origin = job.read_spec(None, meta)
    assert meta["job_submission_id"] == "j9" and spec.output_dir == str(tmp_path / "run")
    assert spec.prompts.sources[0].path == str(tmp_path / "specs" / "problems.jsonl")
    assert origin == "job metadata 'distill.spec'"

    with pytest.raises(SpecError, match="spec: none given"):
        job.read_spec(None, {})


def test_job_refuses_a_bad_spec_with_one_line_per_problem(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SPEC, "students": [], "filter": {"typo": 1}}))
    assert job.main(["--spec", str(bad)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "spec error: filter.typo: unknown key",
        "spec error: students: List should have at least 1 item after validation, not 0"]
    assert job.main(["--spec", (tmp_path / "missing.yaml").as_uri()]) == 2
    assert "error: cannot read spec" in capsys.readouterr().err


def test_upload_copies_a_finished_run_but_not_scratch(tmp_path):
    run = tmp_path / "run"
    (run / "package" / "s").mkdir(parents=True)
    (run / "package" / "s" / "manifest.json").write_text("{}")
    (run / "run.json").write_text("{}")
    (run / ".generate.tmp-1234").mkdir()
    (run / ".generate.tmp-1234" / "part.parquet").write_text("half")
    dest = tmp_path / "bucket" / "runs" / "r"
    assert job.upload_run(run, dest.as_uri()) == 2
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "package/s/manifest.json", "run.json"]


# -- progress, from a run directory the real stage machinery writes -------------------------------------------

def test_status_follows_the_stages_and_ends_failed(tmp_path):
    root = tmp_path / "run"
    artifacts.commit_stage(root / "prompts", "old", lambda d: {"problems": 3})  # from an earlier run
    artifacts.commit_stage(root / ".generate-shards" / "k", "x", lambda d: {})  # scratch, not a stage
    time.sleep(0.01)
    lines: list[str] = []
    reporter = StatusReporter(root, "unit", job_id="j1", interval=3600, echo=lines.append).start()
    assert reporter.status.stages["prompts"].state == "cached"

    seen = {}

    def build_generate(d):
        seen["during"] = reporter.publish()  # the stage is being built: its hidden directory exists
        with progress.Bar(None, 4, "shard") as bar:  # what the generate stage's shard loop does
            bar.update(1, traces=6)
        seen["bar"] = reporter.publish()
        return {"traces": 18}

    progress.configure(root)
    progress.set_stage("generate")
    try:
        artifacts.commit_stage(root / "generate", "fp", build_generate)
    finally:
        progress.configure(None)
        progress.set_stage(None)
    assert seen["during"].stage == "generate" and seen["during"].stages["generate"].state == "running"
    want = {"done": 1, "total": 4, "unit": "shard", "counts": {"traces": 6}}
    assert seen["bar"].stages["generate"].progress == want
    assert parse_log(lines[-1]).progress == {"generate": want}  # the line a cluster client reads back

    def build_verify(d):
        reporter.publish()
        raise RuntimeError("judge crashed")

    with pytest.raises(RuntimeError):
        artifacts.commit_stage(root / "verify", "fp", build_verify)
    final = reporter.finish("FAILED", error="RuntimeError: judge crashed")

    assert {k: v.state for k, v in final.stages.items()} == {"prompts": "cached", "generate": "done",
                                                             "verify": "failed"}
    assert final.stage == "verify" and final.counts["problems"] == 3 and final.counts["traces"] == 18
    on_disk = read(root)
    assert on_disk.state == "FAILED" and on_disk.job_id == "j1" and on_disk.error == "RuntimeError: judge crashed"
    # One log line per change; the last one is what a client reads back.
    assert len(lines) == 5
    last = parse_log("noise\n" + "\n".join(lines) + "\nmore noise [distill status] {cut")
    assert last.state == "FAILED" and last.stages["verify"] == "failed"


# -- the registry, on packages made by the real packaging stage -----------------------------------------------

def _package(run_dir, name="s", method="lora"):
    train = run_dir / "train" / name
    (train / "merged").mkdir(parents=True)
    (train / "merged" / "model.safetensors").write_bytes(b"weights-" + name.encode())
    (train / "merged" / "config.json").write_text("{}")
    if method == "lora":
        (train / "adapter").mkdir()
        (train / "adapter" / "adapter_model.safetensors").write_bytes(b"adapter")
    (train / "train_stats.json").write_text(json.dumps({"examples": 4, "steps": 2, "train_loss": 1.5}))
    scores = {"benchmarks": {"gsm8k_test": {"pass@1": 0.25, "stderr": 0.1, "problems": 4, "k": 1}},
              "decoding": {"temperature": 0.6, "top_p": 0.95, "max_tokens": 64, "seed": 0}}
    lineage = {"teacher": "t", "spec_name": run_dir.name, "spec_hash": "h", "problems": 4, "generated": 8,
               "verified": 4, "kept": 4, "drop_reasons": {}}
    out = run_dir / "package" / name
    out.mkdir(parents=True)
    package_student(train, out, Student(name=name, base="b", method=method), scores, None, lineage)
    return out


def test_registry_lists_downloads_and_checks_hashes(tmp_path):
    root = tmp_path / "artifacts"
    _package(root / "runs" / "a", "s")
    _package(root / "runs" / "b", "s")
    _package(root / "runs" / "b", "full-one", method="full")
    (root / "runs" / "b" / "package" / ".s2.tmp-1").mkdir()  # a package stage still being built

    models = registry.list_models(root)
    assert [m.id for m in models] == ["runs/a/s", "runs/b/full-one", "runs/b/s"]
    assert models[0].variants == ["adapter", "merged"] and models[1].variants == ["merged"]
    assert models[0].scores["benchmarks"]["gsm8k_test"]["pass@1"] == 0.25

    with pytest.raises(ModelNotFound, match="'s' is packaged by 2 runs; ask for one of: runs/a/s, runs/b/s"):
        registry.find(root, "s")
    with pytest.raises(ModelNotFound, match="runs/b/full-one has no 'adapter' variant"):
        registry.download(root, "full-one", "adapter", tmp_path / "x")

    dest = registry.download(root, "runs/a/s", "merged", tmp_path / "dl")
    assert (dest / "model.safetensors").read_bytes() == b"weights-s" and (dest / "config.json").exists()
    assert not list(dest.glob(".*"))

    (root / "runs" / "b" / "package" / "s" / "adapter" / "adapter_model.safetensors").write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match="adapter/adapter_model.safetensors has sha256"):
        registry.download(root, "runs/b/s", "adapter", tmp_path / "dl2")


def test_registry_reads_an_object_store_root(tmp_path):
    import fsspec

    run = tmp_path / "run"
    _package(run, "s")
    url = "memory://bucket/distill/runs/r"
    job.upload_run(run, url)
    [model] = registry.list_models("memory://bucket/distill")
    assert model.id == "runs/r/s" and model.path.startswith("memory://")
    assert model.path.endswith("/bucket/distill/runs/r/package/s")
    dest = registry.download("memory://bucket/distill", "s", "adapter", tmp_path / "dl")
    digest = hashlib.sha256((dest / "adapter_model.safetensors").read_bytes()).hexdigest()
    assert digest == model.files["adapter/adapter_model.safetensors"]
    fsspec.filesystem("memory").rm("/bucket", recursive=True)
