"""Ordinary mistakes, made the way a new user makes them: each must end in the exact one-line error (or the exact
output), before anything expensive starts, with no Python traceback. CLI cases run the real `distill` command in
a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import REPO

ARITH = REPO / "datasets_spec" / "data" / "arithmetic.jsonl"
PREFIXES = ("error:", "spec error:", "spec warning:", "stopped:", "interrupted:")


def distill(*args, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "DISTILL_PROGRESS": "0", "HF_HUB_OFFLINE": "1",
                **(env or {})}
    return subprocess.run([sys.executable, "-m", "distill.cli", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=REPO)


def messages(proc: subprocess.CompletedProcess) -> list[str]:
    """The user-facing lines on stderr (library chatter such as vLLM's import notice is left out)."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return [line for line in proc.stderr.splitlines() if line.startswith(PREFIXES)]


def jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


ROW = {"problem": "What is 2+2?", "answer": 4, "response": "<think>2+2</think> The answer is \\boxed{4}."}


# ---------------------------------------------------------------- distill validate / run / Client.jobs.create

def _spec(tmp_path, **over) -> str:
    spec = {
        "name": "hostile", "output_dir": str(tmp_path / "run"),
        "teacher": {"model": "gpt-x", "backend": "openai", "base_url": "http://127.0.0.1:9/v1"},
        "prompts": {"sources": [{"path": str(ARITH), "fields": {"problem": "question", "answer": "answer"}}]},
        "students": [{"name": "s", "base": "smollm2-135m"}],
    }
    for key, value in over.items():
        spec[key] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_validate_names_each_unrunnable_field_without_an_engine(tmp_path):
    """API teacher (no vLLM needed): sources, models, output_dir each fail on their own line."""
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "no_weights").mkdir()
    (tmp_path / "no_weights" / "config.json").write_text("{}")
    (tmp_path / "array.jsonl").write_text('["not", "a", "row"]\n')
    (tmp_path / "traces").mkdir()
    spec = _spec(tmp_path, output_dir=str(tmp_path / "a_file" / "run"),
                 prompts={"sources": [{"path": "empty.jsonl"}, {"path": str(ARITH), "fields": {"problem": "q"}},
                                      {"path": "array.jsonl"}, {"path": "traces"}]},
                 students=[{"name": "a", "base": "my model"}, {"name": "b", "base": str(tmp_path / "no_weights")},
                           {"name": "c", "base": "./no/such/dir"}, {"name": "d", "base": "nosuch-org/nosuch-model"}])
    proc = distill("validate", spec)
    assert proc.returncode == 2
    d = tmp_path
    assert messages(proc) == [
        "spec warning: students[3].base: could not check 'nosuch-org/nosuch-model': not in the local cache and the "
        "Hub did not answer (OfflineModeIsEnabled)",
        "spec error: students[0].base: 'my model' is not a local directory, a built-in model (smollm2-135m) or a "
        "Hub id (owner/name)",
        f"spec error: students[1].base: {d}/no_weights has no *.safetensors weights",
        "spec error: students[2].base: directory not found: ./no/such/dir",
        f"spec error: prompts.sources[0].path: {d}/empty.jsonl has no rows",
        f"spec error: prompts.sources[1].path: {ARITH} has no column 'q' (the problem); columns: id, question, answer",
        f"spec error: prompts.sources[2].path: {d}/array.jsonl: the first row must be a JSON object, got a string",
        f"spec error: prompts.sources[3].path: {d}/traces is a directory, not a .jsonl or .parquet file",
        f"spec error: output_dir: cannot create {d}/a_file/run: {d}/a_file is a file",
    ]


def test_validate_checks_sampling_and_engine_keys_against_vllm(tmp_path):
    """vLLM teacher: its own SamplingParams decides the ranges, its EngineArgs the engine keys."""
    (tmp_path / "out").write_text("a file where the run directory should be")
    spec = _spec(tmp_path, output_dir=str(tmp_path / "out"),
                 teacher={"model": "smollm2-135m", "engine": {"max_modle_len": 1024, "seed": 1, "enforce_eager": True}},
                 sampling={"temperature": 5, "top_p": 1.0},
                 eval={"benchmarks": ["gsm8k_test"], "temperature": 2.5})
    proc = distill("validate", spec)
    assert proc.returncode == 2
    assert messages(proc) == [
        "spec error: sampling.temperature: temperature must be in [0, 2], got 5.0 (vLLM's SamplingParams)",
        "spec error: eval.temperature: temperature must be in [0, 2], got 2.5 (vLLM's SamplingParams)",
        "spec error: teacher.engine.max_modle_len: not a keyword argument of vLLM's engine (did you mean "
        "'max_model_len'?)",
        "spec error: teacher.engine.seed: set by distill from the spec's 'seed'; remove it here",
        f"spec error: output_dir: {tmp_path}/out is a file, not a directory",
    ]


