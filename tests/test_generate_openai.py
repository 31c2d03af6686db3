"""The OpenAI-compatible backend against a local fault-injecting server (no engine: seconds), plus its helpers."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.pipeline.generate import generate_stage
from distill.teachers.base import split_reasoning
from distill.teachers.openai import backoff_delay, retry_after_seconds
from distill.spec import OpenAITeacher, Sampling

SECRET = "sk-test-DO-NOT-LEAK-4f1c2e"


class FaultServer:
    """aiohttp chat-completions server: 30% 5xx, slow replies past the client's timeout, malformed JSON,
    a 429 with Retry-After, a prompt that always fails. Even problems get `reasoning_content`, odd ones an
    inline <think>. Logs (problem, time, what it did) for every request."""

    def __init__(self):
        self.log: list[tuple[str, float, str]] = []
        self.rng = random.Random(0)
        self.seen: Counter = Counter()
        self.port = None
        self.auth_ok = True

    async def handle(self, request):
        from aiohttp import web

        if request.headers.get("Authorization") != f"Bearer {SECRET}":
            self.auth_ok = False
            return web.Response(status=401, text="bad key")
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        pid = prompt.split("|")[0]
        self.seen[pid] += 1
        self.seen[(pid, body.get("seed"))] += 1
        first = self.seen[pid] == 1
        now = time.time()

        def did(what):
            self.log.append((pid, now, what))

        if pid == "p-dead":
            did("500")
            return web.Response(status=500, text="always down")
        if pid == "p-forbidden":
            did("400")
            return web.Response(status=400, text="bad request")
        if pid == "p-429" and self.seen[(pid, body.get("seed"))] == 1:  # each sample's first request
            did("429")
            return web.Response(status=429, headers={"Retry-After": "1"}, text="slow down")
        if pid == "p-slow" and self.seen[pid] <= 2:
            did("slow")
            await asyncio.sleep(1.5)  # the client times out at 0.5 s
        if pid == "p-hang":
            did("hang")
            await asyncio.sleep(1.5)
        if pid == "p-garbage" and first:
            did("garbage")
            return web.Response(status=200, text='{"choices": [ {"message": ', content_type="application/json")
        if self.rng.random() < 0.3:
            did("503")
            return web.Response(status=503, text="overloaded")
        did("ok")
        n = int(pid.split("-")[-1]) if pid[-1].isdigit() else 0
        answer = f"The answer is \\boxed{{{n * 2}}}."
        if n % 2 == 0:
            msg = {"role": "assistant", "content": answer, "reasoning_content": f"{n} + {n} = {n * 2}"}
        else:
            msg = {"role": "assistant", "content": f"<think>\n{n} + {n} = {n * 2}\n</think>\n\n{answer}"}
        return web.json_response({"id": "x", "object": "chat.completion", "model": body["model"],
                                  "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})

    def __enter__(self):
        from aiohttp import web

        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def start():
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self.handle)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()

        self.thread = threading.Thread(target=lambda: (self.loop.run_until_complete(start()), self.loop.run_forever()),
                                       daemon=True)
        self.thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _prompts(tmp_path, ids):
    d = tmp_path / "prompts"
    d.mkdir()
    rows = [{"problem_id": i, "answer": str(2 * int(i.split("-")[-1])) if i[-1].isdigit() else "",
             "prompt": f"{i}|What is it?"} for i in ids]
    pq.write_table(pa.Table.from_pylist(rows), d / "prompts.parquet")
    return d


def test_fault_injecting_endpoint_every_sample_ends_as_trace_or_error(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("DISTILL_TEST_KEY", SECRET)
    ids = [f"p-{i}" for i in range(24)] + ["p-dead", "p-forbidden", "p-429", "p-slow", "p-hang", "p-garbage"]
    prompts = _prompts(tmp_path, ids)
    with FaultServer() as srv:
        teacher = OpenAITeacher(model="fake-r1", backend="openai", base_url=f"http://127.0.0.1:{srv.port}/v1",
                          api_key_env="DISTILL_TEST_KEY", concurrency=8, timeout_s=0.5, max_retries=4,
                          backoff_s=0.05, max_backoff_s=0.2, shard_size=7, send_seed=True)
        out = tmp_path / "generate"
        out.mkdir()
        stats = generate_stage(prompts, out, teacher, Sampling(n=2, max_tokens=64), seed=0)
    assert srv.auth_ok
    rows = [r for f in sorted(out.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    keys = [(r["problem_id"], r["sample_index"]) for r in rows]
    assert sorted(keys) == sorted((i, s) for i in ids for s in range(2))  # nothing dropped, no duplicates
    by = {k: r for k, r in zip(keys, rows)}
    for r in rows:
        assert (r["error"] is None) == (r["finish_reason"] != "error")
    # unrecoverable: error records with their reason
    assert by[("p-dead", 0)]["error"].startswith("http_500 after 5 attempt")
    assert by[("p-forbidden", 1)]["error"].startswith("http_400")
    assert "1 attempt" in by[("p-forbidden", 1)]["error"]  # a 4xx is not retried
    assert by[("p-hang", 0)]["error"].startswith("timeout after 5 attempt")
    # recoverable: traces
    for pid in [f"p-{i}" for i in range(24)] + ["p-429", "p-slow", "p-garbage"]:
        for s in range(2):
            r = by[(pid, s)]
            assert r["error"] is None, (pid, r["error"])
            n = int(pid.split("-")[-1]) if pid[-1].isdigit() else 0
            assert r["response"].startswith("<think>\n") and "</think>" in r["response"]
            assert r["reasoning"] == f"{n} + {n} = {n * 2}" and r["answer_text"] == f"The answer is \\boxed{{{n * 2}}}."
            assert r["prompt_tokens"] == 11 and r["completion_tokens"] == 7 and r["latency_s"] > 0
            assert r["teacher"] == "fake-r1" and r["backend"] == "openai" and r["max_tokens"] == 64
    # the 429's Retry-After (1 s) was honoured although the backoff cap is 0.2 s
    t429 = [t for pid, t, what in srv.log if pid == "p-429" and what == "429"]
    assert len(t429) == 2 and min(t for pid, t, what in srv.log if pid == "p-429" and what != "429") - max(t429) >= 0.9
    whats = Counter(what for _, _, what in srv.log)
    assert whats["503"] > 5 and whats["garbage"] == 1 and whats["slow"] == 2
    assert stats["errors"] == 6 and stats["traces"] == 2 * len(ids) - 6
    assert set(stats["error_reasons"]) == {"http_500 after 5 attempt(s)".split(":")[0], "http_400", "timeout after 5 attempt(s)"}
    assert stats["ledger"]["tokens_in"] == 11 * stats["traces"]
    # the key is nowhere: not in rows, stats, logs
    blob = b"".join(f.read_bytes() for f in out.rglob("*"))
    assert SECRET.encode() not in blob and SECRET not in json.dumps(stats)
    cap = capfd.readouterr()
    assert SECRET not in cap.out + cap.err


def test_resume_skips_committed_shards(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_KEY", SECRET)
    ids = [f"p-{i}" for i in range(10)]
    prompts = _prompts(tmp_path, ids)
    shard_dir = tmp_path / "shards"
    with FaultServer() as srv:
        srv.rng = random.Random(1)
        teacher = OpenAITeacher(model="m", backend="openai", base_url=f"http://127.0.0.1:{srv.port}/v1",
                          api_key_env="DISTILL_TEST_KEY", concurrency=4, timeout_s=2, backoff_s=0.01, shard_size=3)
        first = tmp_path / "a"
        first.mkdir()

        class Stop(Exception):
            pass

        def die_after_two(info):
            if info["shard"] >= 1:
                raise Stop  # the driver dies after committing two shards

        with pytest.raises(Stop):
            generate_stage(prompts, first, teacher, Sampling(n=1), 0, shard_dir=shard_dir, on_shard=die_after_two)
        committed = sorted(p.name for p in shard_dir.glob("shard-*.parquet"))
        assert 1 <= len(committed) <= 3
        first_wall = json.loads((shard_dir / "_progress.json").read_text())["wall_total_s"]
        before = sum(v for k, v in srv.seen.items() if isinstance(k, str))
        out = tmp_path / "b"
        out.mkdir()
        t0 = time.time()
        stats = generate_stage(prompts, out, teacher, Sampling(n=1), 0, shard_dir=shard_dir)
        second_wall = time.time() - t0
    # the ledger charges both calls: the interrupted one (up to its last commit) and the one that finished
    assert first_wall > 0 and first_wall <= stats["ledger"]["wall_seconds"] <= first_wall + second_wall + 0.01
    assert stats["shards_resumed"] == len(committed) and stats["shards_generated"] == 4 - len(committed)
    rows = [r for f in sorted(out.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert sorted(r["problem_id"] for r in rows) == sorted(ids)
    asked_again = {pid for pid, t, _ in srv.log[-(sum(v for k, v in srv.seen.items() if isinstance(k, str)) - before):]} if sum(v for k, v in srv.seen.items() if isinstance(k, str)) > before else set()
    done_first = {r["problem_id"] for n in committed for r in pq.read_table(out / n).to_pylist()}
    assert not (asked_again & done_first)  # committed shards were not asked for again
    assert not shard_dir.exists()


def test_split_reasoning_and_backoff():
    assert split_reasoning("A", "R") == ("<think>\nR\n</think>\n\nA", "R", "A")
    assert split_reasoning("<think> R </think> A") == ("<think> R </think> A", "R", "A")
    assert split_reasoning("<think> R never closed") == ("<think> R never closed", "R never closed", "")
    assert split_reasoning("just an answer") == ("just an answer", "", "just an answer")
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds(None) is None
    assert 0 <= retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") < 1
    rng = random.Random(0)
    delays = [backoff_delay(a, 1.0, 8.0, rng=rng) for a in range(10)]
    assert all(0 <= d <= min(8.0, 2 ** a) for a, d in enumerate(delays))
    assert backoff_delay(0, 0.1, 0.2, retry_after=5, rng=rng) == 5


class DifficultyServer(FaultServer):
    """Problem p-i is solved from sample index DIFFICULTY[i] on (sample index = the request's seed offset);
    'never' problems are never solved. No faults."""

    DIFFICULTY = [0, 0, 1, 2, 3, None, 0, 1, None, 2, 0, None]

    async def handle(self, request):
        from aiohttp import web

        body = await request.json()
        pid = body["messages"][-1]["content"].split("|")[0]
        i = int(pid.split("-")[-1])
        sample = body["seed"]  # seed 0 in the spec: the seed is the sample index
        self.seen[pid] += 1
        d = self.DIFFICULTY[i]
        value = 2 * i if d is not None and sample >= d else 2 * i + 1
        return web.json_response({"choices": [{"message": {"content": f"<think>hm</think> \\boxed{{{value}}}"},
                                               "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 3, "completion_tokens": 5}})


def test_adaptive_sampling_spends_fewer_samples_for_the_same_verified_problems(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_KEY", SECRET)
    ids = [f"p-{i}" for i in range(len(DifficultyServer.DIFFICULTY))]
    prompts = _prompts(tmp_path, ids)
    budget = 4
    with DifficultyServer() as srv:
        teacher = OpenAITeacher(model="m", backend="openai", base_url=f"http://127.0.0.1:{srv.port}/v1",
                          api_key_env="DISTILL_TEST_KEY", concurrency=4, send_seed=True, shard_size=5)
        runs = {}
        for name, sampling in {"fixed": Sampling(n=budget),
                               "adaptive": Sampling(until_verified=1, max_samples=budget)}.items():
            out = tmp_path / name
            out.mkdir()
            stats = generate_stage(prompts, out, teacher, sampling, 0)
            rows = [r for f in sorted(out.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
            from distill.verify import judge

            ok = {r["problem_id"] for r in rows if judge(r["response"], r["answer"], r["finish_reason"]).correct}
            runs[name] = (stats, rows, ok)
    (_, fixed, fixed_ok), (ast, adaptive, ad_ok) = runs["fixed"], runs["adaptive"]
    solvable = {f"p-{i}" for i, d in enumerate(DifficultyServer.DIFFICULTY) if d is not None and d < budget}
    assert fixed_ok == ad_ok == solvable  # the same problems end up with a verified trace
    assert len(fixed) == budget * len(ids)
    # adaptive: d + 1 samples for a problem solved at index d, the whole budget for the unsolved ones
    expect = sum(d + 1 if d is not None else budget for d in DifficultyServer.DIFFICULTY)
    assert len(adaptive) == expect < len(fixed)
    a = ast["adaptive"]
    assert a["samples"] == expect and a["verified"] == len(solvable) == a["problems_verified"]
    assert a["samples_per_verified"] == round(expect / len(solvable), 3)
    assert sorted((r["problem_id"], r["sample_index"]) for r in adaptive) == sorted(
        (f"p-{i}", s) for i, d in enumerate(DifficultyServer.DIFFICULTY)
        for s in range(d + 1 if d is not None else budget))


class EchoServer(FaultServer):
    """Records every request's messages and answers at once."""

    async def handle(self, request):
        from aiohttp import web

        body = await request.json()
        self.log.append(body["messages"])
        return web.json_response({"choices": [{"message": {"content": "\\boxed{2}"}, "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 3, "completion_tokens": 2}})


def test_system_prompt_and_few_shot_turns_precede_every_prompt(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_KEY", SECRET)
    prompts = _prompts(tmp_path, ["p-1", "p-2"])
    examples = [{"user": "1 + 1?", "assistant": "1 + 1 = 2\nThe answer is \\boxed{2}."},
                {"user": "2 x 3?", "assistant": "2 x 3 = 6\nThe answer is \\boxed{6}."}]
    with EchoServer() as srv:
        teacher = OpenAITeacher(model="m", backend="openai", base_url=f"http://127.0.0.1:{srv.port}/v1",
                                api_key_env="DISTILL_TEST_KEY", system_prompt="Be brief.", examples=examples)
        out = tmp_path / "gen"
        out.mkdir()
        generate_stage(prompts, out, teacher, Sampling(n=1), 0)
    preamble = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "1 + 1?"}, {"role": "assistant", "content": "1 + 1 = 2\nThe answer is \\boxed{2}."},
                {"role": "user", "content": "2 x 3?"}, {"role": "assistant", "content": "2 x 3 = 6\nThe answer is \\boxed{6}."}]
    assert sorted(srv.log, key=str) == [preamble + [{"role": "user", "content": f"{p}|What is it?"}]
                                        for p in ("p-1", "p-2")]
