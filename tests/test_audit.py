"""`distill audit`: the verifier measured on the labelled regression set (failure cases reported against
math-verify, Qwen's grader and lm-eval's extractors), and the sample-then-label loop on a run's verdicts."""

from __future__ import annotations

import json

from distill.cli import main
from distill.verify.audit import score
from tests.conftest import REPO, write_jsonl

REGRESSION = REPO / "tests" / "data" / "verifier_regression.jsonl"


def _rows():
    return [json.loads(line) for line in REGRESSION.read_text().splitlines() if line.strip()]


def test_regression_set_is_well_formed():
    rows = _rows()
    assert len(rows) >= 60
    for r in rows:
        assert {"problem", "answer", "response", "label", "source"} <= set(r), r
        assert isinstance(r["label"], bool) and r["source"]
    assert 0.3 < sum(r["label"] for r in rows) / len(rows) < 0.7  # both kinds of error can show


def test_verifier_on_the_regression_set(capsys):
    """Every labelled case: no wrong trace kept (false positive), no right trace dropped (false negative)."""
    res = score(_rows(), workers=2)
    assert res["mistakes"] == []
    assert res["precision"] == 1.0 and res["recall"] == 1.0
    assert main(["audit", str(REGRESSION), "--min-precision", "1.0", "--min-recall", "1.0", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "precision 1.000   recall 1.000" in out and "false-positive rate 0.000" in out


def test_audit_fails_below_the_bar(tmp_path, capsys):
    rows = [{"problem": "p", "answer": "5", "response": "\\boxed{5}", "label": False, "source": "deliberately wrong"},
            {"problem": "q", "answer": "6", "response": "\\boxed{6}", "label": True, "source": "ok"}]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    assert main(["audit", str(path), "--min-precision", "0.9"]) == 1
    out = capsys.readouterr().out
    assert "false_positive: reference '5'" in out and "[deliberately wrong]" in out
    assert "precision 0.500" in out


def test_sample_then_label_then_score(tmp_path, capsys):
    judged = tmp_path / "judged.jsonl"
    rows = [{"problem": f"p{i}", "answer": str(i), "response": f"<think>w</think>\\boxed{{{i if i % 2 else i + 1}}}"}
            for i in range(12)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    assert main(["verify", str(src), str(judged), "--workers", "1"]) == 0
    review = tmp_path / "review.jsonl"
    assert main(["audit", str(judged), "--sample", "3", "--out", str(review)]) == 0
    out = capsys.readouterr().out
    assert "sampled 3 accepted and 3 rejected" in out
    sampled = [json.loads(x) for x in review.read_text().splitlines()]
    assert [s["verdict"] for s in sampled] == ["accepted"] * 3 + ["rejected"] * 3
    assert all(s["label"] is None for s in sampled)
    for s in sampled:  # a reviewer agrees with every verdict
        s["label"] = s["verdict"] == "accepted"
    write_jsonl(review, sampled)
    assert main(["audit", str(review)]) == 0
    assert "precision 1.000   recall 1.000" in capsys.readouterr().out


def test_audit_samples_the_answer_verdict_not_the_filters(tmp_path, capsys):
    """A right answer in a trace a filter dropped is an accepted verdict (`correct`), shown as not kept."""
    loop = "<think>\n" + "I will try again. Let me recompute the sum of the digits. " * 80 + "\n</think>\n\\boxed{7}"
    rows = [{"problem": "What is 3 + 4?", "answer": "7", "response": loop},
            {"problem": "What is 2 + 2?", "answer": "4", "response": "<think>w</think>\\boxed{5}"}]
    judged = tmp_path / "judged.jsonl"
    assert main(["verify", str(write_jsonl(tmp_path / "in.jsonl", rows)), str(judged), "--workers", "1"]) == 0
    review = tmp_path / "review.jsonl"
    assert main(["audit", str(judged), "--sample", "2", "--out", str(review)]) == 0
    out = capsys.readouterr().out
    assert "[accepted] repetition, not kept: reference '7', read '7'" in out
    assert "[rejected] incorrect, not kept: reference '4', read '5'" in out
    sampled = [json.loads(x) for x in review.read_text().splitlines()]
    assert [(s["verdict"], s["correct"], s["kept"], s["reason"]) for s in sampled] == [
        ("accepted", True, False, "repetition"), ("rejected", False, False, "incorrect")]