def test_validate_checks_the_eval_engines_on_their_own(tmp_path):
    """An API teacher with GPU-placed student eval: eval's own engine keys and GPUs are checked."""
    spec = _spec(tmp_path, eval={"benchmarks": ["gsm8k_test"], "num_gpus": 2,
                                 "engine": {"max_modle_len": 1024, "model": "x", "tensor_parallel_size": 4}})
    proc = distill("validate", spec)
    assert proc.returncode == 2
    assert messages(proc) == [
        "spec error: eval.engine.max_modle_len: not a keyword argument of vLLM's engine (did you mean "
        "'max_model_len'?)",
        "spec error: eval.engine.model: set by distill from the spec's 'students'; remove it here",
        "spec error: eval.num_gpus: 2.0 per replica but tensor_parallel_size x pipeline_parallel_size is 4: set "
        "num_gpus to 4 (or 1 per engine worker)",
    ]


def test_run_refuses_before_starting_anything(tmp_path):
    spec = _spec(tmp_path, prompts={"sources": [{"path": "empty.jsonl"}]})
    (tmp_path / "empty.jsonl").write_text("\n\n")
    proc = distill("run", spec)
    assert proc.returncode == 2
    assert messages(proc) == [f"spec error: prompts.sources[0].path: {tmp_path}/empty.jsonl has no rows"]
    assert not (tmp_path / "run").exists()  # nothing created, no Ray, no engine


