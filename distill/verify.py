"""Stage 3, verify & filter: judge each trace's final answer against the reference, keep the correct ones.

Only the final-answer region is read: the text after `</think>` when the trace has one, else the response. In
it the answer is the last `\\boxed{}`, else a GSM8K `#### N`, else an explicit "answer is / Answer:" marker.
There is deliberately no "last number in the text" fallback: a trace cut off mid-thought often ends with some
number, and keeping it when that number happens to match is the costly error in distillation.

Plain numbers are compared exactly as fractions (math-verify's float tolerance would accept 1/2^99 = 1/2^98);
everything else goes to math-verify. Entry points: `verify_stage` (the pipeline) and `verify_file`
(`distill verify IN OUT`, for traces users already have).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import re
import threading
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distill import artifacts

KEEP_REASONS = ("correct", "unreferenced")


@dataclass(frozen=True)
class Verdict:
    correct: bool
    reason: str  # correct | incorrect | no_answer | unclosed_think | truncated | unverifiable: ... | unreferenced
    extracted: str | None


# ---------------------------------------------------------------- extraction

def _last_braced(text: str, command: str) -> str | None:
    """Content of the last brace-matched `\\command{...}` (or `\\command 5`) in text."""
    start = text.rfind("\\" + command)
    while start != -1:
        i = start + len(command) + 1
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    return text[i + 1 : j].strip()
                j += 1
        elif i > start + len(command) + 1:  # `\boxed 5`: a space, then one token
            m = re.match(r"[^\s$.,]+", text[i:])
            if m:
                return m.group(0)
        start = text.rfind("\\" + command, 0, start)
    return None


_MARKER = re.compile(r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*:?\s*(.+)", re.IGNORECASE)


def extract_answer(region: str) -> str | None:
    for command in ("boxed", "fbox"):
        boxed = _last_braced(region, command)
        if boxed:
            return boxed
    hashes = re.findall(r"####\s*(.+)", region)
    if hashes:
        return _clean(hashes[-1])
    markers = _MARKER.findall(region)
    if markers:
        return _clean(markers[-1]) or None
    return None


def _clean(s: str) -> str:
    s = s.strip().split("\n")[0].strip()
    s = s.strip("*").strip()
    s = re.sub(r"^\$+|\$+$", "", s).strip()
    return s.rstrip(".").strip()


def final_region(response: str) -> tuple[str | None, str | None]:
    """(region, problem): the text to read the answer from, or why there is none."""
    if "</think>" in response:
        return response.rsplit("</think>", 1)[1], None
    if "<think>" in response:
        return None, "unclosed_think"
    return response, None


def reference_answer(raw: object, fmt: str) -> str:
    """The checkable reference from a dataset's answer field."""
    if fmt == "none" or raw is None:
        return ""
    text = str(raw)
    if fmt == "gsm8k":
        return text.rsplit("####", 1)[-1].strip().replace(",", "")
    if fmt == "boxed":
        return _last_braced(text, "boxed") or _last_braced(text, "fbox") or ""
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return text.strip()


# ---------------------------------------------------------------- comparison

_NUMBER = re.compile(r"^[-+]?\$?\s*(\d[\d,]*(?:\.\d+)?|\.\d+)\s*(?:%|\\%)?(?:\s*[a-zA-Z][a-zA-Z ]*)?$")


def _as_number(s: str) -> Fraction | None:
    s = s.strip().replace("\\$", "$").replace("\\!", "").replace("{,}", ",")
    frac = re.fullmatch(r"(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}", s)
    if frac:
        sign = -1 if frac.group(1) else 1
        return sign * Fraction(int(frac.group(2)), int(frac.group(3))) if int(frac.group(3)) else None
    m = _NUMBER.match(s)
    if not m or len(m.group(1)) > 100:
        return None
    sign = -1 if s.startswith("-") else 1
    return sign * Fraction(m.group(1).replace(",", ""))


def equivalent(predicted: str, reference: str) -> bool:
    a, b = _as_number(predicted), _as_number(reference)
    if a is not None and b is not None:
        return a == b  # exact: no float tolerance on plain numbers
    from math_verify import parse, verify

    # math-verify's timeouts use signal.alarm, which works only in a process's main thread.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    gold = parse(f"${reference}$", parsing_timeout=timeout)
    pred = parse(f"${predicted}$", parsing_timeout=timeout)
    if not gold or not pred:
        return False
    g, p = _exact_rational(gold[0]), _exact_rational(pred[0])
    if g is not None and p is not None:
        return g == p  # both exact rationals: math-verify's tolerance would accept 1/2^99 = 1/2^98
    return bool(verify(gold, pred, timeout_seconds=timeout))


def _exact_rational(expr):
    """expr evaluated to a sympy Rational when it is a small closed-form number, else None. Small: only
    integers under a million appear, so evaluating cannot blow up (2^(2^100) is left to math-verify)."""
    import sympy

    if not isinstance(expr, sympy.Basic) or expr.free_symbols or not expr.is_number:
        return None
    if any(abs(int(a)) >= 10**6 for a in expr.atoms(sympy.Integer)):
        return None
    value = expr.doit()
    return value if isinstance(value, sympy.Rational) else None


