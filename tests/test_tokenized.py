"""The tokenisation cache: the same tokens and loss mask as TRL's own preparation, built once and re-used, rebuilt
when max_length or the chat template changes; and the SFT dataset built a batch at a time."""

from __future__ import annotations

import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.pipeline.sft import assistant_turn, build_sft_dataset
from distill.spec import Student
from distill.training import tokenized
from distill.training.sft import build_trainer, load_sft, tokenizer_for

EXAMPLES = [("What is 2 + 3?", "2 + 3 = 5", "5", "correct"),
            ("What is 4 + 4?", "<think>4 and 4 make 8.</think>\nSo it is $\\boxed{8}$.", "8", "correct"),
            ("Say hello in French.", "Bonjour !", None, "unreferenced"),
            ("What is 10 / 4?", "10 / 4 = 2.5, " * 30, "2.5", "correct")]


def _sft_dir(tmp_path, n_copies: int = 1):
    import datasets

    rows = [{"prompt": [{"role": "user", "content": q}],
             "completion": [{"role": "assistant", "content": assistant_turn(r, a, why)}]}
            for q, r, a, why in EXAMPLES] * n_copies
    sft = tmp_path / "sft"
    datasets.Dataset.from_list(rows).save_to_disk(str(sft / "hf"))
    return sft


@pytest.mark.parametrize("arch,packing", [("llama", False), ("qwen2", True)])
def test_cached_tokens_and_labels_equal_trls_own_preparation(arch, packing, tmp_path, request):
    """The pre-tokenised dataset gives TRL exactly the training rows (ids and the prompt's -100 labels, packed or
    not) that TRL builds itself from the prompt-completion examples."""
    import datasets

    base = request.getfixturevalue(f"tiny_{arch}")
    student = Student(name="s", base=str(base), method="full", max_length=128, packing=packing)
    sft = _sft_dir(tmp_path)
    cached, too_long, n_tokens = load_sft(sft, student)
    raw = datasets.load_from_disk(str(sft / "hf")).select(range(3))  # TRL is given the ones within max_length
    ours = build_trainer(cached, student, tmp_path / "a", seed=0).train_dataset
    trls = build_trainer(raw, student, tmp_path / "b", seed=0).train_dataset
    assert too_long == 1  # the long one
    assert n_tokens == sum(len(ids) for ids in cached["input_ids"])
    columns = ["input_ids", "labels"] + (["seq_lengths"] if packing else [])
    assert set(columns) <= set(ours.column_names)
    assert ours.select_columns(columns).to_dict() == trls.select_columns(columns).to_dict()
    labels = cached[0]["labels"]
    assert labels[0] == -100 and labels[-1] != -100  # the prompt is masked, the completion (and its end) is not


def test_cache_is_reused_and_rebuilt_when_max_length_or_template_changes(tmp_path, tiny_qwen2, monkeypatch):
    calls = []
    real = tokenized.tokenize_batch
    monkeypatch.setattr(tokenized, "tokenize_batch", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    sft = _sft_dir(tmp_path)
    student = Student(name="s", base=str(tiny_qwen2), method="full", max_length=128)
    first, dropped, _ = load_sft(sft, student)
    assert calls and dropped == 1
    built = len(calls)
    again, _, _ = load_sft(sft, student)  # a second student, a re-run, or a Ray Train rank
    assert len(calls) == built and again["input_ids"] == first["input_ids"]
    assert len(list((tmp_path / "tokenized").glob("*/stats.json"))) == 1

    longer, dropped, _ = load_sft(sft, student.model_copy(update={"max_length": 4096}))
    assert len(calls) > built and dropped == 0 and len(longer) == len(first) + 1
    built = len(calls)
    other = student.model_copy(update={"chat_template": "qwen3"})
    templated, _, _ = load_sft(sft, other)
    assert len(calls) > built and templated["input_ids"] != first["input_ids"]
    assert len(list((tmp_path / "tokenized").glob("*/stats.json"))) == 3
    # the SFT data rebuilt (new files): tokenised again
    built = len(calls)
    _sft_dir(tmp_path)
    load_sft(sft, student)
    assert len(calls) > built


@pytest.mark.slow  # starts tokeniser processes (~15 s)
def test_tokenising_in_worker_processes_gives_the_same_cache(tmp_path, tiny_qwen2, monkeypatch):
    sft = _sft_dir(tmp_path, n_copies=1200)  # 4,800 examples: two processes
    tok = tokenizer_for(Student(name="s", base=str(tiny_qwen2)))
    one, _, tokens_one = tokenized.tokenized_sft(sft, tok, 128, cache_root=tmp_path / "one", num_proc=1)
    two, _, tokens_two = tokenized.tokenized_sft(sft, tok, 128, cache_root=tmp_path / "two", num_proc=2)
    stats = (tmp_path / "two").glob("*/stats.json")
    assert '"processes": 2' in next(stats).read_text()
    assert tokens_one == tokens_two and one["labels"] == two["labels"]


def test_sft_dataset_is_built_a_batch_at_a_time(tmp_path):
    """128 MB of kept traces become the SFT dataset with Python objects for a few batches at most: the stage never
    holds the kept table as rows."""
    from distill import schemas

    n, chars = 16_000, 8_000
    verify = tmp_path / "verify"
    verify.mkdir()
    body = ("Let us add the numbers step by step and check each one. " * (chars // 56 + 1))[:chars]
    schema = schemas.verified_schema(pa.schema([("problem_id", pa.string()), ("prompt", pa.string()),
                                                ("sample_index", pa.int64()), ("response", pa.string())]))
    with pq.ParquetWriter(verify / "kept.parquet", schema) as w:
        for a in range(0, n, 2000):
            m = min(2000, n - a)
            w.write_table(pa.table({
                "problem_id": [f"p{i}" for i in range(a, a + m)], "prompt": ["What is 1 + 1?"] * m,
                "sample_index": [0] * m, "response": [f"{i} {body}" for i in range(a, a + m)],
                "extracted": ["2"] * m, "correct": [True] * m, "reason": ["correct"] * m, "kept": [True] * m,
                "detail": [None] * m}, schema=schema))
    out = tmp_path / "sft"
    out.mkdir()
    tracemalloc.start()
    try:
        stats = build_sft_dataset(verify, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats == {"examples": n, "reasoning": n, "non_reasoning": 0}
    assert peak < 48 * 2**20, f"peak Python memory {peak / 2**20:.0f} MiB for {n * chars / 2**20:.0f} MiB of traces"
    written = pq.ParquetFile(out / "train.parquet")
    last = written.read_row_group(written.num_row_groups - 1)
    assert written.metadata.num_rows == n and written.num_row_groups > 1
    assert last.column("completion")[-1].as_py()[0]["content"].startswith(f"<think>\n{n - 1} Let us")
