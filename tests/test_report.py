"""`distill report`: the page's numbers are the run's, a run in progress renders, the ledger prices, the CLI.

The page is checked here as HTML; tests/test_report_browser.py loads it in a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pyarrow.parquet as pq
import pytest
import yaml

from distill.cli import main
from distill.report import write_report
from distill.report.data import _drop_order
from tests.conftest import REPO
from tests.report_runs import BASE_KEY, STUDENT, make_run

SECTIONS = ("overview", "funnel", "lengths", "scores", "ledger", "spec", "examples")


class _Elements(HTMLParser):
    """Every start tag's attributes, in document order."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def with_attr(self, name: str) -> list[dict]:
        return [a for _, a in self.tags if name in a]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("report") / "run")


def _metrics(page: _Elements) -> dict[str, str]:
    return {a["data-metric"]: a["data-value"] for a in page.with_attr("data-metric")}


def _page(run) -> tuple[str, _Elements]:
    html = write_report(run).read_text()
    return html, _Elements(html)


def test_finished_run_numbers_equal_the_stats_files(finished):
    html, page = _page(finished)
    assert (finished / "report.html").exists()
    sections = {a["id"]: a.get("data-state") for a in page.with_attr("id") if a["id"] in SECTIONS}
    assert sections == {s: "done" for s in SECTIONS}

    verify = json.loads((finished / "verify" / "stats.json").read_text())
    funnel = {a["data-reason"]: int(a["data-count"]) for a in page.with_attr("data-reason")}
    dropped = {r: n for r, n in verify["reasons"].items() if r not in ("correct", "unreferenced")}
    assert {r: n for r, n in funnel.items() if n} == dropped
    steps = {a["data-step"]: int(a["data-count"]) for a in page.with_attr("data-step")}
    assert steps["generated"] == verify["generated"] and steps["kept"] == verify["kept"]
    assert "does not add up" not in html

    metrics = _metrics(page)
    gen = json.loads((finished / "generate" / "_DONE.json").read_text())["stats"]
    assert int(metrics["prompt_tokens"]) == gen["prompt_tokens"]
    assert int(metrics["completion_tokens"]) == gen["completion_tokens"]
    assert int(metrics["teacher_tokens"]) == gen["prompt_tokens"] + gen["completion_tokens"]
    for key in ("generated", "correct", "kept", "problems_with_kept_trace"):
        assert int(metrics[key]) == verify[key], key

    cells = {(a["data-model"], a["data-benchmark"]): (float(a["data-pass1"]), float(a["data-stderr"]))
             for a in page.with_attr("data-pass1")}
    expected = {}
    for key in (BASE_KEY, f"eval/{STUDENT}"):
        scores = json.loads((finished / key / "scores.json").read_text())
        expected.update({(key.split("/")[1], b): (s["pass@1"], s["stderr"]) for b, s in scores["benchmarks"].items()})
    assert cells == expected
    truncation = {(a["data-model"], a["data-benchmark"]): float(a["data-truncation"])
                  for a in page.with_attr("data-truncation")}
    assert truncation == {cell: 0.125 for cell in expected}  # each benchmark's truncation rate, per model

    # each student cell shows student − base ± the paired standard error from its scores.json
    vs_base = json.loads((finished / f"eval/{STUDENT}" / "scores.json").read_text())["vs_base"]["benchmarks"]
    shown = {a["data-difference"]: a for a in page.with_attr("data-difference")}
    assert len(shown) == len(vs_base)
    for bench, p in vs_base.items():
        attrs = shown[str(p["difference"])]
        assert float(attrs["data-paired-stderr"]) == p["paired_stderr"]
        assert attrs["data-exceeds-2se"] == str(p["exceeds_2se"]).lower()
    assert "+6.2 ± 4.4 vs base (paired); not significant" in " ".join(html.split())
    assert "+3.1 ± 1.0 vs base (paired); &gt; 2 se" in " ".join(html.split())


