"""Normalising answers and comparing them exactly, in the caller's process: bounded string work, no sympy.

`fast_compare(pred, gold)` settles what it can without a computer-algebra system and returns None for the rest,
which goes to math-verify in a killable worker process (`distill.verify.checker`). It is deliberately stricter
than math-verify where math-verify is known to err:

* integers, decimals and fractions are compared as exact rationals: math-verify's float tolerance accepts
  1/2^99 = 1/2^98, and 0.333333 for 1/3;
* a percent sign is a unit, stripped on both sides: 50% matches 50, never 0.5 (no x100 guessing either way);
* intervals keep their ends: [1, 2) is not [1, 2]; sets (`\\{...\\}`, or a bare list of solutions) are
  order-free; tuples and points are ordered;
* multiple-choice references (A-E) match only the same letter;
* thousands separators (`1,234`, `1{,}234`, `1\\!234`), units (`20 hours`, `5 \\text{ cm}^2`, `90^\\circ`),
  `\\$`, and a leading `x =` are ignored on both sides; AIME's leading zeros are just integers (033 = 33);
* a long decimal (10 or more significant digits) equals a rational when it is that rational rounded or cut to
  the digits printed: 0.142857142857143 = 1/7, but 0.14 and 0.333333 are not 1/7 and 1/3;
* `7 million` is 7000000; an answer qualified by words (`7 or more`, `about 7`, `7 \\text{ if } n > 2`) is never
  the bare number;
* it never reads part of an answer: anything it cannot account for whole (`7\\sqrt(3)`, `7\\mathrm{i}`, `(C) or
  (D)`) is either decided by a rule that covers it or handed to the checker, which parses strictly too.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

MAX_DIGITS = 400  # longer numbers are left to the worker (and its time limit)
MAX_BITS = 4096  # bound on any intermediate value of the exact evaluator

_SUBS = [
    (re.compile(r"\\(?:displaystyle|textstyle|left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![A-Za-z])"), ""),
    (re.compile(r"\\!\s*"), ""),
    (re.compile(r"\\[,;:]|\\ |~|\\quad|\\qquad"), " "),
    (re.compile(r"\{,\}"), ","),
    (re.compile(r"\\[dt]frac"), r"\\frac"),
    (re.compile(r"−|–"), "-"),
    (re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\degree"), ""),
    (re.compile(r"\\%|%|\\\$|\$"), ""),
    (re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox|operatorname)\s*\{\s*\}"), ""),
    # \mathrm{i} and \mathrm{e} are the imaginary unit and Euler's number, not units (math-verify drops a
    # trailing \mathrm{...} as a unit: 3+4\mathrm{i} would be 7)
    (re.compile(r"\\(?:text|textrm|mathrm|operatorname)\s*\{\s*([ei])\s*\}"), r"\1"),
    (re.compile(r"\\(?:lor|vee)(?![A-Za-z])"), r" \\text{ or } "),
    (re.compile(r"\\(?:land|wedge)(?![A-Za-z])"), r" \\text{ and } "),
]
_FRAC_SHORT = [
    (re.compile(r"\\frac\s*(\d)\s*(\d)"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\frac\s*(\d)\s*\{"), r"\\frac{\1}{"),
    (re.compile(r"\\frac\s*\{([^{}]*)\}\s*(\d)"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\sqrt\s*(\d+)"), r"\\sqrt{\1}"),
    (re.compile(r"([_^])\{(\w)\}"), r"\1\2"),
]
_UNIT_TEXT = re.compile(r"(?<=\S)\s*\\(?:text|mbox|mathrm|textrm)\s*\{\s*[A-Za-z][A-Za-z .]*\}(?:\s*\^\s*\{?\d\}?)?\s*$")
_UNIT_WORDS = re.compile(r"(?<=[\d}.])\s+(?:[A-Za-z]{2,}\.?)(?:\s+[A-Za-z]{2,}\.?){0,2}(?:\s*\^\s*\{?\d\}?)?\s*$")
_TEXT_WRAP = re.compile(r"^\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{(.*)\}$")
_ASSIGN = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(?!.*=)")
_CHOICE = re.compile(r"^\(?([A-E])\)?$")
# Another choice after the first: `(C) or (D)`, `C or D`, `C, D` (not the article in `(B) A triangle`).
_OTHER_CHOICE = re.compile(r"\(([A-Ea-e])\)|^\s*(?:or|and|,|/|&)\s*([A-E])(?![A-Za-z])", re.IGNORECASE)
# Numbers written with a word: converted (7 million = 7 \cdot 10^{6}), never stripped as a unit.
MULTIPLIERS = {"hundred": "100", "thousand": "1000", "million": "10^{6}", "billion": "10^{9}",
               "trillion": "10^{12}", "dozen": "12"}
_MULTIPLIER = re.compile(r"(?<=[\d}])\s*(?:\\(?:text|mathrm|mbox|textrm)\s*\{\s*(hundred|thousand|million|billion|"
                         r"trillion|dozen)s?\s*\}|(hundred|thousand|million|billion|trillion|dozen)s?\b)", re.IGNORECASE)
# Words before or after an answer's math that change what it says: `7 or more` is not 7, nor is `about 7`.
QUALIFIERS = frozenset(
    "or and more less fewer least most than over under above below about approximately approx around nearly almost "
    "roughly not no if when where unless is are except only minus plus times squared cubed root sqrt half halves "
    "third thirds quarter quarters tenths hundredths thousandths hundred thousand million billion trillion dozen"
    .split())
# Math written as words: never a unit to strip (`2 pi` is not 2); left for the checker to read.
MATH_WORDS = frozenset("pi sqrt log ln exp sin cos tan cot sec csc arcsin arccos arctan".split())
_TEXT_ANY = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_LEAD_WORDS = re.compile(r"^\s*((?:[A-Za-z]{2,}\s+)+)(?=[^A-Za-z\s])")
_TRAIL_WORDS = re.compile(r"(?<=[\d})\].])\s*((?:[A-Za-z]+\.?\s*)+)$")
# A decimal long enough to be a printed approximation of an exact value (0.142857142857143 for 1/7).
_DECIMAL = re.compile(r"-?(\d*)\.(\d+)")
MIN_DECIMAL_DIGITS = 10
_PRED_CHOICE = re.compile(r"^\(?([A-Ea-e])\)(?:\s|$)|^([A-Ea-e])(?:\)|:|\.|\s|$)")


@lru_cache(maxsize=1 << 16)
def normalise(s: str, keep_assignment: bool = False) -> str:
    """A canonical spelling of one answer: LaTeX spacing, units, `$`, `%`, `\\text{}` wrappers and a leading
    `x =` removed (kept with `keep_assignment`: an equation compared with an equation), number words converted.
    The result is still LaTeX; whitespace is collapsed to single spaces."""
    s = s.strip()
    for _ in range(2):
        s = re.sub(r"^\$+|\$+$", "", s).strip()
        s = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", s).strip()
    for pat, rep in _SUBS:
        s = pat.sub(rep, s)
    s = s.strip().rstrip(".").strip()
    s = _MULTIPLIER.sub(lambda m: " \\cdot " + MULTIPLIERS[(m.group(1) or m.group(2)).lower()], s)
    for _ in range(2):
        s = _UNIT_TEXT.sub("", s).strip()
        m = _TEXT_WRAP.match(s)
        if m and "{" not in m.group(1):
            s = m.group(1).strip()
    m = _UNIT_WORDS.search(s)
    if m and not MATH_WORDS & set(re.findall(r"[a-z]+", m.group(0).lower())):
        s = s[: m.start()].strip()
    s = re.sub(r"\s*(?:percent|dollars?|degrees?|units?)$", "", s).strip()
    for pat, rep in _FRAC_SHORT:
        s = pat.sub(rep, s)
    if not keep_assignment:
        s = _ASSIGN.sub("", s)
    return re.sub(r"\s+", " ", s).strip().rstrip(".").strip()


# ---------------------------------------------------------------- exact evaluation of plain arithmetic

_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_TOKEN = re.compile(r"\s*(\d+\.\d*|\.\d+|\d+|\\frac|\\cdot|\\times|\\div|[-+*/^(){}\[\]])")


class _NotPlain(Exception):
    pass


def _bits(x: Fraction) -> int:
    return x.numerator.bit_length() + x.denominator.bit_length()


class _Arith:
    """Recursive descent over + - * / ^, \\frac{}{}, \\cdot, \\times, parentheses and braces, in Fractions.
    Anything else (a letter, \\sqrt, an oversized power) raises _NotPlain: the answer is not plain arithmetic."""

    def __init__(self, s: str):
        pos, toks = 0, []
        while pos < len(s):
            m = _TOKEN.match(s, pos)
            if not m:
                if s[pos:].strip() == "":
                    break
                raise _NotPlain
            toks.append(m.group(1))
            pos = m.end()
        self.toks, self.i = toks, 0

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, tok=None):
        t = self.peek()
        if t is None or (tok is not None and t != tok):
            raise _NotPlain
        self.i += 1
        return t

    def parse(self) -> Fraction:
        v = self.expr()
        if self.peek() is not None:
            raise _NotPlain
        return v

    def expr(self) -> Fraction:
        v = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            w = self.term()
            v = v + w if op == "+" else v - w
        return v

    def term(self) -> Fraction:
        v = self.unary()
        while self.peek() in ("*", "/", "\\cdot", "\\times", "\\div"):
            op = self.take()
            w = self.unary()
            if op in ("/", "\\div"):
                if w == 0:
                    raise _NotPlain
                v = v / w
            else:
                v = v * w
            if _bits(v) > MAX_BITS:
                raise _NotPlain
        return v

    def unary(self) -> Fraction:
        if self.peek() in ("-", "+"):
            return -self.unary() if self.take() == "-" else self.unary()
        return self.power()

    def power(self) -> Fraction:
        base = self.atom()
        if self.peek() == "^":
            self.take()
            exp = self.atom_exponent()
            if exp.denominator != 1 or abs(exp.numerator) > 10_000:
                raise _NotPlain
            if base == 0 and exp < 0:
                raise _NotPlain
            if _bits(base) * abs(exp.numerator) > MAX_BITS:
                raise _NotPlain
            base = base ** int(exp)
        return base

    def atom_exponent(self) -> Fraction:
        t = self.peek()
        if t == "{" or t == "(":
            return self.atom()
        if t is not None and t.isdigit():  # x^23 in LaTeX is x^2 * 3: only the first digit is the exponent
            self.take()
            if len(t) > 1:
                raise _NotPlain
            return Fraction(int(t))
        if t == "-":
            self.take()
            return -self.atom_exponent()
        raise _NotPlain

    def atom(self) -> Fraction:
        t = self.take()
        if t in ("(", "{", "["):
            v = self.expr()
            self.take({"(": ")", "{": "}", "[": "]"}[t])
            return v
        if t == "\\frac":
            self.take("{")
            a = self.expr()
            self.take("}")
            self.take("{")
            b = self.expr()
            self.take("}")
            if b == 0:
                raise _NotPlain
            return a / b
        if t[0].isdigit() or t[0] == ".":
            if len(t) > MAX_DIGITS:
                raise _NotPlain
            v = Fraction(t)
            if self.peek() == "\\frac" and "." not in t:  # a mixed number: 1\frac{4}{5} = 9/5
                return v + self.atom()
            return v
        raise _NotPlain


def nesting_depth(s: str) -> int:
    depth = best = 0
    for c in s:
        if c in "([{":
            depth += 1
            best = max(best, depth)
        elif c in ")]}":
            depth -= 1
    return best


def exact_value(s: str) -> Fraction | None:
    """The exact value of a plain-arithmetic answer (normalised), or None when it is not one."""
    if not s or len(s) > 3 * MAX_DIGITS:
        return None
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if "," in s:
        return None
    try:
        return _Arith(s).parse()
    except (_NotPlain, RecursionError, ValueError, ZeroDivisionError, OverflowError):
        return None


# ---------------------------------------------------------------- lists, sets, tuples and intervals

_LISTY = re.compile(r",\s")
_WORDS = re.compile(r"[A-Za-z]+(?: [A-Za-z]+)*")


def _split_top(s: str) -> list[str] | None:
    """Split at top-level commas; None when brackets do not balance."""
    parts, depth, cur = [], 0, []
    i = 0
    while i < len(s):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return None
        if c == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    if depth != 0:
        return None
    parts.append("".join(cur).strip())
    return parts


def _collection(s: str) -> tuple[str, str, list[str]] | None:
    """(kind, ends, items) for `\\{a, b\\}` (set), `(a, b)`/`[a, b)`.. (bracketed: tuple or interval), or a
    bare `a, b` (list of solutions, order-free); None for anything else."""
    s = s.strip()
    if s.startswith("\\{") and s.endswith("\\}"):
        items = _split_top(s[2:-2])
        return ("set", "{}", items) if items else None
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        items = _split_top(s[1:-1])
        if items and len(items) >= 2 and _split_top(s) == [s]:
            return "bracket", s[0] + s[-1], items
        return None
    if "," in s and not _THOUSANDS.fullmatch(s):
        items = _split_top(s)
        if items and len(items) >= 2:
            return "list", "", items
    return None


def _values(items: list[str]) -> list[Fraction | str] | None:
    """Exact values of a collection's items (plus +-infinity for interval ends); None if any is not plain."""
    out: list[Fraction | str] = []
    for it in items:
        compact = it.replace(" ", "")
        if compact in ("\\infty", "+\\infty", "-\\infty"):
            out.append(compact.lstrip("+"))
            continue
        v = exact_value(compact)
        if v is None:
            return None
        out.append(v)
    return out


