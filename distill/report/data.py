"""The run report: one self-contained `report.html` that shows what a run did, how well, and what it cost.

`write_report(run_dir)` reads only what the stages leave behind (`spec.yaml`, each stage's `_DONE.json`,
`verify/stats.json` and `traces.parquet`, `eval/*/scores.json`, `run.json` when the run finished) and writes
`<run_dir>/report.html` with these sections:

  overview   headline numbers and every stage's state (done / running / pending), time and stats
  funnel     generated -> each drop, by reason -> kept
  lengths    completion-length histograms of kept and rejected traces
  scores     pass@1 per benchmark for each base model and student, ± one standard error; each student's
             student − base ± its paired standard error (scores.json's vs_base)
  ledger     teacher tokens, wall and accelerator time per stage, cost when prices are known
  spec       the validated spec the run used
  examples   one kept trace and one rejected trace per reason

It works on a run in progress: a section whose stage has not finished says which stage it waits for.
Charts are matplotlib figures inlined as SVG, so the page needs no network and runs no JavaScript. Every
number a script may want to check is also in a `data-*` attribute: `data-metric`/`data-value` for scalars,
`data-reason`/`data-count` for funnel rows, `data-model`/`data-benchmark`/`data-pass1`/`data-stderr` for scores,
`data-difference`/`data-paired-stderr`/`data-exceeds-2se` for a student's paired comparison with its base.

The ledger. Prices come from the spec's `prices` ({currency, accelerator_hour, prompt_tokens_per_million,
completion_tokens_per_million}, each optional); with none the page says "no prices in spec". Each finished
stage's tokens and accelerator-seconds come from, in order:
  1. the stage's own measured entry, `_DONE.json` stats["ledger"] = {tokens_in, tokens_out, wall_seconds,
     accelerator_seconds, cost_usd} (what distill/ledger.py's `entry` writes), or an `accelerator_seconds` stat;
  2. run.json's "ledger": {"stages": {NAME: {same keys}}, "total": {...}, "prices": {...}} (written when a run
     ends; its prices count only when the spec has none and one of them is non-zero);
  3. an estimate: wall seconds x the devices the spec placed the stage on (distill/ledger.py's
     `stage_accelerators`); tokens from the stage's prompt_tokens / completion_tokens stats.
Each entry is distill/ledger.py's (`stage_entry`): the report makes no figure of its own.
Cost = accelerator-hours x accelerator_hour + tokens_in / 1e6 x prompt price + tokens_out / 1e6 x completion
price, summed over stages (distill/ledger.py's formula); cost per kept trace = cost / verify's kept.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from distill import artifacts
from distill import ledger as ledger_module  # `ledger` is this module's section
from distill.pipeline import graph
from distill.pipeline.stages import STAGES, base_eval_key
from distill.report.charts import BASE, STUDENTS, funnel_chart, length_histogram, scores_chart

REPORT_NAME = "report.html"

# The verify stage's steps and the drop reasons of each, in the order they are applied: they order and explain
# the funnel, and rebuild it from the reason counts of a stats.json written before verify recorded its own list.
from distill.verify.stage import STEPS  # noqa: E402

REASON_ORDER = [r for _, reasons in STEPS for r in reasons]
STEP_OF = {r: step for step, reasons in STEPS for r in reasons}
WHY = {
    "contaminated": "shares an 8-gram with a benchmark problem the spec evaluates on",
    "duplicate_problem": "the same problem appeared earlier",
    "near_duplicate_problem": "nearly the same problem (and answer) appeared earlier",
    "generation_error": "the teacher returned an error instead of a trace",
    "truncated": "hit max_tokens (finish reason 'length'); filter.drop_truncated",
    "missing_think": "no </think>, and filter.require_think is set",
    "unclosed_think": "opened <think> and never closed it: no final-answer region",
    "too_short": "shorter than filter.min_chars",
    "too_long": "longer than filter.max_chars",
    "repetition": "its end repeats itself: a generation loop",
    "language_mixing": "the reasoning mixes scripts (languages)",
    "empty_answer": "nothing after </think>",
    "no_answer": "no \\boxed{}, '#### N' or 'the answer is' after the reasoning",
    "unverifiable": "the checker could not decide",
    "incorrect": "the final answer differs from the reference",
    "unreferenced": "no reference answer, and filter.keep_unreferenced is false",
    "duplicate_trace": "a copy of another verified trace",
    "near_duplicate_trace": "nearly a copy of another verified trace",
    "over_per_problem_cap": "its problem already had filter.max_per_problem kept traces",
    "over_domain_target": "its domain already had its filter.domain_targets count of kept traces",
}
ALWAYS_SHOWN = ("truncated", "unclosed_think", "no_answer", "incorrect")  # rebuilt funnels show these even at 0
EXAMPLE_CHARS = 1500  # of a response's head and of its tail; the verifier reads the tail, so keep both


# ---------------------------------------------------------------- reading the run directory

@dataclass
class Stage:
    key: str  # "generate", "train/<student>", "eval/base-<model>", ...
    state: str  # done | running | pending
    seconds: float | None = None
    finished: float | None = None
    stats: dict = field(default_factory=dict)


@dataclass
class Run:
    root: Path
    spec: dict
    spec_text: str
    summary: dict | None  # run.json, written when a run finishes
    stages: dict[str, Stage]

    def done(self, key: str) -> bool:
        return key in self.stages and self.stages[key].state == "done"

    def stats(self, key: str) -> dict:
        return self.stages[key].stats if self.done(key) else {}

    @functools.cached_property
    def validated_spec(self) -> Any:
        """The spec as distill validates it (what distill/ledger.py reads), or None when this distill cannot
        (a spec written by an older or newer distill, inputs moved since)."""
        from distill.spec import SpecError, parse_spec

        try:
            return parse_spec(self.spec) if isinstance(self.spec, dict) and self.spec else None
        except (SpecError, ValueError):
            return None

    def setting(self, dotted: str, default: Any = None) -> Any:
        """A spec value by dotted path, or `default` where the spec leaves it out (it is read raw, not
        validated, so a report still renders for a spec written by an older or newer distill)."""
        node: Any = self.spec
        for part in dotted.split("."):
            if not isinstance(node, dict) or node.get(part) is None:
                return default
            node = node[part]
        return node


def _stage(root: Path, key: str) -> Stage:
    path = root / key
    m = artifacts.marker(path)
    if m is not None:
        return Stage(key, "done", m.get("seconds"), m.get("finished"), m.get("stats") or {})
    # A stage being built lives in a hidden sibling `.<name>.tmp-<id>` until it is renamed into place.
    running = path.parent.is_dir() and any(path.parent.glob(f".{path.name}.tmp-*"))
    return Stage(key, "running" if running else "pending")


def load_run(run_dir: str | Path) -> Run:
    root = Path(run_dir).resolve()
    spec_path = root / "spec.yaml"
    if not root.is_dir() or not (spec_path.exists() or graph.found(STAGES, root)):
        raise FileNotFoundError(f"not a run directory (no spec.yaml, no stage directories): {run_dir}")
    spec_text = spec_path.read_text() if spec_path.exists() else ""
    spec = (yaml.safe_load(spec_text) if spec_text else None) or {}
    keys = graph.expected(STAGES, root, spec if isinstance(spec, dict) else {})
    return Run(root, spec, spec_text, artifacts.read_json(root / "run.json"), {k: _stage(root, k) for k in keys})


# ---------------------------------------------------------------- sections

def _waiting(run: Run, key: str, what: str) -> dict:
    """A section that cannot be drawn yet: says which stage it waits for and what that stage is doing."""
    running = key in run.stages and run.stages[key].state == "running"
    return {"ready": False, "state": "waiting",
            "waiting": f"{what}: waiting for stage '{key}' ({'running now' if running else 'not started'})."}


def overview(run: Run) -> dict:
    gen, ver = run.stats("generate"), run.stats("verify")
    problems = run.stats("prompts").get("problems", gen.get("problems"))
    tokens = (gen.get("prompt_tokens", 0) + gen.get("completion_tokens", 0)) if gen else None
    done = sum(s.state == "done" for s in run.stages.values())
    return {
        "state": "done" if done == len(run.stages) else "partial",
        "cards": [
            _card("problems", "problems", problems),
            _card("generated", "traces generated", gen.get("traces", ver.get("generated"))),
            _card("correct", "answers verified correct", ver.get("correct")),
            _card("kept", "kept for SFT", ver.get("kept")),
            _card("keep_rate", "of traces kept", ver["kept"] / ver["generated"] if ver.get("generated") else None,
                  "pct"),
            _card("problems_with_kept_trace", "problems with a kept trace", ver.get("problems_with_kept_trace")),
            _card("teacher_tokens", "teacher tokens", tokens),
        ],
        "stages": [{"key": s.key, "state": s.state, "seconds": s.seconds, "finished": s.finished,
                    "stats": _brief(s.stats)} for s in run.stages.values()],
        "done": done,
        "total": len(run.stages),
        "finished": done == len(run.stages),
    }


def _card(metric: str, label: str, value: Any, fmt: str = "num") -> dict:
    """A headline number; `fmt` names the template's format (num, pct, duration, hours)."""
    return {"metric": metric, "label": label, "value": value, "fmt": fmt}


