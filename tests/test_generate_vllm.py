"""The generate stage on the real vLLM CPU engine inside a real local Ray (tiny random Llama: fast, output is
noise; SmolLM2-135M where the driver is killed): n samples per prompt, a worker killed mid-run, an engine that
stalls past the shard timeout, a driver killed with shards in flight and resumed. Every (problem_id,
sample_index) must appear exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.pipeline.generate import generate_stage, generate_table, run_shards
from distill.spec import Sampling, VLLMTeacher
from distill.teachers.vllm import VLLMBackend
from tests.conftest import REPO
from tests.faults import StallOnce

pytestmark = pytest.mark.slow

ENGINE = {"max_model_len": 256, "enforce_eager": True, "gpu_memory_utilization": 0.05}  # ~1 GiB of KV cache


def _rows(out):
    return [r for f in sorted(out.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_killed_worker_is_replaced_and_every_sample_appears_once(tiny_llama, ray_local, tmp_path):
    prompts = pa.Table.from_pylist([{"problem_id": f"p{i}", "prompt": f"What is {i} + {i}?"} for i in range(6)])
    # One sequence at a time: the shards after the first are still running when it is committed (and killed).
    teacher = VLLMTeacher(model=str(tiny_llama), num_cpus=2, batch_size=2, engine={**ENGINE, "max_num_seqs": 1})
    out = tmp_path / "generate"
    seen = []

    def kill_first_worker(info):
        seen.append(info)
        if len(seen) == 1:
            os.kill(info["pid"], signal.SIGKILL)  # the engine actor dies with shards still queued on it

    generate_table(prompts, str(tiny_llama), Sampling(n=3, temperature=1.0, max_tokens=12), teacher, seed=0,
                   out_dir=out, on_shard=kill_first_worker)
    rows = _rows(out)
    assert sorted((r["problem_id"], r["sample_index"]) for r in rows) == [
        (f"p{i}", s) for i in range(6) for s in range(3)]
    assert len(seen) == 3 and len({i["pid"] for i in seen}) == 2  # the later shards ran on a fresh worker
    for r in rows:
        assert r["finish_reason"] in ("stop", "length")
        assert 1 <= r["completion_tokens"] <= 12 and r["prompt_tokens"] > 5
        assert r["teacher"] == str(tiny_llama) and isinstance(r["response"], str)
        assert r["temperature"] == 1.0 and r["max_tokens"] == 12 and r["latency_s"] > 0 and r["error"] is None
    assert any(r["finish_reason"] == "length" for r in rows)  # a random model rarely stops by itself


DRIVER = """
import sys, threading
from pathlib import Path
from distill.pipeline.generate import generate_stage
from distill.spec import Sampling, VLLMTeacher
prompts, out, shards, model, held = map(Path, sys.argv[1:6])

def hold(info):
    # After the first committed shard: say how many shards its engine was running, then wait to be killed, so
    # the kill lands mid-run, with the other shards in flight, for sure.
    held.write_text(str(info["shards_in_engine"]))
    threading.Event().wait()

teacher = VLLMTeacher(model=str(model), num_cpus=2, batch_size=2, engine={engine!r})
generate_stage(prompts, out, teacher, Sampling(n=2, temperature=1.0, max_tokens=16), 0, shard_dir=shards,
               on_shard=hold)