def _compare_collections(p: str, g: str) -> tuple[bool, str] | None:
    gc, pc = _collection(g), _collection(p)
    if gc is None:
        return None
    gv = _values(gc[2])
    if gv is None:
        return None
    if pc is None:
        if exact_value(p) is not None:  # one number against a collection
            return False, "exact_collection"
        return None
    pv = _values(pc[2])
    if pv is None:
        return None
    gk, pk = gc[0], pc[0]
    if "bracket" in (gk, pk):
        # Tuples, points and intervals are ordered; an interval's ends must match: [1, 2) is not [1, 2].
        if gk == "bracket" and pk == "bracket" and gc[1] != pc[1]:
            return False, "exact_interval_ends"
        if {gk, pk} == {"bracket", "set"}:
            return None  # a set against a tuple: let math-verify's strict typing decide
        return pv == gv, "exact_tuple"
    # sets and bare lists of solutions: order-free
    return (sorted(map(str, pv)) == sorted(map(str, gv)) and len(set(map(str, pv))) == len(set(map(str, gv)))), \
        "exact_set"


# ---------------------------------------------------------------- words and printed decimals

@lru_cache(maxsize=1 << 16)
def qualifiers(s: str) -> frozenset[str]:
    """The qualifying words (`QUALIFIERS`) in the words that stand before or after an answer's math:
    `7 \\text{ or more}` has {or, more}; `19, 46, \\text{ and } 82` has none (the "and" is inside the list)."""
    t = _MULTIPLIER.sub(" ", s)  # converted to a factor by `normalise`: not a qualifier
    t = _TEXT_ANY.sub(lambda m: f" {m.group(1)} ", t).replace("$", " ")
    lead, trail = _LEAD_WORDS.match(t), _TRAIL_WORDS.search(t)
    words = set(re.findall(r"[a-z]+", lead.group(1).lower())) - {"is", "are"} if lead else set()  # "the answer is 7"
    words |= set(re.findall(r"[a-z]+", trail.group(1).lower())) if trail else set()
    return frozenset(words & QUALIFIERS)


