"""Rules on parsed answers (sympy) that the checker applies before math-verify's own `verify`, for classes
math-verify gets wrong. Runs in checker children only (`distill.verify.checker.check`).

* `parse_whole`: math-verify's parse of the whole answer or nothing. Its default extraction falls back to any
  smaller match it can read when the LaTeX does not parse, so `7\\sqrt(3)` became 7 and equalled a reference 7.
* `same_equation`: two equations of one line or curve (`y = 2 - x/2` and `x + 2y = 4`).
* `inequality_sets`: inequalities joined by "or" / "and" against intervals (`x \\le 1 \\text{ or } x \\ge 3` is
  `(-\\infty,1]\\cup[3,\\infty)`); math-verify reads both joiners as a list, so "and" matched "or".
"""

from __future__ import annotations

import re


def parse_whole(text: str):
    """math-verify's parse of the whole of `text`, or []: no fallback to a part of it (see the module doc)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(f"${text}$", extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                 fallback_mode="no_fallback", extraction_mode="first_match", parsing_timeout=None,
                 raise_on_error=True)


def same_equation(a, b) -> bool | None:
    """Whether two equations with variables describe the same set: a - b on one side is a non-zero constant
    multiple of the other's. None when either is not such an equation."""
    import sympy

    if not (isinstance(a, sympy.Eq) and isinstance(b, sympy.Eq)) or not (a.free_symbols or b.free_symbols):
        return None
    if any(isinstance(side, sympy.Set) or not isinstance(side, sympy.Expr) for side in (*a.args, *b.args)):
        return None
    da, db = a.lhs - a.rhs, b.lhs - b.rhs
    if da == 0 or db == 0:
        return None
    ratio = sympy.simplify(da / db)
    return bool(not ratio.free_symbols and ratio.is_number and ratio.is_finite and ratio != 0)


_JOINER = re.compile(r"\\text\s*\{\s*(or|and)\s*\}|\\(lor|vee|land|wedge)(?![A-Za-z])|(?<![A-Za-z\\])(or|and)(?![A-Za-z])")
_INEQUALITIES = ("LessThan", "StrictLessThan", "GreaterThan", "StrictGreaterThan")


def _split_joined(text: str) -> tuple[str, list[str]] | None:
    """("or" | "and", parts) for inequalities joined at the top level by one kind of joiner, else None."""
    kinds, parts, last = set(), [], 0
    for m in _JOINER.finditer(text):
        head = text[: m.start()]
        if head.count("{") != head.count("}") or head.count("(") + head.count("[") != head.count(")") + head.count("]"):
            continue  # inside braces or brackets (a set-builder, an interval): not a top-level joiner
        word = m.group(1) or m.group(2) or m.group(3)
        kinds.add("or" if word in ("or", "lor", "vee") else "and")
        parts.append(text[last : m.start()])
        last = m.end()
    if not parts or len(kinds) != 1:
        return None
    return kinds.pop(), [*parts, text[last:]]


def _as_set(expr, text: str, depth: int = 0):
    """The set of reals an answer describes when it is an interval, a union of intervals, or inequalities in
    one variable (joined by "or"/"and": read from the text, as math-verify reads both as a list); else None."""
    import sympy

    joined = _split_joined(text) if depth == 0 else None
    if joined is not None:
        kind, texts = joined
        sets = []
        for t in texts:
            parsed = parse_whole(t.strip())
            one = _as_set(parsed[0], t, 1) if parsed else None
            if one is None:
                return None
            sets.append(one)
        return sympy.Union(*sets) if kind == "or" else sympy.Intersection(*sets)
    if isinstance(expr, (sympy.Interval, sympy.Union)):
        return expr
    if isinstance(expr, sympy.Eq) and expr.lhs.is_Symbol and isinstance(expr.rhs, (sympy.Interval, sympy.Union)):
        return expr.rhs  # x \in [1, 2]
    inequality = type(expr).__name__ in _INEQUALITIES or (
        isinstance(expr, (sympy.And, sympy.Or)) and all(type(a).__name__ in _INEQUALITIES for a in expr.args))
    if inequality and len(expr.free_symbols) == 1:
        return expr.as_set()
    return None


def inequality_sets(gold_expr, gold: str, pred_expr, pred: str) -> bool | None:
    """Whether two answers describe the same set of reals, when at least one is written as inequalities."""
    import sympy

    g, p = _as_set(gold_expr, gold), _as_set(pred_expr, pred)
    if g is None or p is None:
        return None
    if isinstance(gold_expr, (sympy.Interval, sympy.Union)) and isinstance(pred_expr, (sympy.Interval, sympy.Union)):
        return None  # two intervals: math-verify's own rules (an open interval may be a point)
    return g.symmetric_difference(p) == sympy.S.EmptySet
