"""What every teacher backend is and shares: the `TeacherBackend` protocol `generate.run_shards` drives, and the
trace helpers that turn one completion into one trace row (so every backend writes the same columns).
"""

from __future__ import annotations

import concurrent.futures as cf
import re
from typing import Protocol

from distill.spec import OpenAITeacher, Sampling, VLLMTeacher


class TeacherBackend(Protocol):
    """A teacher: `start` it, `submit` shards of prompt records (a future per shard, resolving to
    {"shard", "rows", ...}), `close` it. `capacity` is how many shards it wants in flight; `recover` says whether
    a failed shard may be re-run (its worker was replaced); `accelerators` is what it holds for the ledger."""

    name: str
    start_seconds: float
    restarts: int

    def start(self) -> None: ...

    def capacity(self) -> int: ...

    def submit(self, shard_id: int, records: list[dict], params: dict) -> cf.Future: ...

    def done(self, fut: cf.Future) -> None: ...

    def recover(self, fut: cf.Future, exc: BaseException) -> bool: ...

    def close(self) -> None: ...

    def accelerators(self) -> float: ...


def chat_preamble(teacher: VLLMTeacher | OpenAITeacher) -> list[dict]:
    """The messages every teacher request starts with: the system prompt, then the few-shot example turns."""
    messages = [{"role": "system", "content": teacher.system_prompt}] if teacher.system_prompt else []
    for turn in teacher.examples:
        messages += [{"role": "user", "content": turn.user}, {"role": "assistant", "content": turn.assistant}]
    return messages


_THINK = re.compile(r"<think>(.*?)</think>", re.S)


def split_reasoning(text: str | None, reasoning: str | None = None) -> tuple[str, str, str]:
    """Normalise an endpoint's output to (response, reasoning, answer).

    `reasoning` is a separately returned reasoning (`reasoning_content`); else it is read from an inline
    `<think>...</think>`. An unclosed `<think>` leaves the answer empty and everything in reasoning.
    `response` is the whole trace as the verifier reads it: `<think>\\nREASONING\\n</think>\\n\\nANSWER`."""
    text = text or ""
    if reasoning:
        answer = text.strip()
        return f"<think>\n{reasoning.strip()}\n</think>\n\n{answer}", reasoning.strip(), answer
    m = _THINK.search(text)
    if m:
        return text, m.group(1).strip(), text[m.end():].strip()
    if "<think>" in text:
        return text, text.split("<think>", 1)[1].strip(), ""
    return text, "", text.strip()


def trace_row(record: dict, sample_index: int, text: str | None, *, reasoning: str | None = None,
              finish_reason: str | None, prompt_tokens: int, completion_tokens: int, latency_s: float,
              teacher: str, backend: str, params: dict, seed: int | None, error: str | None = None,
              verified: bool | None = None) -> dict:
    response, reasoning_out, answer = split_reasoning(text, reasoning)
    return {
        **record,
        "sample_index": sample_index,
        "response": response,
        "reasoning": reasoning_out,
        "answer_text": answer,
        "finish_reason": "error" if error else (finish_reason or "stop"),
        "prompt_tokens": int(prompt_tokens or 0),
        "completion_tokens": int(completion_tokens or 0),
        "latency_s": round(float(latency_s), 4),
        "teacher": teacher,
        "backend": backend,
        "temperature": float(params.get("temperature", 0.0)),
        "top_p": float(params.get("top_p", 1.0)),
        "max_tokens": int(params.get("max_tokens", 0)),
        "seed": seed,
        "error": error,
        "verified": verified,
    }


def sampling_dict(sampling: Sampling | dict) -> dict:
    return sampling.model_dump() if hasattr(sampling, "model_dump") else dict(sampling)


def engine_params(params: dict) -> dict:
    """The keyword arguments of vllm.SamplingParams (without n) from a Sampling dict."""
    return {k: params[k] for k in ("temperature", "top_p", "max_tokens") if k in params}


class Adaptive:
    """Per-problem bookkeeping for `until_verified`: how many more samples each problem gets in this round."""

    def __init__(self, params: dict):
        self.k = params.get("until_verified")
        self.budget = params.get("max_samples") or params.get("n", 1)
        self.n = params.get("n", 1)

    @property
    def on(self) -> bool:
        return self.k is not None

    def first_round(self, record: dict) -> int:
        if not self.on:
            return self.n
        if not record.get("answer"):
            return 1  # nothing to verify against: one sample, like any unreferenced problem
        return min(self.k, self.budget)

    def next_round(self, record: dict, spent: int, verified: int) -> int:
        if not self.on or not record.get("answer") or verified >= self.k or spent >= self.budget:
            return 0
        return min(self.k - verified, self.budget - spent)

    def judge(self, text: str, record: dict, finish_reason: str | None) -> bool | None:
        if not self.on or not record.get("answer"):
            return None
        from distill.verify import judge

        return bool(judge(text, str(record["answer"]), finish_reason).correct)
