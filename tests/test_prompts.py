"""The prompts stage and the datasets_spec catalog: field mapping, reference formats, dedup, mixtures."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from distill import catalog
from distill.pipeline.prompts import build_prompts
from distill.spec import Prompts
from tests.conftest import write_jsonl


def test_catalog_ships_the_required_entries():
    names = catalog.names()
    for n in ("gsm8k", "gsm8k_sample", "math", "math500", "gsm8k_test", "aime24", "amc23", "r1_recipe"):
        assert n in names
    mix = catalog.get("r1_recipe")
    reasoning = sum(p.count for p in mix.sources if catalog.get(p.source).answer_format != "none")
    non_reasoning = sum(p.count for p in mix.sources if catalog.get(p.source).answer_format == "none")
    assert 500_000 <= reasoning <= 700_000 and 150_000 <= non_reasoning <= 250_000


def test_build_prompts_from_catalog_and_local_file(tmp_path):
    local = write_jsonl(tmp_path / "mine.jsonl", [
        {"q": "What is 1 + 1?", "a": "2"},
        {"q": "What is 1 + 1?", "a": "2"},   # exact duplicate: dropped
        {"q": "  ", "a": "0"},               # empty: dropped
    ])
    spec = Prompts(sources=[{"dataset": "gsm8k_sample", "limit": 5},
                            {"path": str(local), "fields": {"problem": "q", "answer": "a"}}])
    stats = build_prompts(spec, tmp_path)
    table = pq.read_table(tmp_path / "prompts.parquet").to_pylist()
    assert stats["problems"] == len(table) == 6
    assert stats["by_source_or_drop"] == {"gsm8k_sample": 5, "mine": 1, "duplicate_problem": 1, "empty_problem": 1}
    gsm = next(r for r in table if r["source"] == "gsm8k_sample")  # rows are shuffled (prompts.shuffle_seed)
    assert gsm["answer_format"] == "gsm8k" and "####" not in gsm["answer"] and gsm["answer"].lstrip("-").isdigit()
    assert gsm["prompt"].startswith(gsm["problem"]) and "\\boxed{}" in gsm["prompt"]
    assert len({r["problem_id"] for r in table}) == len(table)
    # ids are content hashes: the same inputs give the same ids on every run
    build_prompts(spec, tmp_path)
    assert [r["problem_id"] for r in pq.read_table(tmp_path / "prompts.parquet").to_pylist()] == [r["problem_id"] for r in table]


def test_mixture_with_limit_scales_counts(tmp_path, monkeypatch):
    d = tmp_path / "specs"
    d.mkdir()
    (d / "tiny_mix.yaml").write_text(
        "kind: mixture\nname: tiny_mix\nsources:\n  - {source: gsm8k_sample, count: 30}\n  - {source: amc23, count: 10}\n")
    monkeypatch.setenv("DISTILL_DATASETS_SPEC", str(d))
    catalog._load.cache_clear()
    stats = build_prompts(Prompts(sources=[{"dataset": "tiny_mix", "limit": 20}]), tmp_path)
    assert stats["by_source_or_drop"] == {"gsm8k_sample": 15, "amc23": 5}
    rows = pq.read_table(tmp_path / "prompts.parquet").to_pylist()
    amc = [r for r in rows if r["source"] == "amc23"]
    assert amc and all(r["answer"] and "." not in r["answer"] for r in amc)  # AMC's 27.0 becomes 27
    catalog._load.cache_clear()


def test_missing_field_names_source_and_row(tmp_path):
    local = write_jsonl(tmp_path / "x.jsonl", [{"question": "a?"}])
    with pytest.raises(ValueError, match=r"source 'x' row 0: missing field 'answer'"):
        build_prompts(Prompts(sources=[{"path": str(local), "fields": {"problem": "question"}}]), tmp_path)