def test_a_good_spec_validates(tmp_path):
    proc = distill("validate", _spec(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert messages(proc) == []
    assert proc.stdout.startswith("ok: hostile: 1 prompt source(s), 1 student(s)")


def test_jobs_create_runs_the_same_checks_before_contacting_the_cluster(tmp_path, faulty_server):
    from distill.service.client import Client
    from distill.service.errors import SpecInvalid

    (tmp_path / "empty.jsonl").write_text("")
    client = Client(faulty_server, working_dir=None)  # any job call to this server fails: none may be made
    spec = yaml.safe_load(open(_spec(tmp_path, prompts={"sources": [{"path": str(tmp_path / "empty.jsonl")}]},
                                     students=[{"name": "s", "base": str(tmp_path / "nomodel")}])))
    with pytest.warns(UserWarning, match=r"students\[0\].base: .*nomodel is not visible here"):
        with pytest.raises(SpecInvalid) as e:
            client.jobs.create(spec, output_dir="/shared/run")
    assert e.value.message == f"prompts.sources[0].path: {tmp_path}/empty.jsonl has no rows"


def test_submit_refuses_with_the_same_lines(tmp_path, faulty_server):
    (tmp_path / "empty.jsonl").write_text("")
    spec = _spec(tmp_path, prompts={"sources": [{"path": str(tmp_path / "empty.jsonl")}]})
    proc = distill("submit", spec, "--address", faulty_server, "--no-working-dir", "--output-dir", "/shared/run")
    assert proc.returncode == 2
    assert messages(proc) == [f"spec error: prompts.sources[0].path: {tmp_path}/empty.jsonl has no rows"]


from tests.test_client_unit import faulty_server  # noqa: E402,F401 - the fixture: a job server that fails every call


# ---------------------------------------------------------------- distill verify: paths, checked before judging

@pytest.mark.parametrize("case,expected", [
    ("input_dir", "error: {d}/in_dir: is a directory; give a .jsonl, .parquet or .csv file"),
    ("input_missing", "error: {d}/nope.jsonl: file not found"),
    ("output_dir", "error: {d}/out_dir.jsonl: is a directory; give a file name ending in .jsonl, .parquet or .csv"),
    ("parent_is_file", "error: {d}/a_file/out.jsonl: {d}/a_file is a file, not a directory"),
    ("unwritable", "error: {d}/ro/out.jsonl: cannot write in {d}/ro: Permission denied"),
    ("unknown_format", "error: {d}/out.txt: unknown output format '.txt' (use .jsonl, .parquet or .csv)"),
    ("same_file", "error: {d}/in.jsonl: is the input file; write the verdicts to another file"),
])
def test_verify_checks_its_paths_first(tmp_path, case, expected):
    d = tmp_path
    src = jsonl(d / "in.jsonl", [ROW])
    (d / "in_dir").mkdir()
    (d / "out_dir.jsonl").mkdir()
    (d / "a_file").write_text("x")
    (d / "ro").mkdir()
    args = {"input_dir": (d / "in_dir", d / "o.jsonl"), "input_missing": (d / "nope.jsonl", d / "o.jsonl"),
            "output_dir": (src, d / "out_dir.jsonl"), "parent_is_file": (src, d / "a_file" / "out.jsonl"),
            "unwritable": (src, d / "ro" / "out.jsonl"), "unknown_format": (src, d / "out.txt"),
            "same_file": (src, src)}[case]
    if case == "unwritable":
        if os.geteuid() == 0:  # root writes past any mode bit; sysfs refuses new files even to root
            args = (src, "/sys/judged.jsonl")
            expected = "error: /sys/judged.jsonl: cannot write in /sys: Permission denied"
        else:
            os.chmod(d / "ro", 0o500)
    proc = distill("verify", *args, "--workers", "1")
    assert proc.returncode == 2
    assert messages(proc) == [expected.format(d=d)]


# ---------------------------------------------------------------- distill verify: rows

def test_bad_rows_are_named_by_file_line_and_column(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join([
        json.dumps(ROW).encode() + b"\n",
        b'{"problem": "a", "answer": 1, "response": oops}\n',                 # line 2: bad JSON
        b'["a", "JSON", "array"]\n',                                          # line 3: not an object
        b'{"problem": "b", "answer": "1", "response": "caf\xe9"}\n',          # line 4: Latin-1 byte
        b'{"problem": "c", "answer": [1, 2], "response": "x"}\n',             # line 5: answer is a list
        b'{"problem": "d", "answer": "1", "response": 12}\n',                 # line 6: response is a number
        b'\n',
        b'{"problem": {"x": 1}, "answer": true, "response": "x"}\n',          # line 8: two bad columns
    ]))
    proc = distill("verify", src, tmp_path / "out.jsonl", "--workers", "1")
    assert proc.returncode == 2
    assert messages(proc) == [
        f"error: {src}: line 2, column 43: not valid JSON (Expecting value)",
        f"error: {src}: line 3: a row must be a JSON object, got an array",
        f"error: {src}: line 4, column 49: not valid UTF-8 (byte 0xe9)",
        f"error: {src}: line 5, column 'answer': must be a string or a number, got an array",
        f"error: {src}: line 6, column 'response': must be a string, got an integer",
        f"error: {src}: line 8, column 'problem': must be a string or a number, got an object",
        f"error: {src}: line 8, column 'answer': must be a string or a number, got a boolean",
    ]
    assert not (tmp_path / "out.jsonl").exists()


def test_missing_columns_and_an_empty_file(tmp_path):
    missing = jsonl(tmp_path / "m.jsonl", [{"problem": "a", "answer": "1"}])
    proc = distill("verify", missing, tmp_path / "o.jsonl")
    assert messages(proc) == [f"error: {missing}: missing column(s) response (need problem, answer, response)"]
    (tmp_path / "e.jsonl").write_text("\n")
    proc = distill("verify", tmp_path / "e.jsonl", tmp_path / "o.jsonl")
    assert proc.returncode == 2 and messages(proc) == [f"error: {tmp_path}/e.jsonl: no rows"]


def test_types_survive_and_the_extension_picks_the_format(tmp_path):
    """An integer answer stays an integer, a huge one stays exact in JSONL; a BOM is skipped."""
    rows = [ROW, {**ROW, "problem": "What is 10^30?", "answer": 10**30, "response": "\\boxed{10^{30}}"},
            {**ROW, "problem": "Half?", "answer": 0.5, "response": "\\boxed{1/2}", "extra": {"k": [1]}}]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in rows).encode())
    out = tmp_path / "out.jsonl"
    proc = distill("verify", src, out, "--workers", "1")
    assert proc.returncode == 0 and messages(proc) == []
    assert proc.stdout == f"3 rows -> {out}: correct 3\n"
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["answer"] for g in got] == [4, 10**30, 0.5]
    assert type(got[0]["answer"]) is int and got[2]["extra"] == {"k": [1]}
    assert [(g["correct"], g["reason"], g["kept"]) for g in got] == [(True, "correct", True)] * 3

    csv_out = tmp_path / "out.csv"
    assert distill("verify", src, csv_out, "--workers", "1").returncode == 0
    lines = csv_out.read_text().splitlines()
    assert lines[0] == "problem,answer,response,extra,extracted,correct,reason,kept,detail"
    assert lines[1].startswith("What is 2+2?,4,")

    # Parquet needs one type per column: a huge integer and mixed types are refused before judging
    proc = distill("verify", src, tmp_path / "out.parquet", "--workers", "1")
    assert proc.returncode == 2
    assert messages(proc) == [f"error: {src}: line 2, column 'answer': integer 10000000000000000000... does not fit "
                              f"Parquet's int64; write .jsonl to keep it exact"]
    mixed = jsonl(tmp_path / "mixed.jsonl", [ROW, {**ROW, "answer": "4"}])
    proc = distill("verify", mixed, tmp_path / "out.parquet", "--workers", "1")
    assert messages(proc) == [f"error: {mixed}: column 'answer' mixes an integer (line 1) and a string (line 2); "
                              f"Parquet needs one type per column: write .jsonl to keep each value's type"]
    ints = jsonl(tmp_path / "ints.jsonl", [ROW, {**ROW, "problem": "p2"}])
    assert distill("verify", ints, tmp_path / "ok.parquet", "--workers", "1").returncode == 0
    table = pq.read_table(tmp_path / "ok.parquet")
    assert table.schema.field("answer").type == pa.int64() and table.column("answer").to_pylist() == [4, 4]


