"""Stage 4, SFT dataset: kept traces become chat examples in TRL's prompt-completion form.

The assistant turn is `<think>\\n{reasoning}\\n</think>\\n\\n{answer}` (R1's format): a teacher that already
writes `<think>` keeps its split; for one that does not, the whole response is the reasoning and the answer is
the verified final answer restated in `\\boxed{}`, so every student learns one output shape. Traces with no
reference (non-reasoning data) are kept as plain answers with no think block.

Writes `train.parquet` and the same rows as an HF `datasets` dataset in `hf/`:
  problem_id, sample_index, prompt (list of {role, content}), completion (list of {role, content}),
and, given `card`, a Hub dataset card `README.md` (distill/export/dataset_card.py) beside the Parquet file.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distill import artifacts, schemas


def assistant_turn(response: str, extracted: str | None, reason: str) -> str:
    if reason == "unreferenced":
        return response.strip()
    if "</think>" in response:
        reasoning, answer = response.split("</think>", 1)
        reasoning = reasoning.replace("<think>", "").strip()
        answer = answer.strip()
    else:
        reasoning, answer = response.strip(), f"The final answer is $\\boxed{{{extracted}}}$."
    return f"<think>\n{reasoning}\n</think>\n\n{answer}"


def build_sft_dataset(verify_dir: Path, out_dir: Path, card: dict | None = None) -> dict:
    """`card`: name, teacher and spec_hash for the dataset card; None writes none."""
    import datasets

    from distill.export.dataset_card import write_dataset_card

    kept = artifacts.read_table(verify_dir, "kept.parquet").to_pylist()
    rows = [
        {
            "problem_id": r["problem_id"],
            "sample_index": r["sample_index"],
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "completion": [{"role": "assistant", "content": assistant_turn(r["response"], r["extracted"], r["reason"])}],
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
