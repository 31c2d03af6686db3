"""Decontamination: drop problems that share an 8-gram with a benchmark problem the spec evaluates on.

open-r1's rule (its `scripts/decontaminate.py`, after the Qwen/DeepSeek practice): lower-case the text, split it
into word tokens, and call a training problem contaminated when any of its n-grams (n = 8) occurs in a
benchmark problem. A problem shorter than n tokens is contaminated only when it equals a benchmark problem's
whole token sequence. Only the slices that are evaluated count (`eval.benchmarks[].problems`: the first N), so
a training set drawn from the same split's other rows (the quickstart's gsm8k_sample) stays usable.

n-grams are hashed with blake2b (stable across processes), so worker processes can share the set.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable

_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _h(words: Iterable[str]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(words).encode(), digest_size=8).digest(), "little")


def ngram_hashes(text: str, n: int) -> set[int]:
    toks = tokens(text)
    if len(toks) < n:
        return {_h(["<short>", *toks])} if toks else set()
    return {_h(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def _benchmark_spec(b) -> tuple[str, int | None]:
    if isinstance(b, str):
        return b, None
    if isinstance(b, dict):
        return b["name"], b.get("problems")
    return b.name, getattr(b, "problems", None)


class Decontaminator:
    """Benchmark n-grams, and the benchmark a text overlaps (or None)."""

    def __init__(self, benchmarks: Iterable = (), n: int = 8, texts: dict[str, list[str]] | None = None):
        self.n = n
        self.grams: dict[int, str] = {}
        self.sizes: dict[str, int] = {}
        sources = dict(texts or {})
        for b in benchmarks or ():
            name, limit = _benchmark_spec(b)
            sources.setdefault(name, load_benchmark(name, limit))
        for name, problems in sources.items():
            self.sizes[name] = len(problems)
            for p in problems:
                for g in ngram_hashes(p, n):
                    self.grams.setdefault(g, name)

    def __bool__(self) -> bool:
        return bool(self.grams)

    def match(self, text: str) -> str | None:
        if not self.grams:
            return None
        for g in ngram_hashes(text, self.n):
            hit = self.grams.get(g)
            if hit is not None:
                return hit
        return None


def load_benchmark(name: str, limit: int | None = None) -> list[str]:
    """The problems of a catalog benchmark (its first `limit`, as evaluation takes them). A benchmark shipped
    as a local JSONL file is read directly (the `datasets` import costs seconds and hundreds of MB)."""
    import json

    from distill import catalog

    entry = catalog.get(name)
    path = getattr(getattr(entry, "loader", None), "path", None)
    if path and path.endswith(".jsonl"):
        out = []
        with open(path) as f:
            for line in f:
                if limit is not None and len(out) >= limit:
                    break
                if line.strip():
                    out.append(str(catalog.pick(json.loads(line), entry.fields["problem"])).strip())
        return out
    from distill.sources import source_rows
    from distill.spec import Source

    return [row["problem"] for row in source_rows(Source(dataset=name, limit=limit))]