def _brief(stats: dict) -> str:
    """A stage's stats in one line: scalars only (nested counts have their own sections)."""
    return ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in stats.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool))


def _base_reason(reason: str) -> str:
    return reason.split(":")[0]  # "unverifiable: TimeoutError" is an "unverifiable"


def _reason_rank(reason: str) -> tuple[int, str]:
    """Sort key: pipeline order, unknown reasons last."""
    base = _base_reason(reason)
    return (REASON_ORDER.index(base) if base in REASON_ORDER else len(REASON_ORDER), reason)


def _drop_order(reasons: dict, kept_reasons: set[str], cap: bool) -> list[str]:
    shown = set(ALWAYS_SHOWN) | {r for r, n in reasons.items() if n} | ({"over_per_problem_cap"} if cap else set())
    return sorted(shown - kept_reasons, key=_reason_rank)


def _drop_row(reason: str, step: str, n: int, remaining: int) -> dict:
    return {"step": "drop", "label": reason, "kind": step, "reason": reason, "dropped": n, "remaining": remaining,
            "why": WHY.get(_base_reason(reason), "")}


def _funnel_from_steps(steps: list[dict]) -> list[dict]:
    """Rows from verify's own funnel list: [{step: generated, remaining}, {step, dropped: {reason: n},
    remaining}, ..., {step: kept, remaining, by_reason}]. A step that dropped nothing keeps one row."""
    rows: list[dict] = []
    for item in steps:
        step, remaining = item.get("step"), item.get("remaining", 0)
        if step in ("generated", "kept"):
            by = ", ".join(f"{n:,} {r}" for r, n in (item.get("by_reason") or {}).items())
            if item.get("targets"):
                by = "; ".join(filter(None, [by, targets_text(item["targets"])]))
            rows.append({"step": step, "label": step, "kind": "", "reason": None, "dropped": None,
                         "remaining": remaining, "why": by})
            continue
        dropped = {r: n for r, n in (item.get("dropped") or {}).items() if n}
        if not dropped:
            rows.append({"step": "pass", "label": f"{step}: none", "kind": step, "reason": None, "dropped": 0,
                         "remaining": remaining, "why": "this step dropped nothing"})
            continue
        left = remaining + sum(dropped.values())
        for reason in sorted(dropped, key=_reason_rank):
            left -= dropped[reason]
            rows.append(_drop_row(reason, step, dropped[reason], left))
    return rows


