"""The stage graph is declared once (`distill.pipeline.stages.STAGES`): a toy stage added to a graph runs, is
skipped on a re-run, and shows up in status.json and the report, with no other code knowing about it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from distill.pipeline import graph
from distill.pipeline.runner import Runner
from distill.pipeline.stages import STAGES
from distill.report import write_report
from distill.service.status import scan
from distill.spec import parse_spec

REPO = Path(__file__).resolve().parents[1]
BUILDS: list[str] = []


def _count_words(run, item, out: Path) -> dict:
    """The toy stage: words per prompt, from the prompts stage's output."""
    BUILDS.append(str(out))
    rows = pq.read_table(run.root / "prompts" / "prompts.parquet", columns=["problem"]).to_pylist()
    words = sum(len(r["problem"].split()) for r in rows)
    (out / "words.json").write_text(json.dumps({"words": words}))
    return {"problems": len(rows), "words": words}


TOY = graph.Stage("wordcount", _count_words, inputs=("prompts",), covers=lambda run, _: [run.spec.seed])


def _spec(tmp_path: Path, limit: int):
    return parse_spec({
        "name": "toy", "output_dir": str(tmp_path / "run"), "teacher": {"model": "smollm2-135m"},
        "prompts": {"sources": [{"path": str(REPO / "datasets_spec/data/arithmetic.jsonl"), "limit": limit,
                                 "fields": {"problem": "question", "answer": "answer"}}]},
        "students": [{"name": "s", "base": "smollm2-135m"}]})


def test_toy_stage_runs_skips_and_appears_in_status_and_report(tmp_path):
    since = time.time()
    toy_graph = (STAGES[0], TOY)  # prompts, then the toy stage reading it
    summary = Runner(_spec(tmp_path, 5), stages=toy_graph).run()
    root = tmp_path / "run"
    assert list(summary["stages"]) == ["prompts", "wordcount"]
    assert summary["stages"]["wordcount"]["stats"]["problems"] == 5
    assert len(BUILDS) == 1

    Runner(_spec(tmp_path, 5), stages=toy_graph).run()  # nothing changed: skipped
    assert len(BUILDS) == 1
    Runner(_spec(tmp_path, 6), stages=toy_graph).run()  # its input changed: rebuilt
    assert len(BUILDS) == 2
    assert json.loads((root / "wordcount" / "_DONE.json").read_text())["stats"]["problems"] == 6

    assert json.loads((root / graph.PLAN_FILE).read_text()) == [
        {"key": "prompts", "stage": "prompts", "inputs": []},
        {"key": "wordcount", "stage": "wordcount", "inputs": ["prompts"]}]
    status = scan(root, since)
    assert list(status) == ["prompts", "wordcount"] and status["wordcount"].state == "done"
    page = write_report(root).read_text()
    assert "wordcount" in page


def test_the_pipeline_graph_expands_per_student_in_run_order():
    spec = {"students": [{"name": "a", "base": "org/Base 1"}, {"name": "b", "base": "org/Base 1"}],
            "eval": {"benchmarks": [{"name": "gsm8k_test"}]}}
    keys = [n.key for n in graph.plan(STAGES, spec) if n.enabled]
    assert keys == ["prompts", "generate", "verify", "sft", "eval/base-org_Base_1",
                    "train/a", "eval/a", "package/a", "train/b", "eval/b", "package/b"]
    no_bench = graph.plan(STAGES, {"students": [{"name": "a", "base": "m"}]})
    assert [n.key for n in no_bench if n.enabled] == ["prompts", "generate", "verify", "sft", "train/a", "package/a"]
    package = no_bench[-1]
    assert package.inputs == ["eval/a"]  # the skipped eval still passes its fingerprint on
    # status orders stage directories by the same graph
    assert sorted(["package/a", "eval/a", "train/a", "eval/base-m", "sft", "prompts"],
                  key=lambda k: graph.rank(STAGES, k)) == \
        ["prompts", "sft", "eval/base-m", "train/a", "eval/a", "package/a"]


def test_a_stage_reading_a_later_stage_is_refused():
    with pytest.raises(ValueError, match="stage 'wordcount' reads 'prompts', which is not before it"):
        graph.plan((TOY, STAGES[0]), {})
