"""The OpenAI-compatible teacher backend: vLLM or SGLang servers, hosted APIs (DeepSeek, ...).

One chat-completions request per (problem, sample index), `teacher.concurrency` in flight at once (async httpx
in a background event loop), each with `teacher.timeout_s`. 429, 5xx, timeouts, connection errors and malformed
replies are retried up to `teacher.max_retries` times with exponential backoff and full jitter
(`backoff_s` x 2^attempt, capped at `max_backoff_s`), never sooner than a `Retry-After` header asks. A sample
that still fails, or fails in a way a retry cannot fix (4xx), becomes an error row (finish_reason "error",
`error` = the reason, e.g. "http_503 after 6 attempts"): every sample ends as a trace or an error record.

The API key is read from the environment variable named by `teacher.api_key_env` and only ever put in the
Authorization header: it is not logged, not in any row, stats or exception text.

`reasoning_content` (DeepSeek, vLLM's reasoning parsers; newer vLLM calls it `reasoning`) and inline
`<think>...</think>` are normalised by `distill.teachers.base.split_reasoning` to the same fields.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import email.utils
import json
import os
import random
import threading
import time

from distill.spec import OpenAITeacher
from distill.teachers.base import Adaptive, chat_preamble, engine_params, trace_row

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class RequestFailed(Exception):
    def __init__(self, reason: str, retryable: bool, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.retryable, self.retry_after = reason, retryable, retry_after


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Full jitter: uniform(0, min(cap, base x 2^attempt)), but never less than Retry-After."""
    rng = rng or random
    delay = rng.uniform(0, min(cap, base * (2 ** attempt)))
    if retry_after is not None:
        delay = max(delay, retry_after)  # the server knows when it will take us back
    return delay


def parse_completion(body: dict) -> dict:
    """The fields we keep from a chat-completions reply; raises RequestFailed('malformed_reply') if absent."""
    try:
        choice = body["choices"][0]
        msg = choice["message"]
        content = msg.get("content")
        reasoning = msg.get("reasoning_content") or msg.get("reasoning")
        if content is None and reasoning is None:
            raise KeyError("content")
        usage = body.get("usage") or {}
        return {"text": content or "", "reasoning": reasoning, "finish_reason": choice.get("finish_reason"),
                "prompt_tokens": usage.get("prompt_tokens", 0), "completion_tokens": usage.get("completion_tokens", 0)}
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise RequestFailed(f"malformed_reply: missing {e}", retryable=True) from None