def test_page_is_self_contained_and_escaped(finished):
    html, page = _page(finished)
    for _, attrs in page.tags:  # nothing to fetch: no external scripts, styles, images or fonts
        for attr in ("src", "href"):
            assert not re.match(r"(https?:)?//", attrs.get(attr, "")), attrs
    assert "<script" not in html  # a trace's own markup (the no_answer example has some) is shown as text
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<svg") == 3  # funnel, lengths, scores: matplotlib figures inlined


def test_examples_one_kept_and_one_per_rejection_reason(finished):
    _, page = _page(finished)
    shown = [a["data-example"] for a in page.with_attr("data-example")]
    reasons = json.loads((finished / "verify" / "stats.json").read_text())["reasons"]
    rejected = sorted(r for r in reasons if r not in ("correct", "unreferenced"))
    assert shown[0] == "kept" and sorted(shown[1:]) == [f"rejected: {r}" for r in rejected]
    # each card says whether its answer is right (the `correct` column), apart from why it was not kept
    traces = pq.read_table(finished / "verify" / "traces.parquet", columns=["reason", "kept", "correct"]).to_pylist()
    first: dict = {}
    for t in traces:
        first.setdefault("kept" if t["kept"] else f"rejected: {t['reason']}", t["correct"])
    assert {a["data-example"]: a["data-correct"] for a in page.with_attr("data-example")} == \
        {k: str(v) for k, v in first.items()}


def test_run_in_progress_says_what_it_waits_for(tmp_path):
    run = make_run(tmp_path / "run", upto="generate")
    html, page = _page(run)
    state = {a["id"]: a.get("data-state") for a in page.with_attr("id") if a["id"] in SECTIONS}
    assert state == {"overview": "partial", "funnel": "waiting", "lengths": "partial", "scores": "waiting",
                     "ledger": "partial", "spec": "done", "examples": "waiting"}
    assert "The funnel: waiting for stage &#39;verify&#39; (running now)." in html
    assert "waiting for stage &#39;eval/base-smollm2-135m&#39; (not started)" in html
    stages = {a["data-stage"]: a["data-state"] for a in page.with_attr("data-state") if "data-stage" in a}
    assert stages["generate"] == "done" and stages["verify"] == "running" and stages[f"train/{STUDENT}"] == "pending"
    assert next(a for a in page.with_attr("id") if a["id"] == "run-state")["data-state"] == "in-progress"
    series = {a["data-series"] for a in page.with_attr("data-series")}
    assert series == {"generated"}  # lengths of every generated trace until verify splits them
    assert "no prices in spec" in html


def test_ledger_prices_from_run_json(tmp_path):
    prices = {"currency": "USD", "accelerator_hour": 2.5, "prompt_tokens_per_million": 0.1,
              "completion_tokens_per_million": 0.4}
    # run.json's ledger as distill/ledger.py writes it; eval/<student> has an entry there and nothing of its own
    ledger = {"prices": prices, "stages": {f"eval/{STUDENT}": {"tokens_in": 0, "tokens_out": 0,
                                                             "accelerator_seconds": 7200.0}}}
    run = make_run(tmp_path / "run", ledger=ledger)
    html, page = _page(run)
    metrics = _metrics(page)
    markers = {k: json.loads((run / k / "_DONE.json").read_text()) for k in ("generate", BASE_KEY, f"train/{STUDENT}")}
    gen = markers["generate"]["stats"]
    # generate: its own ledger entry; eval/<student>: run.json (2 h); base eval: wall x 1 GPU; train on CUDA: x 1
    acc_hours = (gen["ledger"]["accelerator_seconds"] + 7200 + markers[BASE_KEY]["seconds"]
                 + markers[f"train/{STUDENT}"]["seconds"]) / 3600
    cost = acc_hours * 2.5 + gen["prompt_tokens"] / 1e6 * 0.1 + gen["completion_tokens"] / 1e6 * 0.4
    kept = json.loads((run / "verify" / "stats.json").read_text())["kept"]
    assert float(metrics["accelerator_hours"]) == pytest.approx(acc_hours)
    assert float(metrics["cost_total"]) == pytest.approx(cost)
    assert float(metrics["cost_per_kept"]) == pytest.approx(cost / kept)
    assert "prices from run.json ledger" in html


