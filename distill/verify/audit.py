"""`distill audit`: measure the verifier itself.

Two uses, one command:

* Sample for review. Given a run directory (its `verify/traces.parquet`) or any file of judged traces, draw
  `--sample` accepted and `--sample` rejected verdicts of the verifier (its `correct` column: the answer alone;
  rejected ones spread over the reasons), print them with `kept` and `reason`, and write them as JSONL with an
  empty `label` for a person to fill in (true: the trace's final answer is right; false: it is not). Whether a
  trace with a right answer is fit to train on is the filters' call (`kept`, `reason`), not the verifier's.
* Score labelled rows. Given rows with problem, answer, response and `label` (a reviewed sample, or the
  regression set in tests/data/verifier_regression.jsonl), judge every row's answer afresh (`correct`) and
  print the confusion matrix with precision, recall, the false-positive rate (wrong traces kept: the costly error in distillation)
  and the false-negative rate, then every disagreement with its `source` note. `--min-precision` /
  `--min-recall` make it fail (exit 1) below a bar, which is how CI runs it on the regression set.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pyarrow as pa

TAIL_CHARS = 800


def _load(path: Path) -> pa.Table:
    if path.is_dir():
        cand = path / "verify" / "traces.parquet"
        if not cand.exists():
            cand = path / "traces.parquet"
        if not cand.exists():
            raise FileNotFoundError(f"{path}: no verify/traces.parquet (a run directory) or traces.parquet")
        path = cand
    from distill.verify.files import read_table

    return read_table(path)


def _label(value) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "correct", "accept", "keep"):
        return True
    if text in ("false", "no", "0", "incorrect", "reject", "drop"):
        return False
    raise ValueError(f"label {value!r}: use true/false")


def score(rows: list[dict], answer_format: str = "plain", workers: int = 1) -> dict:
    """Judge labelled rows and compare with their labels. Returns counts, rates and the disagreements."""
    from distill.verify.extract import reference_answer
    from distill.verify.judge import judge_many

    labelled = [(r, _label(r.get("label"))) for r in rows]
    labelled = [(r, lab) for r, lab in labelled if lab is not None]
    items = [(r.get("response") or "", reference_answer(r.get("answer"), r.get("answer_format") or answer_format),
              r.get("finish_reason"), True, r.get("answer_format") or answer_format, r.get("problem"))
             for r, _ in labelled]
    verdicts = judge_many(items, workers=workers)
    tp = fp = fn = tn = 0
    mistakes = []
    outcomes = Counter()
    for (r, lab), v in zip(labelled, verdicts):
        outcomes[v.outcome] += 1
        if v.correct and lab:
            tp += 1
        elif v.correct and not lab:
            fp += 1
        elif lab:
            fn += 1
        else:
            tn += 1
        if v.correct != lab:
            mistakes.append({"kind": "false_positive" if v.correct else "false_negative", "answer": r.get("answer"),
                             "extracted": v.extracted, "reason": v.reason, "detail": v.detail,
                             "source": r.get("source"), "response_tail": (r.get("response") or "")[-200:]})
    n = tp + fp + fn + tn
    return {
        "rows": n, "true_positive": tp, "false_positive": fp, "false_negative": fn, "true_negative": tn,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "false_positive_rate": fp / (fp + tn) if fp + tn else 0.0,
        "false_negative_rate": fn / (fn + tp) if fn + tp else 0.0,
        "accuracy": (tp + tn) / n if n else 1.0,
        "outcomes": dict(outcomes),
        "mistakes": mistakes,
    }


def sample(table: pa.Table, k: int, seed: int = 0) -> list[dict]:
    """Up to k accepted and k rejected judged rows (by `correct`, the verifier's verdict on the answer), the
    rejected ones spread evenly over their reasons."""
    need = {"response", "answer", "reason", "correct"}
    missing = need - set(table.column_names)
    if missing:
        raise ValueError(f"audit: judged rows need {', '.join(sorted(need))} (missing {', '.join(sorted(missing))});"
                         " run `distill verify` first, or give labelled rows")
    reasons = table.column("reason").to_pylist()
    accepted = [bool(x) for x in table.column("correct").to_pylist()]
    rng = random.Random(seed)
    acc_idx = [i for i, a in enumerate(accepted) if a]
    by_reason: dict[str, list[int]] = {}
    for i, (a, reason) in enumerate(zip(accepted, reasons)):
        if not a:
            by_reason.setdefault(reason, []).append(i)
    picked = rng.sample(acc_idx, min(k, len(acc_idx)))
    rej: list[int] = []
    pools = {r: rng.sample(ix, len(ix)) for r, ix in sorted(by_reason.items())}
    while len(rej) < k and any(pools.values()):
        for r in list(pools):
            if pools[r] and len(rej) < k:
                rej.append(pools[r].pop())
    cols = set(table.column_names)
    out = []
    for i, verdict in [(i, "accepted") for i in picked] + [(i, "rejected") for i in rej]:
        row = {c: table.column(c)[i].as_py() for c in ("problem_id", "problem", "answer", "extracted", "correct",
                                                        "kept", "reason", "detail", "finish_reason") if c in cols}
        response = table.column("response")[i].as_py() or ""
        out.append({"verdict": verdict, **row, "response_tail": response[-TAIL_CHARS:], "response": response,
                    "label": None})
    return out


def print_score(res: dict, out) -> None:
    print(f"labelled rows: {res['rows']}   outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(res['outcomes'].items())),
          file=out)
    print("                  label correct   label wrong", file=out)
    print(f"  judged correct  {res['true_positive']:13d} {res['false_positive']:13d}", file=out)
    print(f"  judged not      {res['false_negative']:13d} {res['true_negative']:13d}", file=out)
    print(f"precision {res['precision']:.3f}   recall {res['recall']:.3f}   false-positive rate "
          f"{res['false_positive_rate']:.3f}   false-negative rate {res['false_negative_rate']:.3f}", file=out)
    for m in res["mistakes"]:
        print(f"  {m['kind']}: reference {m['answer']!r}, read {m['extracted']!r} ({m['reason']}, {m['detail']})"
              f"  [{m['source']}]", file=out)


def audit(path: str | Path, sample_size: int = 20, seed: int = 0, out_path: str | Path | None = None,
          answer_format: str = "plain", workers: int = 1, min_precision: float | None = None,
          min_recall: float | None = None, stream=None) -> int:
    """The `distill audit` command. Returns the exit code."""
    import sys

    stream = stream or sys.stdout
    table = _load(Path(path))
    if "label" in table.column_names and any(_label(x) is not None for x in table.column("label").to_pylist()):
        res = score(table.to_pylist(), answer_format, workers)
        print_score(res, stream)
        if out_path:
            Path(out_path).write_text(json.dumps(res, indent=2))
        ok = (min_precision is None or res["precision"] >= min_precision) and \
             (min_recall is None or res["recall"] >= min_recall)
        if not ok:
            print(f"audit: below the bar (precision >= {min_precision}, recall >= {min_recall})", file=stream)
        return 0 if ok else 1
    rows = sample(table, sample_size, seed)
    counts = Counter(r["reason"] for r in rows)
    print(f"sampled {sum(r['verdict'] == 'accepted' for r in rows)} accepted and "
          f"{sum(r['verdict'] == 'rejected' for r in rows)} rejected verdicts of {table.num_rows} "
          f"(reasons: {', '.join(f'{k} {v}' for k, v in counts.most_common())})", file=stream)
    for r in rows:
        tail = " ".join(r["response_tail"][-160:].split())
        kept = "" if r.get("kept") is None else (", kept" if r["kept"] else ", not kept")
        print(f"  [{r['verdict']}] {r['reason']}{kept}: reference {r.get('answer')!r}, read {r.get('extracted')!r}"
              f" | ...{tail}", file=stream)
    if out_path:
        with open(out_path, "w") as f:
            for r in rows:
                f.write(json.dumps({k: v for k, v in r.items() if k != "response_tail"}, ensure_ascii=False) + "\n")
        print(f"review file: {out_path} (fill in each 'label' with true/false, then run `distill audit {out_path}`)",
              file=stream)
    return 0
