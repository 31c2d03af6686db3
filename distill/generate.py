"""Stage 2, generate: the teacher writes n reasoning traces per problem with vLLM's offline engine in Ray.

One Ray Data flow: read the prompts Parquet, `map_batches` over a pool of vLLM engine actors (one per
replica: data parallel), write Parquet parts. Ray Data streams, so the prompt set never has to fit in memory.
Writes one row per (problem_id, sample_index):
  the prompt columns, sample_index, response, finish_reason ("stop" | "length"), prompt_tokens,
  completion_tokens, teacher.
Evaluation reuses `generate_table` with its own sampling settings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from distill import cluster
from distill.models import resolve_model
from distill.spec import Sampling, Teacher

# On the CPU build vLLM reserves `gpu_memory_utilization` of host RAM for its KV cache (its default, 0.9,
# fails whenever anything else holds memory); 135M-1B models on a laptop need far less.
CPU_ENGINE_DEFAULTS = {"gpu_memory_utilization": 0.3, "max_model_len": 4096, "dtype": "float32"}


class VLLMWorker:
    """A Ray Data actor holding one vLLM engine. Turns a batch of prompts into n rows per prompt."""

    def __init__(self, model: str, engine: dict[str, Any], sampling: dict[str, Any], seed: int,
                 system_prompt: str | None, on_cpu: bool):
        if on_cpu:
            # In-process engine: a separate engine-core process busy-polls a whole core, which on a small CPU
            # machine is a core taken from the model (measured 121 -> 198 tokens/s on 2 cores, SmolLM2-135M).
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # per-request INFO lines drown the progress
        from vllm import LLM, SamplingParams

        opts = {**(CPU_ENGINE_DEFAULTS if on_cpu else {}), **engine}
        # Per-request seeds crash the CPU build ("CPU Generator does not use offset"): seed the engine there.
        self.llm = LLM(model=model, seed=seed, **opts)
        self.tokenizer = self.llm.get_tokenizer()
        self.params = SamplingParams(**sampling)
        self.system_prompt = system_prompt
        self.model = model

    def _chat(self, prompt: str) -> str:
        messages = [{"role": "user", "content": prompt}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        outputs = self.llm.generate([self._chat(p) for p in batch["prompt"]], self.params, use_tqdm=False)
        rows = []
        for record, out in zip(batch.to_dict("records"), outputs):
            for i, c in enumerate(out.outputs):
                rows.append({
                    **record,
                    "sample_index": i,
                    "response": c.text,
                    "finish_reason": c.finish_reason or "stop",
                    "prompt_tokens": len(out.prompt_token_ids or []),
                    "completion_tokens": len(c.token_ids),
                    "teacher": self.model,
                })
        return pd.DataFrame(rows)


def generate_table(prompts: pa.Table, model: str, sampling: Sampling | dict, teacher: Teacher, seed: int,
                   out_dir: Path | None = None) -> pa.Table | None:
    """Run prompts (a table with a `prompt` column) through `replicas` engine actors.

    With out_dir the traces are streamed into Parquet parts there as batches finish (returns None); else they
    are returned as one table."""
    import ray

    cluster.ensure_ray()
    params = sampling.model_dump() if hasattr(sampling, "model_dump") else dict(sampling)
    # Blocks are cut here, not with ds.repartition(): a repartition is a Ray task that needs a free CPU, and
    # when the engine actors hold every CPU (the usual case on one machine) it would wait forever.
    step = teacher.batch_size
    blocks = [prompts.slice(i, step) for i in range(0, prompts.num_rows, step)] or [prompts]
    ds = ray.data.from_arrow(blocks).map_batches(
        VLLMWorker,
        fn_constructor_kwargs={
            "model": resolve_model(model), "engine": teacher.engine, "sampling": params, "seed": seed,
            "system_prompt": teacher.system_prompt, "on_cpu": teacher.num_gpus == 0,
        },
        batch_size=teacher.batch_size,
        batch_format="pandas",
        concurrency=teacher.replicas,
        num_cpus=teacher.num_cpus,
        num_gpus=teacher.num_gpus,
    )
    # The driver pulls finished batches and writes them: again no extra Ray tasks competing for CPUs.
    parts = []
    for i, batch in enumerate(ds.iter_batches(batch_size=None, batch_format="pyarrow")):
        if out_dir is None:
            parts.append(batch)
        else:
            pq.write_table(batch, out_dir / f"part-{i:05d}.parquet")
    return pa.concat_tables(parts) if out_dir is None else None


def generate_stage(prompts_dir: Path, out_dir: Path, teacher: Teacher, sampling: Sampling, seed: int) -> dict:
    from distill import artifacts

    prompts = artifacts.read_table(prompts_dir, "prompts.parquet")
    generate_table(prompts, teacher.model, sampling, teacher, seed, out_dir=out_dir)
    traces = artifacts.read_table(out_dir)
    return {
        "problems": prompts.num_rows,
        "traces": traces.num_rows,
        "prompt_tokens": int(pa.compute.sum(traces["prompt_tokens"]).as_py() or 0),
        "completion_tokens": int(pa.compute.sum(traces["completion_tokens"]).as_py() or 0),
        "finish_reasons": {k: int(v) for k, v in traces.to_pandas()["finish_reason"].value_counts().items()},
    }
