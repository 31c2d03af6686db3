"""Where a trace's final answer is, and what it is: cheap string work, safe on any input.

Only the final-answer region is read: the text after the last `</think>` when the trace has one, else the whole
response (a teacher that writes no think block). In it the answer is, in this order:

1. the last brace-matched `\\boxed{...}` or `\\fbox{...}` (also `\\boxed 5`); an earlier box is merged into it
   only when nothing but a list separator stands between them (`\\boxed{2}, \\boxed{3}`, `\\boxed{2} and
   \\boxed{3}`): math-verify merges `\\boxed{2}. Therefore ... \\boxed{3}` into {2, 3} because "Therefore"
   contains "or", which turns a final answer of 3 into a set;
2. a GSM8K `#### N` line;
3. the last answer marker models really write: `Final Answer:`, `the answer is`, `Answer:`, a line starting
   `A:`;
4. a final line that is all bold (`**42**`).

There is deliberately no "last number in the text" fallback: a trace cut off mid-thought often ends with some
number, and keeping it when that number happens to equal the reference is the costly error in distillation.
A last box that never closes (`\\boxed{12` at the end of a cut-off trace) is no answer at all, not a reason to
fall back to an earlier, draft box.
"""

from __future__ import annotations

import re

MAX_ANSWER_CHARS = 2000  # an extracted answer longer than this is not an answer a checker should parse

_BOX = re.compile(r"\\(?:boxed|fbox)")
_BRACE = re.compile(r"[{}]")
# What may stand between two boxes of one multi-part answer: separators and "and"/"or" as whole words only.
_JOINER = re.compile(
    r"(?:\s|\$|\\[,;:!]|\\quad|\\qquad|,|;|&|\\text\{\s*(?:and|or|,)\s*\}|\\(?:text|mbox)\{\s*\}|\band\b|\bor\b"
    r"|\b[A-Za-z](?:_\{?\w+\}?)?\s*=)*",  # also "x = \boxed{2} or x = \boxed{3}"
    re.IGNORECASE,
)


def _box_at(text: str, start: int) -> tuple[str | None, int]:
    """The box whose command starts at `start`: (content, end index), or (None, -1) when it never closes."""
    n = len(text)
    i = start + 1
    while i < n and text[i].isalpha():
        i += 1
    j = i
    while j < n and text[j] == " ":
        j += 1
    if j < n and text[j] == "{":
        depth = 0
        for m in _BRACE.finditer(text, j):
            depth += 1 if m.group() == "{" else -1
            if depth == 0:
                return text[j + 1 : m.start()].strip(), m.end()
        return None, -1
    if j > i:  # `\boxed 5`: a space, then one token
        m = re.match(r"[^\s$.,;]+", text[j:j + 200])
        if m:
            return m.group(0), j + m.end()
    return None, -1


def boxed_answers(text: str) -> list[tuple[int, int, str | None]]:
    """Every `\\boxed`/`\\fbox` in text as (start, end, content); content None when the box never closes."""
    return [(m.start(), *_box_at(text, m.start())[::-1]) for m in _BOX.finditer(text)]


def last_boxed(text: str, merge_parts: bool = True) -> str | None:
    """Content of the last box ("" for an empty one; None for none, or for a last box that never closes),
    merged with the boxes just before it when only list separators stand between them."""
    last = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if last == -1:
        return None
    content, _ = _box_at(text, last)
    if content is None or not merge_parts:
        return content
    # Earlier parts are looked for only shortly before the last box: a long trace is never walked whole.
    off = max(0, last - 2000)
    tail = text[off:]
    parts, nxt = [content], last - off
    for start, end, c in reversed([b for b in boxed_answers(tail[: last - off])]):
        if c is None or end > nxt or _JOINER.fullmatch(tail[end:nxt]) is None:
            break
        parts.append(c)
        nxt = start
    parts = list(dict.fromkeys(p for p in reversed(parts) if p))  # `\\boxed{2} \\boxed{2}` is one answer
    return ", ".join(parts) if len(parts) > 1 else content


_HASHES = re.compile(r"####\s*([^\n]*)")
_MARKERS = re.compile(
    r"(?:final\s+answer|the\s+answer|\banswer)\s*(?:is|:|=)\s*:?"  # "Final Answer:", "the answer is", "Answer:"
    r"|^[ \t>*_#]*A\s*:",  # a line starting "A:" (question/answer style)
    re.IGNORECASE | re.MULTILINE,
)
_BOLD_LINE = re.compile(r"^\s*\*\*([^*\n]{1,80})\*\*\s*\.?\s*$")
_STOP = re.compile(r"(?<!\d)\.(?!\d)\s|\s(?:because|since|which|so|as)\s|;|,\s+(?!and\b|or\b)(?=[A-Za-z]{3,})",
                   re.IGNORECASE)  # "72, altogether" is 72; "1, 2, and 3" stays a list


def clean(s: str) -> str:
    """A marker's value: one line, no markdown bold, no surrounding `$`, no trailing full stop, no prose."""
    s = s.strip().split("\n")[0].strip()
    m = _STOP.search(s + " ")
    if m and m.start() > 0:
        s = s[: m.start()]
    s = s.strip().strip("*_").strip()
    s = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", s).strip()
    s = re.sub(r"^\$+|\$+$", "", s).strip()
    return s.rstrip(".").strip()


def extract_answer(region: str) -> str | None:
    """The final answer written in `region` (see the module docstring), or None."""
    if "\\boxed" in region or "\\fbox" in region:
        return last_boxed(region)
    if "####" in region:
        hashes = _HASHES.findall(region)
        if hashes:
            return clean(hashes[-1])
    last = None
    for last in _MARKERS.finditer(region):
        pass
    if last is not None:
        value = clean(region[last.end() :])
        if value:
            return value
    lines = [ln for ln in region.rstrip().rsplit("\n", 3) if ln.strip()]
    if lines:
        m = _BOLD_LINE.match(lines[-1])
        if m:
            inner = re.sub(r"^(?:final\s+)?answer\s*[:=]?\s*", "", m.group(1).strip(), flags=re.IGNORECASE)
            return clean(inner) or None
    return None


def final_region(response: str) -> tuple[str | None, str | None]:
    """(region, problem): the text to read the answer from, or why there is none (`unclosed_think`).

    A response with `</think>` but no `<think>` is normal: R1-distilled models' chat templates put the opening
    tag in the prompt."""
    cut = response.rfind("</think>")
    if cut != -1:
        return response[cut + len("</think>") :], None
    if "<think>" in response:
        return None, "unclosed_think"
    return response, None


def reference_answer(raw: object, fmt: str) -> str:
    """The checkable reference from a dataset's answer field."""
    if fmt == "none" or raw is None:
        return ""
    if fmt == "code":
        from distill.verify.code import normalise_tests

        return normalise_tests(raw)
    text = str(raw)
    if fmt == "gsm8k":
        return text.rsplit("####", 1)[-1].strip().replace(",", "")
    if fmt == "boxed":
        return last_boxed(text, merge_parts=False) or ""
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return text.strip()
