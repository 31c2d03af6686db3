"""The SFT dataset tokenised once, in parallel, and cached in the run directory for every trainer that reads it.

`tokenized_sft(sft_dir, tok, max_length)` returns the SFT examples as token ids with their labels, built the
first time by spawned worker processes (one per core) and kept under `<run>/tokenized/<key>/` as the Arrow files
they wrote with HF `datasets`' writer; later calls (another student with the same tokenizer, every Ray Train rank,
a re-run) memory-map those instead of tokenising again. The key covers what changes the tokens: the SFT data
(its files' names, sizes and modification times: a rebuilt sft stage writes new ones), the tokenizer's
vocabulary, special tokens and chat template, `max_length`, and `TOKENIZE_VERSION`.

The workers run over the row groups of `sft/train.parquet`, each reading its own with pyarrow: not over a
memory-mapped copy, whose pages, once read, would stay in every worker's resident memory for the whole pass (6 GB
of traces at 800k examples). A directory with only `hf/` (a `save_to_disk` copy) is first written out as Parquet.

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

TOKENIZE_VERSION = "2"  # bump when the tokens or labels written for the same inputs change
MAP_BATCH = 256  # examples per tokeniser call: a few MB of R1-length traces
PARQUET = "train.parquet"
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


def data_identity(sft_dir: Path) -> list:
    """The SFT data's files (`train.parquet`, `hf/`) by name, size and modification time: cheaper than hashing
    gigabytes of traces, and a rebuilt sft stage always writes new files."""
    files = [sft_dir / PARQUET, *(sorted((sft_dir / "hf").iterdir()) if (sft_dir / "hf").is_dir() else [])]
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files if p.is_file()]


def cache_key(sft_dir: Path, tok, max_length: int) -> str:
    blob = json.dumps([TOKENIZE_VERSION, data_identity(sft_dir), tokenizer_digest(tok), max_length]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def tokenize_batch(batch: dict, tok, max_length: int) -> dict:
    """input_ids and labels (-100 over the prompt) of each example no longer than `max_length`."""
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


def tokenize_row_groups(path: str, groups: list[int], tok, max_length: int, out_file: str) -> tuple[int, int]:
    """Tokenise the examples of the Parquet row groups `groups` a few hundred at a time into the Arrow file
    `out_file` (datasets' own writer: `Dataset.from_file` maps it), so the caller holds Python objects for one
    small batch only. Returns (examples written, tokens written)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.arrow_writer import ArrowWriter

    pf = pq.ParquetFile(path)
    types = {"input_ids": pa.list_(pa.int32()), "labels": pa.list_(pa.int32())}
    examples = tokens = 0
    with ArrowWriter(features=_features(), path=out_file) as writer:
        for group in groups:
            for rows in pf.read_row_group(group, columns=["prompt", "completion"]).to_batches(MAP_BATCH):
                out = tokenize_batch(rows.to_pydict(), tok, max_length)
                writer.write_table(pa.table({k: pa.array(v, types[k]) for k, v in out.items()}))
                examples += len(out["input_ids"])
                tokens += sum(map(len, out["input_ids"]))
        writer.finalize()
    return examples, tokens


def tokenized_sft(sft_dir: Path, tok, max_length: int, cache_root: Path | None = None,
                  num_proc: int | None = None):
    """(dataset of input_ids + labels, examples dropped as longer than max_length, tokens kept). `cache_root`:
    default `<run>/tokenized` beside `sft_dir`; `num_proc`: default all cores."""
    import datasets

    sft_dir = Path(sft_dir)
    root = Path(cache_root) if cache_root else sft_dir.parent / "tokenized"
    root.mkdir(parents=True, exist_ok=True)
    key = cache_key(sft_dir, tok, max_length)
    done = root / key
    # One builder at a time (two students starting together, or ranks of a job whose driver did not build it);
    # the others wait here and then read what it wrote.
    with open(root / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (done / "stats.json").exists():
            _build(sft_dir, done, tok, max_length, num_proc)
    stats = json.loads((done / "stats.json").read_text())
    parts = [datasets.Dataset.from_file(str(done / name)) for name in stats["files"]]
    ds = datasets.concatenate_datasets(parts) if parts else datasets.Dataset.from_dict(
        {"input_ids": [], "labels": []}, features=_features())
    return ds, stats["dropped_over_max_length"], stats["tokens"]


def release_free_memory() -> None:
    """Hand back to the OS the memory this process has freed but its allocators keep, before the tokeniser
    workers start: the driver's RSS counts in the process tree's peak for the whole (long) tokenising pass. Arrow's
    pool keeps freed buffers (`release_unused`); glibc keeps freed pages in its arenas, one per thread that
    allocated, and returns only what lies at an arena's top: after an 800k-trace verify stage (whose executor
    threads unpickle every batch's results), 0.5 GB of the driver's 0.98 GB RSS was glibc's heap and thread
    arenas. `malloc_trim(0)` releases every whole free page in all of them (glibc only: elsewhere it is skipped)."""
    import ctypes
    import gc

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim this way
        pass


def _chunks(n_groups: int, procs: int) -> list[list[int]]:
    """Contiguous runs of row groups (the files concatenate in the source's order), about 8 per process: the
    load evens out over long and short traces, and progress shows as runs finish."""
    n = min(n_groups, procs * 8) if procs > 1 else 1
    bounds = [round(i * n_groups / n) for i in range(n + 1)]
    return [list(range(a, b)) for a, b in zip(bounds, bounds[1:]) if b > a]


def _build(sft_dir: Path, done: Path, tok, max_length: int, num_proc: int | None) -> None:
    import datasets
    import pyarrow.parquet as pq

    tmp = done.parent / f".{done.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        source = sft_dir / PARQUET
        if not source.exists():
            source = tmp / "source.parquet"
            datasets.load_from_disk(str(sft_dir / "hf")).select_columns(["prompt", "completion"]).to_parquet(
                str(source), batch_size=MAP_BATCH)
        meta = pq.ParquetFile(source).metadata
        procs = num_proc or os.cpu_count() or 1
        procs = max(1, min(procs, meta.num_rows // MIN_ROWS_PER_PROC, meta.num_row_groups))
        chunks = _chunks(meta.num_row_groups, procs)
        jobs = [(str(source), groups, tok, max_length, str(tmp / f"tokens-{i:05d}.arrow"))
                for i, groups in enumerate(chunks)]
        results = _run(jobs, procs)
        files = [Path(job[-1]).name for job, (n, _) in zip(jobs, results) if n]
        for job, (n, _) in zip(jobs, results):
            if not n:
                Path(job[-1]).unlink(missing_ok=True)
        examples = sum(n for n, _ in results)
        stats = {"examples": examples, "dropped_over_max_length": meta.num_rows - examples,
                 "tokens": sum(t for _, t in results), "max_length": max_length, "processes": procs,
                 "files": files}
        (tmp / "source.parquet").unlink(missing_ok=True)
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
        shutil.rmtree(done, ignore_errors=True)
        os.rename(tmp, done)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _run(jobs: list[tuple], procs: int) -> list[tuple[int, int]]:
    """`tokenize_row_groups` over `jobs`: in this process, or in `procs` spawned ones.

    Spawned, not forked, and so not `datasets.map(num_proc=...)`, whose pool forks: a forked worker starts with
    every resident page of its parent and its RSS counts them all again (after an 800k-trace verify stage the
    driver holds ~1 GB, and three copies of it were most of the 3.6 GB tree this stage peaked at). A spawned
    worker holds only the tokenizer and the batch it is on. (Spawning re-imports the caller's `__main__` script:
    entry scripts need a `__main__` guard, as vLLM's CPU build already requires.)"""
    from datasets.utils import tqdm

    if procs == 1:
        return [tokenize_row_groups(*job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    release_free_memory()  # this process's RSS counts in the tree's peak for the whole pass
    results: list = [None] * len(jobs)
    with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn")) as pool, \
            tqdm(total=len(jobs), desc=f"tokenising ({procs} processes)", unit="parts") as bar:
        futures = {pool.submit(tokenize_row_groups, *job): i for i, job in enumerate(jobs)}
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            bar.update(1)
    return results