"""


def _kill_group(pgid: int, timeout: float = 30.0) -> None:
    """SIGKILL a process group and wait until none of it is left (so its engine's memory is free again)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.2)


def test_killed_driver_resumes_with_only_the_missing_shards(ray_local, tmp_path):
    model = "smollm2-135m"
    ids = [f"q{i}" for i in range(10)]
    pdir = tmp_path / "prompts"
    pdir.mkdir()
    pq.write_table(pa.Table.from_pylist([{"problem_id": i, "prompt": f"Say {i}."} for i in ids]),
                   pdir / "prompts.parquet")
    shards = tmp_path / "shards"
    first_out = tmp_path / "first"
    first_out.mkdir()
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(engine=ENGINE))
    env = {**os.environ, "PYTHONPATH": str(REPO), "DISTILL_PROGRESS": "0"}
    held = tmp_path / "held"
    proc = subprocess.Popen([sys.executable, str(script), str(pdir), str(first_out), str(shards), model, str(held)], cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not held.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)  # polling for the driver's own signal: it is holding after a committed shard
        assert held.exists(), "the first driver committed no shard"
        assert int(held.read_text()) >= 2  # the engine ran other shards beside the one committed
        os.kill(proc.pid, signal.SIGKILL)  # the driver dies mid-run
        proc.wait(30)
    finally:
        _kill_group(proc.pid)  # and whatever of its local Ray survived it, engine included
    committed = sorted(p.name for p in shards.glob("shard-*.parquet"))
    assert len(committed) == 1  # the driver held after its first commit and died there
    assert not (first_out / "shard-000000.parquet").exists()  # the stage itself never finished

    out = tmp_path / "second"
    out.mkdir()
    teacher = VLLMTeacher(model=model, num_cpus=2, batch_size=2, engine=ENGINE)
    stats = generate_stage(pdir, out, teacher, Sampling(n=2, temperature=1.0, max_tokens=16), 0, shard_dir=shards)
    assert stats["shards"] == 5 and stats["shards_resumed"] == len(committed)
    assert stats["shards_generated"] == 5 - len(committed)
    rows = _rows(out)
    assert sorted((r["problem_id"], r["sample_index"]) for r in rows) == sorted((i, s) for i in ids for s in range(2))
    assert stats["traces"] == 20 and stats["completion_tokens"] == sum(r["completion_tokens"] for r in rows)
    led = stats["ledger"]
    assert led["tokens_out"] == stats["completion_tokens"] and led["accelerator_seconds"] == 0  # CPU: no GPUs


def test_a_stalled_engine_is_killed_and_its_shards_retried(tiny_llama, ray_local, tmp_path):
    """The first engine wedges at its third step; shard_timeout_s later its worker is killed, a fresh one runs
    the shards again, and nothing is lost or doubled."""
    prompts = pa.Table.from_pylist([{"problem_id": f"s{i}", "prompt": f"Count to {i}."} for i in range(4)])
    marker = tmp_path / "stalled"
    teacher = VLLMTeacher(model=str(tiny_llama), num_cpus=2, batch_size=2, shard_timeout_s=8, engine=ENGINE)
    backend = VLLMBackend(teacher, seed=0, step_hook=StallOnce(marker, step=2))
    t0 = time.time()
    res = run_shards(prompts, tmp_path / "shards", backend, Sampling(n=2, temperature=1.0, max_tokens=8).model_dump(),
                     shard_size=2, max_attempts=2)
    assert marker.exists() and backend.timeouts == 1 and res["worker_restarts"] == 1
    assert res["shards_generated"] == 2 and time.time() - t0 < 180  # retried, not waited out (the stall: 1 h)
    rows = _rows(tmp_path / "shards")
    assert sorted((r["problem_id"], r["sample_index"]) for r in rows) == [
        (f"s{i}", s) for i in range(4) for s in range(2)]
    assert all(r["error"] is None and r["completion_tokens"] >= 1 for r in rows)


def test_adaptive_rounds_in_the_engine_actor(tiny_llama, ray_local, tmp_path):
    """A random model never verifies: referenced problems use their whole budget, one round per sample, with
    the verdict recorded; an unreferenced problem gets one sample."""
    pdir = tmp_path / "prompts"
    pdir.mkdir()
    rows = [{"problem_id": f"a{i}", "answer": "987654", "prompt": f"What is {i}?"} for i in range(3)]
    rows.append({"problem_id": "free", "answer": "", "prompt": "Write a poem."})
    pq.write_table(pa.Table.from_pylist(rows), pdir / "prompts.parquet")
    out = tmp_path / "out"
    out.mkdir()
    teacher = VLLMTeacher(model=str(tiny_llama), num_cpus=2, batch_size=4, engine=ENGINE)
    stats = generate_stage(pdir, out, teacher, Sampling(until_verified=1, max_samples=3, max_tokens=6), 0)
    got = _rows(out)
    assert sorted((r["problem_id"], r["sample_index"]) for r in got) == sorted(
        [(f"a{i}", s) for i in range(3) for s in range(3)] + [("free", 0)])
    assert all(r["verified"] is False for r in got if r["problem_id"] != "free")
    assert [r["verified"] for r in got if r["problem_id"] == "free"] == [None]
    assert stats["adaptive"] == {"until_verified": 1, "max_samples": 3, "samples": 10, "verified": 0,
                                 "problems_verified": 0, "samples_per_verified": None}
