"""Trace filters, each with a named reason (checked in this order; the first that applies is the reason):

  missing_think    no think block although the spec requires one (`filter.require_think`); a `</think>`
                   alone is enough (R1-distilled models' templates put `<think>` in the prompt)
  too_short        fewer than `filter.min_chars` characters
  too_long         more than `filter.max_chars` characters
  repetition       the trace's last 4,000 characters repeat themselves: more than `filter.max_repetition` of
                   their 32-character shingles occurred earlier in that window (a generation loop; ordinary
                   reasoning scores ~0.05, a loop close to 1)
  language_mixing  the reasoning mixes scripts (the R1 paper removed chains of thought that mix languages): a
                   problem written in Latin script whose trace has `filter.max_foreign_chars` or more letters of
                   another script (CJK, Cyrillic, Arabic, ...); a problem in another script whose trace uses a
                   third one, or hardly its own (answered in another language). Greek letters and math symbols
                   count as no script.

`unclosed_think`, `truncated`, `generation_error` and `empty_answer` come from the judge (distill.verify.judge).
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from distill.verify import dedup

REPETITION_WINDOW = 4000
REPETITION_K = 32

# Letters of scripts other than Latin, by code point range (Greek, math symbols and punctuation count as none).
_SCRIPT_RANGES = [
    (0x0400, 0x04FF, "cyrillic"), (0x0590, 0x05FF, "hebrew"), (0x0600, 0x06FF, "arabic"),
    (0x0750, 0x077F, "arabic"), (0x0900, 0x097F, "devanagari"), (0x0E00, 0x0E7F, "thai"),
    (0x1100, 0x11FF, "hangul"), (0x3040, 0x30FF, "cjk"), (0x3130, 0x318F, "hangul"), (0x3400, 0x4DBF, "cjk"),
    (0x4E00, 0x9FFF, "cjk"), (0xAC00, 0xD7AF, "hangul"), (0xF900, 0xFAFF, "cjk"), (0xFF66, 0xFF9F, "cjk"),
]
_NON_LATIN = re.compile(r"[\u0400-\u06ff\u0750-\u077f\u0900-\u097f\u0e00-\u0e7f\u1100-\u11ff\u3040-\u30ff"
                        r"\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f]+")
_NOT_ASCII_LETTER = bytes(b for b in range(256) if not (65 <= b <= 90 or 97 <= b <= 122))


def _script_of(ch: str) -> str | None:
    o = ord(ch)
    for lo, hi, name in _SCRIPT_RANGES:
        if lo <= o <= hi:
            return name
    return None


def script_counts(text: str) -> Counter:
    """Letters per script (latin, cjk, hangul, cyrillic, ...): one regex pass for the non-Latin runs, and a
    byte-level count of ASCII letters."""
    latin = len(text.encode("ascii", "ignore").translate(None, _NOT_ASCII_LETTER))
    c = Counter({"latin": latin})
    if text.isascii():
        return c
    for run in _NON_LATIN.findall(text):
        for ch in run:
            name = _script_of(ch)
            if name:
                c[name] += 1
    return c


def dominant_script(text: str) -> str:
    c = script_counts(text)
    non_latin = {k: v for k, v in c.items() if k != "latin"}
    if non_latin:
        name, n = max(non_latin.items(), key=lambda kv: kv[1])
        if n >= 0.2 * sum(c.values()) or n >= 20:
            return name
    return "latin"


def mixes_languages(problem_script: str, response: str, max_foreign_chars: int = 5) -> bool:
    if response.isascii():
        return problem_script != "latin" and len(response) > 200  # a whole answer in another language
    c = script_counts(response)
    if problem_script == "latin":
        return sum(v for k, v in c.items() if k != "latin") >= max_foreign_chars
    third = sum(v for k, v in c.items() if k not in ("latin", problem_script))
    own = c.get(problem_script, 0)
    return third >= max_foreign_chars or own < 0.02 * max(1, sum(c.values()))


def repetition(response: str, canonical_hashes: np.ndarray | None = None) -> float:
    """Fraction of repeated 32-character shingles in the trace's last 4,000 characters (see module doc)."""
    if canonical_hashes is None:
        canonical_hashes = dedup.shingles(response[-2 * REPETITION_WINDOW :], REPETITION_K)
    return dedup.repeated_fraction(canonical_hashes[-REPETITION_WINDOW:])


def trace_problem(response: str, problem_script: str, f, hashes: np.ndarray | None = None) -> str | None:
    """The first trace filter `response` fails (`f` is the spec's Filter), or None."""
    if getattr(f, "require_think", False) and "</think>" not in response and "<think>" not in response:
        return "missing_think"
    n = len(response)
    if n < (getattr(f, "min_chars", 0) or 0):
        return "too_short"
    if getattr(f, "max_chars", None) and n > f.max_chars:
        return "too_long"
    max_rep = getattr(f, "max_repetition", 1.0)
    if max_rep is not None and max_rep < 1.0 and n >= 2 * REPETITION_K and repetition(response, hashes) > max_rep:
        return "repetition"
    if getattr(f, "language_mixing", False):
        reasoning = response.rsplit("</think>", 1)[0]
        if mixes_languages(problem_script, reasoning, getattr(f, "max_foreign_chars", 5)):
            return "language_mixing"
    return None
