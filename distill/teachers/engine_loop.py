"""Continuous generation: one vLLM engine kept fed across shard and batch boundaries.

`EngineLoop` owns a `vllm.LLM` and one thread that steps its engine (`LLM.enqueue` to add requests,
`LLM.llm_engine.step()` to advance them: vLLM's own request-level API, the loop `LLM.generate` runs, minus the
wait for the last request). Shards are handed in from any thread (`submit`) and join the engine as soon as they
arrive; vLLM's scheduler starts each request as a slot frees (FCFS, so shards finish roughly in the order they
came). A shard's future resolves when its last request finishes. Adaptive sampling (`until_verified`) judges a
problem's samples as soon as its request finishes (on a small judging pool, so the engine keeps stepping) and
puts the problem's next round straight back into the engine, whatever the other problems are doing.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import queue
import sys
import threading
import time
import traceback
from typing import Any, Callable

from distill.teachers.base import Adaptive, engine_params, trace_row


class ShardJob:
    """One shard in the engine: its records, per-problem round bookkeeping, rows so far, and its future."""

    def __init__(self, shard_id: int, records: list[dict], params: dict, texts: list[str]):
        self.shard_id, self.records, self.params, self.texts = shard_id, records, params, texts
        self.ad = Adaptive(params)
        self.spent = [0] * len(records)
        self.verified = [0] * len(records)
        self.open = len(records)  # problems with a request in the engine or being judged
        self.rows: list[tuple[int, int, dict]] = []  # (record index, sample index, row)
        self.future: cf.Future = cf.Future()
        self.t_start = time.time()
        self.peak = 0  # the most shards the engine held at once while this one was in it


class EngineLoop:
    """A vLLM engine stepped by one thread; shards submitted from any thread run concurrently in it.

    `make_params(base, n, first_index, record_no)` builds a request's SamplingParams (seeding is the caller's
    policy). `step_hook(steps)`, when given, is called before every engine step: tests inject faults through it."""

    def __init__(self, make_llm: Callable, teacher: str, make_params: Callable,
                 step_hook: Callable[[int], None] | None = None):
        """`make_llm()` builds the vllm.LLM: it runs on the loop's own thread, because the CPU build binds the
        OpenMP threads of the thread that starts the engine, and a forward pass from any other thread runs unbound."""
        self.teacher, self.make_params, self.step_hook = teacher, make_params, step_hook
        self.inbox: queue.Queue = queue.Queue()
        self.requests: dict[str, tuple[ShardJob, int, int, float, Any]] = {}  # external id -> request
        self.jobs: set[ShardJob] = set()  # shards in the engine
        self.judges = cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="judge")
        self.steps = 0
        self.up: cf.Future = cf.Future()
        self.thread = threading.Thread(target=self._run, args=(make_llm,), name="engine-loop", daemon=True)
        self.thread.start()
        self.llm = self.up.result()  # an engine that fails to start raises here, in the actor's constructor
        self.engine = self.llm.llm_engine

    def submit(self, shard_id: int, records: list[dict], params: dict, texts: list[str]) -> cf.Future:
        job = ShardJob(shard_id, records, params, texts)
        self.inbox.put(("shard", job))
        return job.future

    # ----------------------------------------------------------------------------------------- engine thread

    def _run(self, make_llm: Callable) -> None:
        try:
            self.llm = make_llm()
            self.engine = self.llm.llm_engine
        except BaseException as e:  # noqa: BLE001 - reported to the constructor waiting on it
            self.up.set_exception(e)
            return
        self.up.set_result(self.llm)
        try:
            while True:
                busy = self.engine.has_unfinished_requests()
                self._drain(block=not busy)
                if not self.engine.has_unfinished_requests():
                    continue
                if self.step_hook is not None:
                    self.step_hook(self.steps)
                outputs = self.engine.step()
                self.steps += 1
                for out in outputs:
                    if out.finished:
                        self._finished(out)
        except BaseException:  # noqa: BLE001 - the engine is unusable: die, so the backend replaces this worker
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            os._exit(1)

    def _drain(self, block: bool) -> None:
        """Take everything waiting in the inbox; when the engine is idle, wait for the next thing to arrive."""
        try:
            item = self.inbox.get(timeout=1.0) if block else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            kind, *rest = item
            if kind == "shard":
                self._start(rest[0])
            else:  # "judged": a problem's samples have their verdicts
                self._judged(*rest)
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _start(self, job: ShardJob) -> None:
        self.jobs.add(job)
        for other in self.jobs:
            other.peak = max(other.peak, len(self.jobs))
        if not job.records:
            self._close(job)
            return
        want = [job.ad.first_round(r) for r in job.records]
        try:
            self._add(job, list(range(len(job.records))), want)
        except Exception as e:  # noqa: BLE001 - a request vLLM refuses (e.g. a prompt too long): fail this shard
            self.jobs.discard(job)
            job.future.set_exception(e)

    def _add(self, job: ShardJob, idx: list[int], want: list[int]) -> None:
        """Put problems `idx` of `job` into the engine, `want[i]` samples each (one request of n samples)."""
        params = [self.make_params(job.params, want[i], job.spent[i], i) for i in idx]
        # enqueue adds all or none (it aborts what it added if one fails), through the same prompt processing
        # as LLM.generate; its ids carry a random suffix after "-", the outputs the plain counter id.
        ids = self.llm.enqueue([job.texts[i] for i in idx], params, use_tqdm=False)
        now = time.time()
        for rid, i, sp in zip(ids, idx, params):
            self.requests[rid.split("-", 1)[0]] = (job, i, job.spent[i], now, sp)

    def _finished(self, out) -> None:
        req = self.requests.pop(out.request_id, None)
        if req is None:  # a request of a shard that failed meanwhile
            return
        job, i, first, t0, sp = req
        latency = time.time() - t0
        completions = [(c.text, c.finish_reason, len(c.token_ids)) for c in out.outputs]
        prompt_tokens = len(out.prompt_token_ids or [])
        if job.future.done():  # the shard already failed
            return
        record = job.records[i]
        if job.ad.on and record.get("answer"):
            # Judging may take a while (math-verify, code tests): off the engine thread.
            fut = self.judges.submit(lambda: [job.ad.judge(t, record, fr) for t, fr, _ in completions])
            fut.add_done_callback(lambda f: self.inbox.put(
                ("judged", job, i, first, completions, prompt_tokens, latency, sp, f)))
            return
        self._judged(job, i, first, completions, prompt_tokens, latency, sp, None)

    def _judged(self, job: ShardJob, i: int, first: int, completions: list, prompt_tokens: int, latency: float,
                sp, verdicts: cf.Future | None) -> None:
        if job.future.done():
            return
        try:
            oks = verdicts.result() if verdicts is not None else [job.ad.judge(t, job.records[i], fr)
                                                                   for t, fr, _ in completions]
        except Exception as e:  # noqa: BLE001 - a judge that raised: the shard fails like any other bug
            self._fail(job, e)
            return
        for j, ((text, finish, n_tokens), ok) in enumerate(zip(completions, oks)):
            job.verified[i] += bool(ok)
            job.rows.append((i, first + j, trace_row(
                job.records[i], first + j, text, finish_reason=finish, prompt_tokens=prompt_tokens,
                completion_tokens=n_tokens, latency_s=latency, teacher=self.teacher, backend="vllm",
                params=job.params, seed=sp.seed, verified=ok)))
        job.spent[i] += len(completions)
        more = job.ad.next_round(job.records[i], job.spent[i], job.verified[i])
        if more:
            self._add(job, [i], {i: more})
            return
        job.open -= 1
        if job.open == 0:
            self._close(job)

    def _close(self, job: ShardJob) -> None:
        """The shard's last request is done: its rows (in problem, sample order) go back to the caller."""
        job.rows.sort(key=lambda r: (r[0], r[1]))
        job.future.set_result({"shard": job.shard_id, "rows": [r for _, _, r in job.rows], "pid": os.getpid(),
                               "seconds": time.time() - job.t_start, "shards_in_engine": job.peak})
        self.jobs.discard(job)

    def _fail(self, job: ShardJob, exc: BaseException) -> None:
        stale = [rid for rid, req in self.requests.items() if req[0] is job]
        for rid in stale:
            self.requests.pop(rid)
        if stale:
            self.engine.abort_request(stale)  # external ids: vLLM aborts each with its sampling children
        self.jobs.discard(job)
        job.future.set_exception(exc)
