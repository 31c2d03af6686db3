"""The vLLM engines of on-policy distillation, each in a Ray actor (as the generation stage's engines are):

  student engine   samples the rollouts, from token ids; takes the trainer's new weights each round (`load_weights`)
  teacher engine   scores given token sequences: the log-probability of each given token and of its top-k
                   alternatives, from vLLM's `prompt_logprobs` (one prefill, nothing sampled)

The engine runs in the actor's own process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so new weights reach the model with
a plain call (the worker's `reload_weights`) rather than crossing to an engine-core process.
"""

from __future__ import annotations

import os
import time
from typing import Any


class TokenEngine:
    """A Ray actor holding one vLLM engine that works on token ids (no chat templating: the trainer tokenizes)."""

    def __init__(self, model: str, engine: dict[str, Any], seed: int):
        t0 = time.time()
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        from vllm import LLM

        self.llm = LLM(model=model, seed=seed, **engine)
        self.start_seconds = time.time() - t0
        self.weight_loads = 0

    def info(self) -> dict:
        return {"pid": os.getpid(), "start_seconds": self.start_seconds, "weight_loads": self.weight_loads}

    def generate(self, prompt_ids: list[list[int]], max_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 n: int = 1) -> list[list[dict]]:
        """Per prompt, `n` samples: {"ids": completion token ids, "logprobs": the sampler's log-probability of each
        (the model's raw distribution, as the teacher scores it)}."""
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p, logprobs=0)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompt_ids], params, use_tqdm=False)
        return [[{"ids": list(c.token_ids),
                  "logprobs": [step[tid].logprob for step, tid in zip(c.logprobs or [], c.token_ids)]}
                 for c in out.outputs] for out in outs]

    def load_weights(self, named: list[tuple[str, Any]]) -> int:
        """New weights from the trainer (HF parameter names; vLLM's loader maps and fuses them). The prefix cache is
        dropped: cached keys and values were computed with the old weights."""
        # vLLM's in-place reload (the worker's `reload_weights`): it re-runs the layers' post-load processing, which
        # the CPU build needs (its linear layers repack their weights after loading; a plain `load_weights` into the
        # repacked layers fails).
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(named),
                                                          "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()
        self.weight_loads += 1
        return len(named)

    def score(self, sequences: list[list[int]], prompt_lengths: list[int], top_logprobs: int = 1) -> dict[str, list]:
        """The teacher's log-probabilities of given sequences' completion tokens, in the shape TRL's
        `VLLMClient.get_sequence_logprobs` returns (what `ServerDistillationTrainer` reads): per completion token
        the top-k log-probabilities (descending) and their ids, and the log-probability of the actual token."""
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=top_logprobs)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=s) for s in sequences], params, use_tqdm=False)
        result: dict[str, list] = {"logprobs": [], "logprob_token_ids": [], "actual_logprobs": [],
                                   "actual_token_ids": []}
        for seq, start, out in zip(sequences, prompt_lengths, outs):
            top, top_ids, actual, actual_ids = [], [], [], []
            for pos in range(start, len(seq)):
                step = out.prompt_logprobs[pos] or {}
                ranked = sorted(((lp.logprob, tid) for tid, lp in step.items() if lp.rank <= top_logprobs),
                                reverse=True)[:top_logprobs]
                ranked += [(float("-inf"), 0)] * (top_logprobs - len(ranked))
                top.append([lp for lp, _ in ranked])
                top_ids.append([tid for _, tid in ranked])
                hit = step.get(seq[pos])
                actual.append([hit.logprob if hit is not None else float("-inf")])
                actual_ids.append([seq[pos]])
            result["logprobs"].append(top)
            result["logprob_token_ids"].append(top_ids)
            result["actual_logprobs"].append(actual)
            result["actual_token_ids"].append(actual_ids)
        return result


def start_engines(models: list[tuple[str, dict[str, Any]]], seed: int, num_cpus: float = 1, num_gpus: float = 0):
    """One `TokenEngine` actor per (model, engine settings); every engine is up when this returns. If one fails to
    start, none is left running.

    CPU engines start all at once: each start is its own process's imports, model load and warm-up, so they
    overlap, and their KV cache is a fixed size. GPU engines start one after another, as vLLM sizes a GPU's KV
    cache from the memory it sees free while it profiles, which another engine starting on the same GPU changes."""
    import ray

    from distill import cluster

    cluster.ensure_ray()
    actors: list = []
    try:
        for model, engine in models:
            actors.append(ray.remote(TokenEngine).options(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0,
                                                          max_concurrency=1).remote(model, engine, seed))
            if num_gpus:
                ray.get(actors[-1].info.remote())
        ray.get([actor.info.remote() for actor in actors])
    except BaseException:
        for actor in actors:
            ray.kill(actor)
        raise
    return actors