def judge(response: str, reference: str, finish_reason: str | None = None, drop_truncated: bool = True) -> Verdict:
    """One trace's verdict. Never raises: a failure to check is `unverifiable`, never a silent `incorrect`."""
    if finish_reason == "length" and drop_truncated:
        return Verdict(False, "truncated", None)
    region, problem = final_region(response or "")
    if region is None:
        return Verdict(False, problem, None)
    predicted = extract_answer(region)
    if not reference:
        return Verdict(False, "unreferenced", predicted)
    if predicted is None:
        return Verdict(False, "no_answer", None)
    try:
        ok = equivalent(predicted, reference)
    except Exception as e:  # noqa: BLE001 - any checker failure is reported, not swallowed
        return Verdict(False, f"unverifiable: {type(e).__name__}", predicted)
    return Verdict(ok, "correct" if ok else "incorrect", predicted)


def _judge_args(args: tuple) -> Verdict:
    return judge(*args)


def judge_many(items: list[tuple], workers: int = 1) -> list[Verdict]:
    """Judge (response, reference, finish_reason, drop_truncated) tuples, in worker processes when it pays."""
    if workers <= 1 or len(items) < 256:
        return [_judge_args(a) for a in items]
    # spawn, not fork: the caller may hold Ray's threads, and forking a threaded process can deadlock.
    with mp.get_context("spawn").Pool(workers) as pool:
        return pool.map(_judge_args, items, chunksize=max(16, len(items) // (workers * 8)))


# ---------------------------------------------------------------- entry points

def verify_stage(generated_dir: Path, out_dir: Path, spec_filter, workers: int = 1) -> dict:
    """Read generated traces, judge them, write all traces with verdicts (`traces.parquet`) and the kept
    ones (`kept.parquet`), and return the funnel counts (also written as `stats.json`)."""
    table = artifacts.read_table(generated_dir)
    rows = table.to_pylist()
    verdicts = judge_many(
        [(r["response"], r["answer"], r["finish_reason"], spec_filter.drop_truncated) for r in rows], workers
    )
    per_problem: Counter = Counter()
    kept_flags, reasons = [], []
    for r, v in zip(rows, verdicts):
        reason = v.reason
        keep = v.correct or (reason == "unreferenced" and spec_filter.keep_unreferenced)
        if keep and spec_filter.max_per_problem and per_problem[r["problem_id"]] >= spec_filter.max_per_problem:
            keep, reason = False, "over_per_problem_cap"
        per_problem[r["problem_id"]] += keep
        kept_flags.append(keep)
        reasons.append(reason)
    table = table.append_column("extracted", pa.array([v.extracted for v in verdicts], pa.string()))
    table = table.append_column("correct", pa.array([v.correct for v in verdicts], pa.bool_()))
    table = table.append_column("reason", pa.array(reasons, pa.string()))
    table = table.append_column("kept", pa.array(kept_flags, pa.bool_()))
    pq.write_table(table, out_dir / "traces.parquet")
    pq.write_table(table.filter(pa.array(kept_flags, pa.bool_())), out_dir / "kept.parquet")
    stats = {
        "generated": len(rows),
        "correct": sum(v.correct for v in verdicts),
        "kept": sum(kept_flags),
        "problems_with_kept_trace": sum(1 for c in per_problem.values() if c),
        "reasons": dict(Counter(reasons)),
    }
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


REQUIRED = ("problem", "answer", "response")


def _read_any(path: Path) -> pa.Table:
    if path.suffix == ".parquet":
        return pq.read_table(path)
    rows = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {i}: not valid JSON ({e.msg})") from None
    return pa.Table.from_pylist(rows)


def verify_file(in_path: str | Path, out_path: str | Path, workers: int = 1, answer_format: str = "plain") -> Counter:
    """`distill verify`: rows with problem, answer (reference) and response in; the same rows plus `correct`,
    `reason` and `extracted` out (JSONL or Parquet by the output's suffix). Returns counts per reason."""
    in_path, out_path = Path(in_path), Path(out_path)
    table = _read_any(in_path)
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise ValueError(f"{in_path}: missing column(s) {', '.join(missing)} (need problem, answer, response)")
    answers = table.column("answer").to_pylist()
    responses = table.column("response").to_pylist()
    finish = table.column("finish_reason").to_pylist() if "finish_reason" in table.column_names else [None] * len(answers)
    for i, resp in enumerate(responses):
        if resp is not None and not isinstance(resp, str):
            raise ValueError(f"{in_path}: row {i + 1}: 'response' must be a string, got {type(resp).__name__}")
    items = [(r or "", reference_answer(a, answer_format), f, True) for r, a, f in zip(responses, answers, finish)]
    verdicts = judge_many(items, workers)
    out = table.append_column("correct", pa.array([v.correct for v in verdicts], pa.bool_()))
    out = out.append_column("reason", pa.array([v.reason for v in verdicts], pa.string()))
    out = out.append_column("extracted", pa.array([v.extracted for v in verdicts], pa.string()))
    artifacts.write_table_atomic(out, out_path)
    return Counter(v.reason for v in verdicts)
