"""Stage 4, SFT dataset: kept traces become chat examples in TRL's prompt-completion form.

The assistant turn is `<think>\\n{reasoning}\\n</think>\\n\\n{answer}` (R1's format): a teacher that already
writes `<think>` keeps its split; for one that does not, the whole response is the reasoning and the answer is
the verified final answer restated in `\\boxed{}`, so every student learns one output shape. Traces with no
reference (non-reasoning data) are kept as the teacher's answer with its think block stripped (R1 answered
simple queries without a chain of thought), unless the spec's `sft.think_non_reasoning` keeps it.

Writes `train.parquet` and the same rows as an HF `datasets` dataset in `hf/`:
  problem_id, sample_index, prompt (list of {role, content}), completion (list of {role, content}),
and, given `card`, a Hub dataset card `README.md` (distill/export/dataset_card.py) beside the Parquet file.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distill import artifacts, schemas
from distill.mixture import non_reasoning_turn


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
    import datasets

    from distill.export.dataset_card import write_dataset_card

    kept = artifacts.read_table(verify_dir, "kept.parquet").to_pylist()
    rows = [
        {
            "problem_id": r["problem_id"],
            "sample_index": r["sample_index"],
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "completion": [{"role": "assistant", "content": assistant_turn(r["response"], r["extracted"], r["reason"],
                                                                         think_non_reasoning)}],
        }
        for r in kept
    ]
    table = pa.Table.from_pylist(rows, schema=schemas.SFT)
    pq.write_table(table, out_dir / "train.parquet")
    datasets.Dataset(table).save_to_disk(str(out_dir / "hf"))
    if card is not None:
        write_dataset_card(out_dir, verify_dir, **card)
    return {"examples": len(rows), "reasoning": sum(r["reason"] != "unreferenced" for r in kept),
            "non_reasoning": sum(r["reason"] == "unreferenced" for r in kept)}
