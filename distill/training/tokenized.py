"""The SFT dataset tokenised once, in parallel, and cached in the run directory for every trainer that reads it.

`tokenized_sft(sft_dir, tok, max_length)` returns the SFT examples as token ids with their labels, built the
first time by HF `datasets`' `map(num_proc=...)` over the memory-mapped `sft/hf/` dataset and saved under
`<run>/tokenized/<key>/`; later calls (another student with the same tokenizer, every Ray Train rank, a re-run)
memory-map that copy instead of tokenising again. The key covers what changes the tokens: the SFT data (its
files' names, sizes and modification times: a rebuilt sft stage writes new ones), the tokenizer's vocabulary,
special tokens and chat template, `max_length`, and `TOKENIZE_VERSION`.

The tokens are exactly what TRL's SFTTrainer computes for a conversational prompt-completion example (TRL 1.x,
`SFTTrainer._prepare_dataset`): the prompt rendered with the generation prompt, the prompt + completion rendered
whole, the completion starting where the two diverge (`trl.data_utils.common_prefix_length`), and labels -100
over the prompt: completion-only loss. We write `labels` ourselves so TRL uses them as they are and does not
tokenise again (a dataset with `input_ids` is taken as processed; with `labels`, its masks are not rebuilt).
Examples longer than `max_length` are dropped and counted, never truncated (see `distill.training.sft`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

TOKENIZE_VERSION = "1"  # bump when the tokens or labels written for the same inputs change
MAP_BATCH = 256  # examples per tokeniser call: a few MB of R1-length traces
MIN_ROWS_PER_PROC = 2000  # smaller datasets are tokenised in-process: starting workers would cost more


def _features():
    import datasets

    ids = datasets.List(datasets.Value("int32"))  # int32: half the disk of the default int64, any vocabulary fits
    return datasets.Features({"input_ids": ids, "labels": ids})


def tokenizer_digest(tok) -> str:
    """What of a tokenizer decides the tokens: its vocabulary and rules, special tokens and chat template."""
    h = hashlib.sha256()
    backend = getattr(tok, "backend_tokenizer", None)
    h.update((backend.to_str() if backend is not None else json.dumps(sorted(tok.get_vocab().items()))).encode())
    h.update(json.dumps([type(tok).__name__, tok.chat_template, tok.special_tokens_map], sort_keys=True,
                        default=str).encode())
    return h.hexdigest()


def data_identity(hf_dir: Path) -> list:
    """The SFT dataset's files by name, size and modification time: cheaper than hashing gigabytes of traces, and a
    rebuilt sft stage always writes new files."""
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(hf_dir.iterdir()) if p.is_file()]


def cache_key(hf_dir: Path, tok, max_length: int) -> str:
    blob = json.dumps([TOKENIZE_VERSION, data_identity(hf_dir), tokenizer_digest(tok), max_length]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def tokenize_batch(batch: dict, tok, max_length: int) -> dict:
    """input_ids, labels (-100 over the prompt) and n_tokens of each example no longer than `max_length`."""
    from trl.data_utils import common_prefix_length

    prompts = batch["prompt"]
    whole = [p + c for p, c in zip(prompts, batch["completion"])]
    prompt_ids = tok.apply_chat_template(prompts, add_generation_prompt=True, tokenize=True,
                                         return_dict=True)["input_ids"]
    ids = tok.apply_chat_template(whole, tokenize=True, return_dict=True)["input_ids"]
    out: dict[str, list] = {"input_ids": [], "labels": []}
    for p, full in zip(prompt_ids, ids):
        if len(full) > max_length:
            continue
        n = common_prefix_length(p, full)
        out["input_ids"].append(full)
        out["labels"].append([-100] * n + full[n:])
    return out


def tokenized_sft(sft_dir: Path, tok, max_length: int, cache_root: Path | None = None,
                  num_proc: int | None = None):
    """(dataset of input_ids + labels, examples dropped as longer than max_length, tokens kept). `cache_root`:
    default `<run>/tokenized` beside `sft_dir`; `num_proc`: default all cores."""
    import datasets

    hf_dir = Path(sft_dir) / "hf"
    root = Path(cache_root) if cache_root else Path(sft_dir).parent / "tokenized"
    root.mkdir(parents=True, exist_ok=True)
    key = cache_key(hf_dir, tok, max_length)
    done = root / key
    # One builder at a time (two students starting together, or ranks of a job whose driver did not build it);
    # the others wait here and then read what it wrote.
    with open(root / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (done / "stats.json").exists():
            _build(hf_dir, done, tok, max_length, num_proc)
    stats = json.loads((done / "stats.json").read_text())
    # datasets 5 saves an empty dataset with no shards, which `load_from_disk` cannot read back
    ds = datasets.load_from_disk(str(done / "data")) if stats["examples"] else datasets.Dataset.from_dict(
        {"input_ids": [], "labels": []}, features=_features())
    return ds, stats["dropped_over_max_length"], stats["tokens"]


def _build(hf_dir: Path, done: Path, tok, max_length: int, num_proc: int | None) -> None:
    import datasets
    import pyarrow.compute as pc

    source = datasets.load_from_disk(str(hf_dir))  # memory-mapped: nothing is read into Python here
    procs = num_proc or os.cpu_count() or 1
    procs = max(1, min(procs, len(source) // MIN_ROWS_PER_PROC))
    tmp = done.parent / f".{done.name}.tmp-{uuid.uuid4().hex[:8]}"
    (tmp / "map").mkdir(parents=True)
    try:
        ds = source.map(tokenize_batch, batched=True, batch_size=MAP_BATCH, num_proc=procs if procs > 1 else None,
                        fn_kwargs={"tok": tok, "max_length": max_length}, remove_columns=source.column_names,
                        features=_features(), cache_file_name=str(tmp / "map" / "tokens.arrow"),
                        new_fingerprint=done.name, desc="tokenising")
        ds.save_to_disk(str(tmp / "data"))
        tokens = sum(pc.sum(pc.list_value_length(chunk)).as_py() or 0
                     for chunk in ds.data.column("input_ids").chunks)
        stats = {"examples": len(ds), "dropped_over_max_length": len(source) - len(ds), "tokens": int(tokens),
                 "max_length": max_length, "processes": procs}
        del ds
        shutil.rmtree(tmp / "map", ignore_errors=True)
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
        shutil.rmtree(done, ignore_errors=True)
        os.rename(tmp, done)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