_DEGREE_SIGN = re.compile(r"\\circ|°|\\degree|\bdegrees?\b", re.IGNORECASE)
_ANGLE_WORDS = re.compile(r"\bangles?\b|\bdegrees?\b|°|\^\s*\{?\s*\\circ|\\angle", re.IGNORECASE)  # not f \circ g
_RADIANS = re.compile(r"\bradians?\b", re.IGNORECASE)


def mentions_degrees(answer: str) -> bool:
    """An answer written with a degree sign (or the word): its number is an angle in degrees."""
    return _DEGREE_SIGN.search(answer) is not None


def angle_problem(problem: str | None) -> bool:
    """A problem about angles, or asking for degrees, and not for radians: a plain number answering it may be an
    angle in degrees (45 for pi/4)."""
    return bool(problem) and _ANGLE_WORDS.search(problem) is not None and _RADIANS.search(problem) is None


def balanced(s: str) -> bool:
    """Braces pair up, and brackets and parentheses as many open as close (an interval `[1, 2)` mixes them).
    math-verify's normaliser drops what does not fit (`416\\text{ m}}` reads as 416): an unbalanced answer is
    no answer to compare."""
    t = s.replace("\\{", "").replace("\\}", "")
    depth = 0
    for c in t:
        depth += (c == "{") - (c == "}")
        if depth < 0:
            return False
    return depth == 0 and t.count("(") + t.count("[") == t.count(")") + t.count("]")