def test_a_50_megabyte_line(tmp_path):
    big = {**ROW, "response": "<think>" + "step " * 10_000_000 + "</think> \\boxed{4}"}
    src = jsonl(tmp_path / "big.jsonl", [big, ROW])
    assert os.path.getsize(src) > 50_000_000
    out = tmp_path / "out.jsonl"
    proc = distill("verify", src, out, "--workers", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert messages(proc) == []
    reasons = [json.loads(line)["reason"] for line in out.read_text().splitlines()]
    assert reasons == ["repetition", "correct"]  # 10M repeats of "step ": a loop, dropped as such


# ---------------------------------------------------------------- distill verify: interrupts, progress

def _slow_input(tmp_path, n=3000):
    # every pair needs math-verify (no fast path for expanded polynomials): seconds of checker work
    rows = [{"problem": f"Expand (x+{i})^2", "answer": f"x^2+{2 * i}x+{i * i}", "response": f"\\boxed{{(x+{i})^2}}"}
            for i in range(1, n + 1)]
    return jsonl(tmp_path / "slow.jsonl", rows)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_no_output_and_no_traceback(tmp_path, sig):
    src = _slow_input(tmp_path)
    out = tmp_path / "out" / "judged.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO), "DISTILL_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "distill.cli", "verify", src, str(out), "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    time.sleep(4)
    assert proc.poll() is None, proc.communicate()
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C reaches the whole process group, checker children included
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err[-3000:]
    assert [line for line in err.splitlines() if line.strip()] == [
        "interrupted: stopped before finishing; no partial output was written"]
    assert proc.returncode == 130
    assert not out.exists()
    assert not (out.parent.exists() and list(out.parent.iterdir()))  # no temporary file left either


def test_every_verify_phase_shows_on_the_bar_and_in_the_progress_file(tmp_path):
    src = _slow_input(tmp_path, n=40)
    run_dir = tmp_path / "run"
    proc = distill("verify", src, tmp_path / "out.jsonl", "--workers", "1",
                   env={"DISTILL_PROGRESS": "1", "DISTILL_RUN_DIR": str(run_dir)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for phase in ("fast checks", "symbolic checks", "dedup", "writing"):
        assert f"verify: {phase}" in proc.stderr, phase
    rec = json.loads((run_dir / ".progress" / "verify.json").read_text())
    assert (rec["phase"], rec["done"], rec["total"]) == ("writing", 40, 40)


def test_status_json_carries_the_phase(tmp_path):
    from distill import progress
    from distill.service import status

    progress.configure(tmp_path)
    try:
        (tmp_path / ".verify.tmp-1234").mkdir()  # a stage being built
        with progress.Bar("verify", 10, "check", phase="symbolic checks") as bar:
            bar.update(4)
        stages = status.scan(tmp_path, since=0)
    finally:
        progress.configure(None)
    assert stages["verify"].progress == {"done": 4, "total": 10, "unit": "check", "counts": {},
                                         "phase": "symbolic checks"}


# ---------------------------------------------------------------- dedup scope

def test_identical_traces_of_different_problems_are_both_kept(tmp_path):
    from distill.spec import Filter
    from distill.verify import verify_file

    same = "<think>Count them.</think> The answer is \\boxed{4}."
    rows = [{"problem": "What is 2+2?", "answer": "4", "response": same},
            {"problem": "How many legs has a cat?", "answer": "4", "response": same},
            {"problem": "How many legs has a cat?", "answer": "4", "response": same}]
    src = jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    verify_file(src, out, spec_filter=Filter(dedup_problems=False))
    assert [json.loads(x)["reason"] for x in out.read_text().splitlines()] == ["correct", "correct",
                                                                               "duplicate_trace"]
    verify_file(src, out, spec_filter=Filter(dedup_problems=False, dedup_traces_scope="global"))
    assert [json.loads(x)["reason"] for x in out.read_text().splitlines()] == ["correct", "duplicate_trace",
                                                                               "duplicate_trace"]


# ---------------------------------------------------------------- leftovers

def test_clean_removes_leftovers_and_unreachable_shard_sets_and_respects_a_live_run(tmp_path):
    from distill import cleanup

    run = tmp_path / "run"
    current = run / ".generate-shards" / "fedcba9876543210"
    old = run / ".generate-shards" / "0123456789abcdef"
    cleanup.note_current_shards(run, current.name)  # what the runner records before generating
    for d, size in ((current, 10), (old, 2048), (run / ".verify.tmp-ab12", 1024), (run / "train" / ".s.tmp-cd34", 0)):
        d.mkdir(parents=True)
        (d / "part").write_bytes(b"x" * size)

    with cleanup.run_lock(run):  # a live run holds the directory: clean must not touch it
        proc = distill("clean", run)
    assert proc.returncode == 2
    assert messages(proc) == [f"error: {run}: another distill process is using this run directory"]

    proc = distill("clean", run)
    assert proc.returncode == 0 and messages(proc) == []
    assert proc.stdout.splitlines() == [
        "removed .verify.tmp-ab12: 1.0 KiB",
        "removed train/.s.tmp-cd34: 0 B",
        "removed .generate-shards/0123456789abcdef: 2.0 KiB",
        f"freed 3.0 KiB in {run}",
    ]
    assert current.exists() and not old.exists() and (run / "train").exists()


# ---------------------------------------------------------------- an empty stage (a real, tiny run)

@pytest.mark.slow
def test_verify_keeping_nothing_stops_clearly_with_the_funnel_and_a_report(tmp_path):
    """max_tokens 1: every trace is cut off, verify keeps none. The run stops there (exit 2, one line and the
    funnel), writes its report, and never reaches training. A killed run's leftover is removed on the way."""
    run = tmp_path / "run"
    (run / ".verify.tmp-dead0001").mkdir(parents=True)  # what a killed run leaves
    spec = _spec(tmp_path, output_dir=str(run),
                 teacher={"model": "smollm2-135m", "num_cpus": 2,
                          "engine": {"max_model_len": 256, "enforce_eager": True}},
                 prompts={"sources": [{"path": str(ARITH), "fields": {"problem": "question", "answer": "answer"},
                                       "limit": 2}]},
                 sampling={"n": 2, "max_tokens": 1})
    proc = distill("run", spec, timeout=900)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert messages(proc) == ["stopped: verify kept 0 of 4 traces (truncated 4): nothing to train on"]
    funnel = proc.stderr.split("stopped: ", 1)[1].splitlines()[1:]
    assert funnel[0] == "funnel:" and funnel[1].split() == ["generated", "4"]
    assert funnel[-1].split() == ["kept", "0"]
    assert any(line.split()[:3] == ["trace_filters", "0", "dropped:"] for line in funnel)
    assert "removed .verify.tmp-dead0001" in proc.stdout
    assert not (run / ".verify.tmp-dead0001").exists()
    assert (run / "report.html").exists() and (run / "verify" / "_DONE.json").exists()
    assert not (run / "sft").exists() and not (run / "train").exists()


def test_parquet_input_keeps_its_columns_and_types_in_every_format(tmp_path):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"problem": ["What is 2+2?", "And 3+3?"], "answer": [4, 6],
                             "response": ["\\boxed{4}", "\\boxed{7}"], "source": ["a", "b"]}), src)
    for ext in ("jsonl", "parquet", "csv"):
        proc = distill("verify", src, tmp_path / f"out.{ext}", "--workers", "1")
        assert proc.returncode == 0 and messages(proc) == []
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(g["answer"], g["source"], g["reason"]) for g in got] == [(4, "a", "correct"), (6, "b", "incorrect")]
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == ["problem", "answer", "response", "source", "extracted", "correct", "reason", "kept",
                                  "detail"]
    assert table.schema.field("answer").type == pa.int64()
    assert (tmp_path / "out.csv").read_text().splitlines()[2].startswith("And 3+3?,6,\\boxed{7},b,7,false,incorrect")