class OpenAIBackend:
    name = "openai"

    def __init__(self, teacher: OpenAITeacher, seed: int, teacher_id: str | None = None):
        self.teacher, self.seed = teacher, seed
        self.url = teacher.base_url.rstrip("/") + "/chat/completions"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.start_seconds = 0.0
        self.restarts = 0
        self._headers = {"Content-Type": "application/json"}
        if teacher.api_key_env:
            key = os.environ.get(teacher.api_key_env)
            if not key:
                raise RuntimeError(f"teacher.api_key_env: environment variable {teacher.api_key_env} is not set")
            self._headers["Authorization"] = f"Bearer {key}"

    def __repr__(self) -> str:  # never show the headers
        return f"OpenAIBackend({self.url})"

    # -- backend interface used by generate.run_shards
    def start(self) -> None:
        import httpx

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="openai-backend")
        self.thread.start()

        async def setup():
            self.sem = asyncio.Semaphore(self.teacher.concurrency)
            limits = httpx.Limits(max_connections=self.teacher.concurrency,
                                  max_keepalive_connections=self.teacher.concurrency)
            self.client = httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(self.teacher.timeout_s),
                                            headers=self._headers)

        asyncio.run_coroutine_threadsafe(setup(), self.loop).result()

    def capacity(self) -> int:
        per_shard = (self.teacher.shard_size or self.teacher.batch_size)
        return max(2, -(-self.teacher.concurrency // per_shard) + 1)

    def submit(self, shard_id: int, records: list[dict], params: dict) -> cf.Future:
        return asyncio.run_coroutine_threadsafe(self._shard(shard_id, records, params), self.loop)

    def done(self, fut: cf.Future) -> None:
        pass

    def recover(self, fut: cf.Future, exc: BaseException) -> bool:
        return False  # per-request failures are already error rows; anything else is a bug to surface

    def close(self) -> None:
        if self.loop is None:
            return
        async def shutdown():
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()  # shards still in flight when the driver gave up
            await asyncio.sleep(0)
            await self.client.aclose()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()
        self.loop = None

    def accelerators(self) -> float:
        return 0.0  # someone else's GPUs: priced per token

    # -- requests
    async def _shard(self, shard_id: int, records: list[dict], params: dict) -> dict:
        t0 = time.time()
        per_record = await asyncio.gather(*(self._record(i, r, params) for i, r in enumerate(records)))
        rows = [row for rows in per_record for row in rows]
        return {"shard": shard_id, "rows": rows, "pid": os.getpid(), "seconds": time.time() - t0}

    async def _record(self, record_no: int, record: dict, params: dict) -> list[dict]:
        ad = Adaptive(params)
        rows: list[dict] = []
        spent = verified = 0
        want = ad.first_round(record)
        while want:
            got = await asyncio.gather(*(self._sample(record, spent + j, params) for j in range(want)))
            for row in got:
                if ad.on and row["error"] is None:
                    row["verified"] = ad.judge(row["response"], record, row["finish_reason"])
                    verified += bool(row["verified"])
            rows.extend(got)
            spent += want
            want = ad.next_round(record, spent, verified)
        return rows

    def _body(self, record: dict, sample_index: int, params: dict) -> dict:
        messages = [*chat_preamble(self.teacher), {"role": "user", "content": record["prompt"]}]
        body = {"model": self.teacher.model, "messages": messages, "n": 1, **engine_params(params)}
        if self.teacher.send_seed:
            body["seed"] = self.seed * 1_000_003 + sample_index
        return body

    async def _sample(self, record: dict, sample_index: int, params: dict) -> dict:
        import httpx

        t = self.teacher
        body = self._body(record, sample_index, params)
        t0 = time.time()
        reason = "unknown"
        attempts = 0
        for attempt in range(t.max_retries + 1):
            attempts = attempt + 1
            try:
                async with self.sem:
                    got = await self._post(body, httpx)
                return trace_row(record, sample_index, got["text"], reasoning=got["reasoning"],
                                 finish_reason=got["finish_reason"], prompt_tokens=got["prompt_tokens"],
                                 completion_tokens=got["completion_tokens"], latency_s=time.time() - t0,
                                 teacher=t.model, backend="openai", params=params, seed=body.get("seed"))
            except RequestFailed as e:
                reason = e.reason
                if not e.retryable or attempt == t.max_retries:
                    break
                await asyncio.sleep(backoff_delay(attempt, t.backoff_s, t.max_backoff_s, e.retry_after))
        return trace_row(record, sample_index, "", finish_reason="error", prompt_tokens=0, completion_tokens=0,
                         latency_s=time.time() - t0, teacher=t.model, backend="openai", params=params,
                         seed=body.get("seed"), error=f"{reason} after {attempts} attempt(s)")

    async def _post(self, body: dict, httpx) -> dict:
        try:
            r = await self.client.post(self.url, json=body)
        except httpx.TimeoutException:
            raise RequestFailed("timeout", retryable=True) from None
        except httpx.TransportError as e:
            raise RequestFailed(f"connection_error: {type(e).__name__}", retryable=True) from None
        if r.status_code in RETRY_STATUS or r.status_code >= 500:
            raise RequestFailed(f"http_{r.status_code}", retryable=True,
                                retry_after=retry_after_seconds(r.headers.get("retry-after")))
        if r.status_code >= 400:
            raise RequestFailed(f"http_{r.status_code}: {r.text[:200]}", retryable=False)
        try:
            data = json.loads(r.content)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RequestFailed("malformed_json", retryable=True) from None
        if not isinstance(data, dict):
            raise RequestFailed("malformed_json: not an object", retryable=True)
        return parse_completion(data)