def targets_text(targets: dict) -> str:
    """The kept traces against the spec's domain targets, each domain's shortfall named."""
    return ", ".join(f"{domain}: {t['kept']:,} of {t['target']:,}" + (f" ({t['short']:,} short)" if t["short"] else "")
                     for domain, t in targets.items())


def _funnel_from_reasons(run: Run, stats: dict) -> list[dict]:
    """Rows rebuilt from the reason counts alone (a stats.json with no funnel list), in pipeline order."""
    reasons = stats.get("reasons", {})
    kept_reasons = {"correct"} | ({"unreferenced"} if run.setting("filter.keep_unreferenced", True) else set())
    remaining = stats["generated"]
    rows = [{"step": "generated", "label": "generated", "kind": "", "reason": None, "dropped": None,
             "remaining": remaining, "why": ""}]
    for reason in _drop_order(reasons, kept_reasons, bool(run.setting("filter.max_per_problem"))):
        remaining -= reasons.get(reason, 0)
        rows.append(_drop_row(reason, STEP_OF.get(_base_reason(reason), "other"), reasons.get(reason, 0), remaining))
    kept_from = ", ".join(f"{reasons[r]:,} {r}" for r in sorted(kept_reasons) if reasons.get(r))
    rows.append({"step": "kept", "label": "kept", "kind": "", "reason": None, "dropped": None,
                 "remaining": stats["kept"], "why": kept_from})
    return rows


