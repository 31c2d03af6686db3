"""Stage 4, SFT dataset: kept traces become chat examples in TRL's prompt-completion form.

The assistant turn is `<think>\\n{reasoning}\\n</think>\\n\\n{answer}` (R1's format): a teacher that already
writes `<think>` keeps its split; for one that does not, the whole response is the reasoning and the answer is
the verified final answer restated in `\\boxed{}`, so every student learns one output shape. Traces with no
reference (non-reasoning data) are kept as the teacher's answer with its think block stripped (R1 answered
simple queries without a chain of thought), unless the spec's `sft.think_non_reasoning` keeps it.

Writes `train.parquet`:
  problem_id, sample_index, prompt (list of {role, content}), completion (list of {role, content}),
and, given `card`, a Hub dataset card `README.md` (distill/export/dataset_card.py) beside it, whose `configs`
make `datasets.load_dataset(<sft dir>)` load it. It is built a record batch at a time (`distill.streaming`), so
memory stays bounded by one batch of traces whatever the number kept. (No `save_to_disk` copy in `hf/` any more:
nothing reads it (training tokenises `train.parquet`, `distill.training.tokenized`), and copying a memory-mapped
dataset keeps every page read resident until the copy ends: 6 GB at 800k traces.)
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa

from distill import schemas
from distill.mixture import non_reasoning_turn
from distill.streaming import RowWriter, iter_batches

KEPT_COLUMNS = ["problem_id", "sample_index", "prompt", "response", "extracted", "reason"]


def assistant_turn(response: str, extracted: str | None, reason: str, think_non_reasoning: bool = False) -> str:
    if reason == "unreferenced":
        return non_reasoning_turn(response, think_non_reasoning)
    if "</think>" in response:
        reasoning, answer = response.split("</think>", 1)
        reasoning = reasoning.replace("<think>", "").strip()
        answer = answer.strip()
    else:
        reasoning, answer = response.strip(), f"The final answer is $\\boxed{{{extracted}}}$."
    return f"<think>\n{reasoning}\n</think>\n\n{answer}"


def build_sft_dataset(verify_dir: Path, out_dir: Path, card: dict | None = None,
                      think_non_reasoning: bool = False) -> dict:
    """`card`: name, teacher and spec_hash for the dataset card; None writes none. `think_non_reasoning`: keep
    the teacher's <think> block in non-reasoning examples (spec `sft.think_non_reasoning`)."""
    from distill.export.dataset_card import write_dataset_card

    counts: Counter = Counter()
    with RowWriter(out_dir / "train.parquet", schemas.SFT) as out:
        for batch in iter_batches(verify_dir / "kept.parquet", KEPT_COLUMNS):
            out.write_batch(sft_batch(batch, counts, think_non_reasoning))
    if card is not None:
        write_dataset_card(out_dir, verify_dir, **card)
    return {"examples": out.written, "reasoning": counts["reasoning"], "non_reasoning": counts["non_reasoning"]}


def sft_batch(batch: pa.RecordBatch, counts: Counter, think_non_reasoning: bool = False) -> pa.Table:
    """One batch of kept traces as SFT rows (`counts`: reasoning / non_reasoning examples, updated)."""
    kept = batch.to_pydict()
    n = batch.num_rows
    reasons = kept["reason"]
    counts["non_reasoning"] += sum(r == "unreferenced" for r in reasons)
    counts["reasoning"] += n - sum(r == "unreferenced" for r in reasons)
    turns = [assistant_turn(resp, ext, why, think_non_reasoning)
             for resp, ext, why in zip(kept["response"], kept["extracted"], reasons)]
    return pa.Table.from_pydict({
        "problem_id": kept["problem_id"],
        "sample_index": kept["sample_index"],
        "prompt": [[{"role": "user", "content": p}] for p in kept["prompt"]],
        "completion": [[{"role": "assistant", "content": t}] for t in turns],
    }, schema=schemas.SFT)