def test_ledger_all_zero_prices_in_run_json_are_no_prices(tmp_path):
    zero = {"currency": "USD", "accelerator_hour": 0.0, "prompt_tokens_per_million": 0.0,
            "completion_tokens_per_million": 0.0}  # what distill/ledger.py writes when the spec has no prices
    run = make_run(tmp_path / "run", ledger={"stages": {}, "total": {}, "prices": zero})
    html, page = _page(run)
    assert _metrics(page)["cost_total"] == "" and "no prices in spec" in html


def test_ledger_prices_from_spec_and_none(finished, tmp_path):
    _, page = _page(finished)
    assert _metrics(page)["cost_total"] == ""

    spec = (finished / "spec.yaml").read_text()
    (finished / "spec.yaml").write_text(spec + "prices: {accelerator_hour: 4.0, currency: EUR}\n")
    try:
        html, page = _page(finished)
    finally:
        (finished / "spec.yaml").write_text(spec)
    assert "prices from spec" in html and " EUR" in html
    assert float(_metrics(page)["cost_total"]) > 0


def test_cli_report(finished, capsys, tmp_path):
    (finished / "report.html").unlink(missing_ok=True)
    assert main(["report", str(finished)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {finished / 'report.html'}"
    assert (finished / "report.html").stat().st_size > 10_000

    assert main(["report", str(tmp_path)]) == 2  # an empty directory is no run
    assert "not a run directory" in capsys.readouterr().err


def test_cli_entry_point(finished):
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "report", str(finished)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("report.html")


def test_spec_without_benchmarks_and_odd_reasons(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    shutil.rmtree(run / "eval")
    spec = yaml.safe_load((run / "spec.yaml").read_text())
    spec["eval"]["benchmarks"] = []
    (run / "spec.yaml").write_text(yaml.safe_dump(spec))
    html, page = _page(run)
    assert "No benchmarks in the spec" in html
    assert next(a for a in page.with_attr("id") if a["id"] == "run-state")["data-state"] == "finished"
    assert not page.with_attr("data-pass1")

    # verifier failures rank with "unverifiable", a reason this report does not know goes last, kept ones are out
    reasons = {"correct": 3, "brand_new": 1, "unverifiable: TimeoutError": 2, "incorrect": 4}
    assert _drop_order(reasons, {"correct"}, cap=False) == [
        "truncated", "unclosed_think", "no_answer", "incorrect", "unverifiable: TimeoutError", "brand_new"]


def test_funnel_rebuilt_from_reasons_when_stats_have_no_funnel_list(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    stats = json.loads((run / "verify" / "stats.json").read_text())
    assert stats.get("funnel"), "verify writes its funnel steps; the fixture should exercise them"
    del stats["funnel"]  # a stats.json from before verify recorded its steps
    (run / "verify" / "stats.json").write_text(json.dumps(stats))
    html, page = _page(run)
    shown = {a["data-reason"]: int(a["data-count"]) for a in page.with_attr("data-reason")}
    assert {r: n for r, n in shown.items() if n} == {r: n for r, n in stats["reasons"].items()
                                                      if r not in ("correct", "unreferenced")}
    assert "does not add up" not in html


def test_ledger_reads_measured_accelerator_seconds_from_a_stage_marker(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    _, page = _page(run)
    before = float(_metrics(page)["accelerator_hours"])
    marker = json.loads((run / "sft" / "_DONE.json").read_text())
    marker["stats"]["accelerator_seconds"] = 1800.0
    (run / "sft" / "_DONE.json").write_text(json.dumps(marker))
    html, page = _page(run)
    assert float(_metrics(page)["accelerator_hours"]) == pytest.approx(before + 0.5) and "measured" in html