def funnel(run: Run) -> dict:
    stats = artifacts.read_json(run.root / "verify" / "stats.json") if run.done("verify") else None
    if not stats:
        return _waiting(run, "verify", "The funnel")
    steps = stats.get("funnel")
    rows = _funnel_from_steps(steps) if isinstance(steps, list) and steps else _funnel_from_reasons(run, stats)
    if rows[0]["step"] == "generated" and run.setting("sampling.n"):
        rows[0]["why"] = f"{run.setting('sampling.n')} per problem from the teacher"
    # The steps must add up to what verify kept; if they do not (a reason this report does not know is kept
    # rather than dropped, say), show it rather than hide it.
    drops = sum(r["dropped"] or 0 for r in rows)
    mismatch = stats["generated"] - drops != stats["kept"]
    return {"ready": True, "state": "done", "rows": rows, "stats": stats, "chart": funnel_chart(rows),
            "mismatch": mismatch and f"{stats['generated']:,} generated − {drops:,} dropped ≠ {stats['kept']:,} kept"}


def _quantiles(values: list[int]) -> dict:
    if not values:
        return {"count": 0, "median": None, "p90": None, "max": None}
    v = sorted(values)
    return {"count": len(v), "median": v[len(v) // 2], "p90": v[min(len(v) - 1, int(0.9 * len(v)))], "max": v[-1]}


def _columns(files: list[Path], columns: list[str]) -> dict[str, list] | None:
    """Only these columns of Parquet files (never the responses: they are most of a big run's bytes), or None
    when a file lacks one."""
    out: dict[str, list] = {c: [] for c in columns}
    for f in files:
        if not set(columns) <= set(pq.read_schema(f).names):
            return None
        for c, values in pq.read_table(f, columns=columns).to_pydict().items():
            out[c] += values
    return out


def lengths(run: Run) -> dict:
    max_tokens = run.setting("sampling.max_tokens")
    traces = run.root / "verify" / "traces.parquet"
    if run.done("verify") and traces.exists():
        t = _columns([traces], ["completion_tokens", "kept"])
        series = t and {"kept": [n for n, k in zip(t["completion_tokens"], t["kept"]) if k],
                        "rejected": [n for n, k in zip(t["completion_tokens"], t["kept"]) if not k]}
        note = None
    elif run.done("generate"):
        t = _columns(sorted((run.root / "generate").glob("*.parquet")), ["completion_tokens"])
        series = t and {"generated": t["completion_tokens"]}
        note = _waiting(run, "verify", "The kept / rejected split")["waiting"]
    else:
        return _waiting(run, "generate", "Trace lengths")
    if not series:
        return {"ready": False, "state": "done", "waiting": "The traces have no completion_tokens column."}
    return {"ready": True, "state": "partial" if note else "done", "note": note,
            "chart": length_histogram(series, max_tokens),
            "rows": [{"name": k, **_quantiles(v)} for k, v in series.items()], "max_tokens": max_tokens}


def _models(run: Run) -> list[dict]:
    """Every model with an eval stage: base models first (grey), then students (in spec order)."""
    student_base = {s["name"]: s.get("base") for s in run.spec.get("students") or [] if isinstance(s, dict)}

    def is_base(name: str) -> bool:
        return name.startswith("base-") and name not in student_base

    names = [k.split("/", 1)[1] for k in run.stages if k.startswith("eval/")]
    names.sort(key=lambda n: not is_base(n))  # stable: spec order within each group
    models = []
    for name in names:
        key = f"eval/{name}"
        scores = (artifacts.read_json(run.root / key / "scores.json") if run.done(key) else None) or {}
        base = student_base.get(name)
        n_students = sum(not m["is_base"] for m in models)
        models.append({
            "key": key, "name": name, "label": scores.get("model") or name, "is_base": is_base(name),
            "color": BASE if is_base(name) else STUDENTS[n_students % len(STUDENTS)],
            "scores": scores.get("benchmarks", {}), "decoding": scores.get("decoding"),
            "paired": (scores.get("vs_base") or {}).get("benchmarks", {}),  # student − base, per problem
            "base_key": base_eval_key(base) if base else None,
        })
    return models


def scores(run: Run) -> dict:
    models = _models(run)
    if not models:
        return {"ready": False, "state": "done",
                "waiting": "No benchmarks in the spec (eval.benchmarks is empty): nothing is scored."}
    scored = [m for m in models if m["scores"]]
    if not scored:
        return _waiting(run, models[0]["key"], "Scores")
    spec_benchmarks = [b["name"] if isinstance(b, dict) else b for b in run.setting("eval.benchmarks", [])]
    found = {b for m in scored for b in m["scores"]}
    benchmarks = [b for b in spec_benchmarks if b in found] + sorted(found - set(spec_benchmarks))
    by_key = {m["key"]: m for m in scored}
    rows = []
    for bench in benchmarks:
        cells = []
        for m in scored:
            s = m["scores"].get(bench)
            base = by_key.get(m["base_key"], {}).get("scores", {}).get(bench) if m["base_key"] else None
            paired = m["paired"].get(bench)
            delta = (100 * paired["difference"] if paired else
                     100 * (s["pass@1"] - base["pass@1"]) if s and base else None)
            cells.append({"model": m["name"], "s": s, "delta": delta, "paired": paired})
        first = next((m["scores"][bench] for m in scored if bench in m["scores"]), {})
        rows.append({"benchmark": bench, "problems": first.get("problems"), "k": first.get("k"),
                     "max_tokens": first.get("max_tokens"), "cells": cells})
    pending = [m["key"] for m in models if not m["scores"]]
    return {"ready": True, "state": "partial" if pending else "done", "models": scored, "rows": rows,
            "chart": scores_chart(scored, benchmarks), "pending": pending, "decoding": scored[0]["decoding"]}


def _prices(run: Run) -> tuple[dict, str, str] | None:
    """(prices, currency, where from), or None when the run has none. The spec's `prices` count when set (even
    at 0: "free" is a price); run.json's ledger always carries a prices block, all zeros when the spec had
    none, so there only a non-zero price counts (a run.json written by a distill whose spec had no prices)."""
    spec_prices = run.spec.get("prices")
    ledger_prices = ((run.summary or {}).get("ledger") or {}).get("prices")
    if isinstance(spec_prices, dict) and spec_prices:
        prices, where = spec_prices, "spec"
    elif isinstance(ledger_prices, dict) and any(
            isinstance(v, (int, float)) and v for v in ledger_prices.values()):
        prices, where = ledger_prices, "run.json ledger"
    else:
        return None
    return prices, prices.get("currency") or "USD", where


def _stage_use(run: Run, stage: Stage) -> dict:
    """One finished stage's tokens and accelerator time (distill/ledger.py's entry): measured by the stage itself,
    else run.json's ledger (what the run computed when it ended), else its wall time x its spec's placement."""
    own = ledger_module.stage_entry(stage.key, {"stats": stage.stats, "seconds": stage.seconds}, run.validated_spec)
    entry = ((run.summary or {}).get("ledger") or {}).get("stages", {}).get(stage.key)
    if own["measured"]:
        source, e = "measured", own
    elif isinstance(entry, dict) and "accelerator_seconds" in entry:
        source, e = "run.json", entry
    else:
        source, e = "estimate", own
    return {
        "source": source,
        "acc_hours": float(e["accelerator_seconds"]) / 3600,
        "accelerators": e.get("accelerators", own["accelerators"]),
        "tokens_in": int(e.get("tokens_in", own["tokens_in"]) or 0),
        "tokens_out": int(e.get("tokens_out", own["tokens_out"]) or 0),
    }


def ledger(run: Run) -> dict:
    rows = []
    for s in run.stages.values():
        if s.state == "done":
            rows.append({"key": s.key, "state": s.state, "seconds": s.seconds, **_stage_use(run, s)})
        else:
            rows.append({"key": s.key, "state": s.state, "seconds": None, "source": "", "acc_hours": None,
                         "accelerators": None, "tokens_in": None, "tokens_out": None})
    done = [r for r in rows if r["state"] == "done"]
    totals = {k: sum(r[k] for r in done) for k in ("acc_hours", "tokens_in", "tokens_out")}
    gen, kept = run.stats("generate"), run.stats("verify").get("kept")
    tokens = {"prompt": gen.get("prompt_tokens"), "completion": gen.get("completion_tokens")} if gen else None
    wall = sum(r["seconds"] or 0 for r in done)
    found = _prices(run)
    return {
        "state": "done" if len(done) == len(rows) else "partial",
        "rows": rows, "kept": kept, "acc_hours": totals["acc_hours"], "wall_seconds": wall,
        "cost": _cost(found, totals, kept) if found else None,
        "cards": [
            _card("prompt_tokens", "teacher prompt tokens", tokens and tokens["prompt"]),
            _card("completion_tokens", "teacher completion tokens", tokens and tokens["completion"]),
            _card("completion_tokens_per_kept", "completion tokens per kept trace",
                  tokens["completion"] / kept if tokens and kept else None),
            _card("wall_seconds", "stage wall time", wall, "duration"),
            _card("accelerator_hours", "accelerator-hours", totals["acc_hours"], "hours"),
        ],
    }


def _cost(found: tuple[dict, str, str], totals: dict, kept: int | None) -> dict:
    """Cost lines (what, how many, unit price, unit, cost): the formula of distill/ledger.py, over all stages."""
    prices, currency, where = found

    def price(name: str) -> float:
        value = prices.get(name)
        return float(value) if isinstance(value, (int, float)) else 0.0

    lines = [
        {"item": "accelerator time", "quantity": f"{totals['acc_hours']:,.3f} h", "price": price("accelerator_hour"),
         "unit": "per hour", "cost": totals["acc_hours"] * price("accelerator_hour")},
        {"item": "prompt tokens", "quantity": f"{totals['tokens_in']:,}", "price": price("prompt_tokens_per_million"),
         "unit": "per million", "cost": totals["tokens_in"] / 1e6 * price("prompt_tokens_per_million")},
        {"item": "completion tokens", "quantity": f"{totals['tokens_out']:,}",
         "price": price("completion_tokens_per_million"), "unit": "per million",
         "cost": totals["tokens_out"] / 1e6 * price("completion_tokens_per_million")},
    ]
    lines = [line for line in lines if line["price"]] or lines  # all free: say so once per item
    total = sum(line["cost"] for line in lines)
    return {"currency": currency, "where": where, "lines": lines, "total": total,
            "per_kept": total / kept if kept else None}


def _read_rows(path: Path, indices: list[int], columns: list[str]) -> list[dict]:
    """Rows `indices` of a Parquet file, reading only the row groups that hold them (traces.parquet of a big
    run holds gigabytes of responses; the examples need a handful)."""
    pf = pq.ParquetFile(path)
    wanted, out, start = sorted(set(indices)), {}, 0
    columns = [c for c in columns if c in pf.schema_arrow.names]
    for g in range(pf.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        here = [i for i in wanted if start <= i < start + n]
        if here:
            rows = pf.read_row_group(g, columns=columns).to_pylist()
            out.update({i: rows[i - start] for i in here})
        start += n
    return [out[i] for i in indices]


def _clip(text: str | None, chars: int) -> tuple[str, int]:
    """(text with its middle cut when longer than 2 x chars, characters cut)."""
    text = text or ""
    if len(text) <= 2 * chars:
        return text, 0
    return text[:chars] + "\n\n[…]\n\n" + text[-chars:], len(text) - 2 * chars


def examples(run: Run) -> dict:
    path = run.root / "verify" / "traces.parquet"
    if not (run.done("verify") and path.exists()):
        return _waiting(run, "verify", "Example traces")
    t = pq.read_table(path, columns=["reason", "kept"]).to_pydict()
    picks: dict[str, int] = {}
    for i, (reason, kept) in enumerate(zip(t["reason"], t["kept"])):
        picks.setdefault("kept" if kept else reason, i)  # the first of each, in file order
    order = sorted(picks, key=lambda k: (k != "kept", _reason_rank(k)))
    cols = ["problem_id", "sample_index", "problem", "answer", "response", "finish_reason", "completion_tokens",
            "extracted", "correct", "reason", "kept"]
    cards = []
    for key, row in zip(order, _read_rows(path, [picks[k] for k in order], cols)):
        response, cut = _clip(row.get("response"), EXAMPLE_CHARS)
        problem, _ = _clip(row.get("problem"), 400)
        cards.append({"title": "kept" if key == "kept" else f"rejected: {key}", "kept": key == "kept",
                      "row": row, "response": response, "cut": cut, "problem": problem})
    return {"ready": True, "state": "done", "cards": cards}


# ---------------------------------------------------------------- the page

def render(run: Run) -> str:
    from distill.report.template import render_page

    return render_page(
        run=run,
        name=run.spec.get("name") or run.root.name,
        spec_hash=(run.summary or {}).get("spec_hash"),
        spec={"state": "done" if run.spec_text else "waiting", "text": run.spec_text},
        written=time.time(),
        overview=overview(run),
        funnel=funnel(run),
        lengths=lengths(run),
        scores=scores(run),
        ledger=ledger(run),
        examples=examples(run),
    )


def write_report(run_dir: str | Path) -> Path:
    """Write `<run_dir>/report.html` for a finished run or one in progress; returns its path."""
    run = load_run(run_dir)
    html = render(run)
    out = run.root / REPORT_NAME
    tmp = run.root / f".{REPORT_NAME}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)  # a browser reloading the page mid-write never sees half of it
    return out
