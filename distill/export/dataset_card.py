"""The SFT data as a Hub-ready dataset folder: `README.md` (a dataset card) next to `train.parquet`.

The card's YAML is built with huggingface_hub's `DatasetCardData` (license, task categories, size category, and
`configs` pointing `load_dataset` at the Parquet file), its body gives the teacher, the spec hash and the verify
funnel with the drop reasons, read from the verify stage's `stats.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA_FILE = "train.parquet"
# The traces are the teacher's outputs: whoever publishes picks the license (`distill publish --license`).
DEFAULT_LICENSE = "other"


def size_category(n: int) -> str:
    """The Hub's size_categories bucket for n rows."""
    buckets = ["n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B",
               "1B<n<10B", "10B<n<100B", "100B<n<1T"]
    for power, label in enumerate(buckets, start=3):
        if n < 10**power:
            return label
    return "n>1T"


def _funnel_table(stats: dict) -> str:
    rows = ["| step | dropped | remaining |", "|---|---|---|"]
    for step in stats.get("funnel", []):
        dropped = ", ".join(f"{r} {c}" for r, c in (step.get("dropped") or {}).items()) or "-"
        rows.append(f"| {step['step']} | {dropped} | {step['remaining']} |")
    return "\n".join(rows)


def _reasons_table(stats: dict) -> str:
    rows = ["| reason | traces |", "|---|---|"]
    rows += [f"| {r} | {c} |" for r, c in stats.get("reasons", {}).items()]
    return "\n".join(rows)


def write_dataset_card(sft_dir: Path, verify_dir: Path, *, name: str, teacher: str, spec_hash: str,
                       license: str = DEFAULT_LICENSE) -> Path:
    import pyarrow.parquet as pq
    from huggingface_hub import DatasetCard, DatasetCardData

    rows = pq.ParquetFile(sft_dir / DATA_FILE).metadata.num_rows
    stats = json.loads((verify_dir / "stats.json").read_text())
    data = DatasetCardData(
        license=license,
        task_categories=["text-generation"],
        size_categories=[size_category(rows)],
        tags=["reasoning", "distillation", "synthetic", "distill"],
        pretty_name=f"{name} reasoning traces",
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": DATA_FILE}]}],
    )
    body = (
        f"# {name}: reasoning traces from {teacher}\n\n"
        f"{rows} supervised fine-tuning examples in TRL's prompt-completion form: `prompt` and `completion` are "
        f"lists of chat messages; the assistant turn is `<think>\\nreasoning\\n</think>\\n\\nanswer` with the "
        f"answer in `\\boxed{{}}`. `problem_id` and `sample_index` trace each row back to its problem and sample.\n\n"
        f"## Source\n\n- teacher: `{teacher}`\n- spec: `{name}` (sha256 prefix `{spec_hash}`)\n"
        f"- problems: {stats.get('problems')}; traces generated: {stats['generated']}; verified correct: "
        f"{stats['correct']}; kept: {stats['kept']}\n\n"
        f"Every kept trace was verified against the problem's reference answer (math-verify) and passed the "
        f"filters below. The traces are outputs of `{teacher}`: its terms of use apply to them.\n\n"
        f"## Funnel\n\n{_funnel_table(stats)}\n\n"
        f"## Drop reasons\n\nThe final reason of every generated trace (kept ones: `correct`, `unreferenced`).\n\n"
        f"{_reasons_table(stats)}\n\n"
        f"## Use\n\n```python\nfrom datasets import load_dataset\n"
        f"ds = load_dataset(\"parquet\", data_files=\"{DATA_FILE}\")  # or load_dataset(\"ORG/NAME\") once "
        f"published\n```\n"
    )
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    path = sft_dir / "README.md"
    card.save(path)
    return path
