"""Statistics of an evaluation: pass@1 with its standard error, and the paired student − base comparison.

pass@1 (R1's protocol): each problem gets k samples; its score is the fraction that is correct; pass@1 is the
mean of those scores over problems, and its standard error is the sample standard deviation of the per-problem
scores divided by sqrt(problems) (problems are the unit of sampling; the k samples only make each score less
noisy).

Base and student answer the *same* problems, so their difference is judged per problem: d_i = student_i −
base_i, the difference is mean(d), and its paired standard error is sd(d) / sqrt(problems). Problems that are
easy or hard for both models cancel out, so the paired error is smaller than the independent one
(sqrt(se_base² + se_student²)) whenever the two models' per-problem scores are positively correlated, and a
real gain shows up with fewer problems. A difference counts as clear when it exceeds two paired standard errors.

Hand-written rather than scipy/statsmodels: a mean and a sample standard deviation, where the point is which
unit (the problem) they are over.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

# Eval-sample reasons that are failures of form, not of arithmetic: no final answer could be read, or the
# model ran to the token limit. A student that learned the teacher's verified traces makes fewer of them.
FORMAT_FAILURES = ("no_answer", "truncated")


def per_problem(correct_by_problem: Mapping[str, Iterable[bool]]) -> dict[str, float]:
    """Each problem's score: the fraction of its samples that are correct."""
    out = {}
    for pid, samples in correct_by_problem.items():
        s = [bool(c) for c in samples]
        if not s:
            raise ValueError(f"problem {pid}: no samples")
        out[pid] = sum(s) / len(s)
    return out


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    """Mean, and the standard error of the mean (sample standard deviation / sqrt(n); 0 for n < 2)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def pass_at_1(correct_by_problem: Mapping[str, Iterable[bool]]) -> tuple[float, float]:
    """pass@1 and its standard error over problems."""
    return mean_and_stderr(list(per_problem(correct_by_problem).values()))


def paired_difference(base: Mapping[str, Iterable[bool]], student: Mapping[str, Iterable[bool]]) -> dict:
    """student − base over the same problems and the same k: difference, paired standard error, verdict."""
    b, s = {p: list(v) for p, v in base.items()}, {p: list(v) for p, v in student.items()}
    if set(b) != set(s):
        only = sorted(set(b) ^ set(s))
        raise ValueError(f"paired comparison needs the same problems; differing: {', '.join(only[:5])}")
    ks = {len(v) for v in (*b.values(), *s.values())}
    if len(ks) != 1:
        raise ValueError(f"paired comparison needs the same k for every problem and model; found k in {sorted(ks)}")
    pb, ps = per_problem(b), per_problem(s)
    diff, se = mean_and_stderr([ps[p] - pb[p] for p in sorted(pb)])
    return {"difference": diff, "paired_stderr": se, "problems": len(pb), "k": ks.pop(),
            "exceeds_2se": abs(diff) > 2 * se}


def is_format_failure(reason: str | None, finish_reason: str | None, correct: bool) -> bool:
    """A wrong sample that failed on form: no final answer could be read, or it ran to the token limit (eval
    keeps cut samples and judges them, so a cut one can carry a stray number: it still counts as cut)."""
    return not correct and (reason in FORMAT_FAILURES or finish_reason == "length")


def format_failure_rate(samples: Iterable[tuple[str | None, str | None, bool]]) -> float:
    """Share of (reason, finish_reason, correct) samples that failed on form, not on the answer's value."""
    flags = [is_format_failure(*s) for s in samples]
    return sum(flags) / len(flags) if flags else 0.0


def comparison_rows(scores: dict, base_scores: dict | None) -> list[dict]:
    """Per benchmark of a student's scores.json: base and student pass@1 (± se), and the paired student − base
    (`vs_base`, when the run scored the base); what the model card, the report and `distill run` print."""
    rows = []
    paired = (scores.get("vs_base") or {}).get("benchmarks", {})
    for name, s in scores.get("benchmarks", {}).items():
        b = (base_scores or {}).get("benchmarks", {}).get(name)
        rows.append({"benchmark": name, "problems": s["problems"], "k": s["k"], "student": s, "base": b,
                     "paired": paired.get(name)})
    return rows


def format_table(rows: list[dict], student: str) -> str:
    """A plain-text table for the terminal: pass@1 in %, ± standard error; difference ± paired standard error."""
    def pct(s: dict | None) -> str:
        return f"{100 * s['pass@1']:5.1f} ± {100 * s['stderr']:.1f}" if s else "-"

    head = f"  {'benchmark':<18} {'problems':>8} {'k':>2}  {'base':>12}  {'student':>12}  student − base (paired se)"
    lines = [f"{student}: pass@1 (%) on held-out problems", head]
    for r in rows:
        p = r["paired"]
        diff = "-" if not p else (f"{100 * p['difference']:+5.1f} ± {100 * p['paired_stderr']:.1f}  "
                                  + ("> 2 se" if p["exceeds_2se"] else "not significant (< 2 se)"))
        lines.append(f"  {r['benchmark']:<18} {r['problems']:>8} {r['k']:>2}  {pct(r['base']):>12}  "
                     f"{pct(r['student']):>12}  {diff}")
    return "\n".join(lines)