def is_decimal(s: str) -> bool:
    return _DECIMAL.fullmatch(s) is not None


def decimal_matches(text: str, value: Fraction) -> bool:
    """Whether `text`, a decimal of at least MIN_DECIMAL_DIGITS significant digits, is `value` rounded (either
    way at a tie) or cut to the decimal places printed. Fewer digits never match: 0.14 is not 1/7, nor 0.333333
    1/3 (a float tolerance would accept both)."""
    m = _DECIMAL.fullmatch(text)
    if m is None or len((m.group(1) + m.group(2)).lstrip("0")) < MIN_DECIMAL_DIGITS:
        return False
    scale = 10 ** len(m.group(2))
    printed, exact = Fraction(text) * scale, value * scale  # printed is a whole number
    return printed == int(exact) or abs(printed - exact) <= Fraction(1, 2)


# ---------------------------------------------------------------- the fast comparison

@lru_cache(maxsize=1 << 16)
def fast_compare(pred: str, gold: str) -> tuple[bool, str] | None:
    """(correct, how) when decidable exactly without a CAS; None to hand the pair to math-verify."""
    p, g = normalise(pred), normalise(gold)
    if not p:
        return False, "empty"
    if qualifiers(pred) != qualifiers(gold):
        return False, "qualified_answer"  # `7 or more` against 7: the words are part of the answer
    ps, gs = p.replace(" ", ""), g.replace(" ", "")
    if ps == gs:
        return True, "same_text"
    if _WORDS.fullmatch(g) and _WORDS.fullmatch(p) and len(gs) > 1:
        return ps.lower() == gs.lower(), "text"  # \text{Evelyn} = evelyn; one letter is a variable, not text
    mc = _CHOICE.fullmatch(gs)
    if mc:
        mp = _PRED_CHOICE.match(p)
        letter = mp.group(1) or mp.group(2) if mp else None
        others = {(o[0] or o[1]).upper() for o in _OTHER_CHOICE.findall(p[mp.end():])} if mp else set()
        return (letter is not None and letter.upper() == mc.group(1) and others <= {mc.group(1)}), "choice"
    # "1,234" is a number; "1, 234" (a comma then a space) is a list of two.
    gv = None if _LISTY.search(g) else exact_value(gs)
    if gv is not None:
        pv = None if _LISTY.search(p) else exact_value(ps)
        if pv is not None:
            if pv == gv:
                return True, "exact_number"
            if is_decimal(ps) != is_decimal(gs):  # a printed decimal against an exact value
                dec, exact = (ps, gv) if is_decimal(ps) else (gs, pv)
                if decimal_matches(dec, exact):
                    return True, "decimal_rounded"
            return False, "exact_number"
        if _collection(p) is not None and _values(_collection(p)[2]) is not None:
            return False, "exact_collection"
        return None
    return _compare_collections(p, g)
