"""Exact and near-duplicate detection (MinHash + LSH) for problems and traces, in numpy.

Why hand-written rather than `datasketch`: datasketch hashes every shingle with SHA-1 in a Python loop (about a
microsecond a shingle) and applies its permutations per shingle; an R1-length trace has ~12,000 character
shingles, so 800k traces would cost hours of CPU. Here each text is hashed in a few vectorised numpy passes:

* shingles are the k-byte windows of the UTF-8 text (problems: lower-cased words only), hashed by a polynomial
  rolling hash mod 2^64 (one `cumsum`, one multiply by precomputed inverse powers) and a multiply-xorshift;
* the signature is a one-permutation MinHash (Li, Owen & Zhang 2012): the hash's top bits pick one of `K` bins,
  the signature holds the smallest hash in each bin (one `np.minimum.at`, no per-permutation pass);
* LSH: `bands` bands of `K // bands` bins; texts sharing any band are candidates, and a candidate pair is a
  near-duplicate only when the Jaccard similarity estimated over the bins filled in either text reaches the
  threshold. Clusters are closed transitively (union-find); the first row of each cluster is kept.

Everything here is deterministic across processes (no Python `hash()`), so workers can sign texts in parallel.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

K = 64  # MinHash bins
BANDS = 16  # LSH bands of K // BANDS = 4 bins: candidate pairs from Jaccard ~0.5 up; verified at the threshold
EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)
MAX_BYTES = 1 << 17  # longer texts are signed on their first and last 64 KiB
_P = 0x100000001B3  # odd, so invertible mod 2^64
_MASK64 = (1 << 64) - 1


def _inverse(a: int) -> int:
    x = 1
    for _ in range(7):  # Newton iteration doubles the correct low bits each step
        x = (x * (2 - a * x)) & _MASK64
    return x


def _powers(base: int, n: int) -> np.ndarray:
    out = np.empty(n, dtype=np.uint64)
    out[0] = 1
    for i in range(1, min(n, 64)):
        out[i] = (int(out[i - 1]) * base) & _MASK64
    # extend by doubling: out[i + m] = out[i] * base^m
    m = min(n, 64)
    while m < n:
        mult = np.uint64((int(out[m - 1]) * base) & _MASK64)
        take = min(m, n - m)
        with np.errstate(over="ignore"):
            out[m : m + take] = out[:take] * mult
        m += take
    return out


_POW = _powers(_P, MAX_BYTES + 1)
_INV = _powers(_inverse(_P), MAX_BYTES + 1)


def _mix(h: np.ndarray) -> np.ndarray:
    """A cheap finaliser (multiply, xor-shift: every output bit depends on the input's low bits)."""
    with np.errstate(over="ignore"):
        h = h * np.uint64(0xBF58476D1CE4E5B9)
        return h ^ (h >> np.uint64(31))


def canonical(text: str) -> str:
    """Lower-cased, whitespace collapsed: what exact and near-duplicate detection compare."""
    return " ".join(text.lower().split())


_NON_WORD = re.compile(r"[^0-9a-z]+")


def canonical_words(text: str) -> str:
    """Lower-cased words and numbers only: `$60$ miles,` and `60 miles` are the same problem text."""
    return _NON_WORD.sub(" ", text.lower()).strip()


def digest(text: str) -> int:
    """A stable 63-bit digest of a text (exact duplicates)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "little") >> 1


def shingles(text: str, k: int) -> np.ndarray:
    """Hashes (uint64) of every k-byte window of the UTF-8 text."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > MAX_BYTES:
        data = data[: MAX_BYTES // 2] + data[-MAX_BYTES // 2 :]
    b = np.frombuffer(data, dtype=np.uint8).astype(np.uint64)
    n = len(b)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    if n <= k:
        return _mix(np.array([digest(text)], dtype=np.uint64))
    with np.errstate(over="ignore"):
        cum = np.empty(n + 1, dtype=np.uint64)
        cum[0] = 0
        np.cumsum(b * _POW[:n], out=cum[1:])
        win = (cum[k:] - cum[: n - k + 1]) * _INV[: n - k + 1]
    return _mix(win)


def repeated_fraction(hashes: np.ndarray) -> float:
    """Fraction of shingles that repeat an earlier one: ~0.05 in ordinary reasoning, near 1 in a loop."""
    if len(hashes) < 2:
        return 0.0
    s = np.sort(hashes)
    distinct = 1 + int(np.count_nonzero(s[1:] != s[:-1]))
    return 1.0 - distinct / len(hashes)


def signature(hashes: np.ndarray) -> np.ndarray:
    """One-permutation MinHash signature (K uint64; EMPTY for bins no shingle fell in)."""
    sig = np.full(K, EMPTY, dtype=np.uint64)
    if len(hashes):
        bins = (hashes >> np.uint64(64 - 6)).astype(np.intp)
        np.minimum.at(sig, bins, hashes)
    return sig


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of row pairs of signatures (bins empty in both are left out)."""
    filled = (a != EMPTY) | (b != EMPTY)
    same = (a == b) & filled
    n = filled.sum(axis=-1)
    return np.where(n > 0, same.sum(axis=-1) / np.maximum(n, 1), 0.0)


def band_keys(sigs: np.ndarray, row_salt: np.ndarray | None = None) -> np.ndarray:
    """(rows, BANDS) uint64 keys; a band whose bins are all empty gets a key no other row shares. Rows with
    different `row_salt` never share a key (problems are compared only with problems of the same answer)."""
    rows = sigs.shape[0]
    r = K // BANDS
    keys = np.empty((rows, BANDS), dtype=np.uint64)
    base = np.zeros(rows, dtype=np.uint64) if row_salt is None else _mix(row_salt.astype(np.uint64))
    with np.errstate(over="ignore"):
        for j in range(BANDS):
            part = sigs[:, j * r : (j + 1) * r]
            h = base ^ np.uint64(j)
            for c in range(r):
                h = _mix(h ^ part[:, c])
            empty = (part == EMPTY).all(axis=1)
            keys[:, j] = np.where(empty, _mix(np.arange(rows, dtype=np.uint64) + np.uint64(1 << 40)) ^ np.uint64(j),
                                  h)
    return keys


def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def near_duplicates(sigs: np.ndarray, threshold: float, row_salt: np.ndarray | None = None) -> np.ndarray:
    """For signatures in row order: a boolean array, True where the row is a near-duplicate of an earlier row
    (directly or through a chain of near-duplicates)."""
    n = sigs.shape[0]
    dup = np.zeros(n, dtype=bool)
    if n < 2:
        return dup
    keys = band_keys(sigs, row_salt)
    parent = np.arange(n)
    for j in range(BANDS):
        col = keys[:, j]
        order = np.argsort(col, kind="stable")
        sc = col[order]
        same = np.flatnonzero(sc[1:] == sc[:-1]) + 1  # positions whose key equals the previous one
        if not len(same):
            continue
        # leader of each run: the first (lowest row, thanks to the stable sort) position of the run
        run_start = np.ones(n, dtype=bool)
        run_start[same] = False
        leader_pos = np.maximum.accumulate(np.where(run_start, np.arange(n), 0))
        members = order[same]
        leaders = order[leader_pos[same]]
        ok = jaccard(sigs[leaders], sigs[members]) >= threshold
        if row_salt is not None:
            ok &= row_salt[leaders] == row_salt[members]
        for a, b in zip(leaders[ok].tolist(), members[ok].tolist()):
            ra, rb = _find(parent, a), _find(parent, b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = parent.copy()
    while True:  # pointer jumping until every row points at its cluster's first row
        nxt = roots[roots]
        if np.array_equal(nxt, roots):
            break
        roots = nxt
    dup = roots != np.arange(n)
    return dup


def exact_duplicates(digests: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """True where a digest already appeared in an earlier row (of the same group, when `groups` is given)."""
    if len(digests) == 0:
        return np.zeros(0, dtype=bool)
    if groups is None:
        _, first = np.unique(digests, return_index=True)
    else:
        keys = np.stack([np.asarray(groups, dtype=np.uint64), np.asarray(digests, dtype=np.uint64)], axis=1)
        _, first = np.unique(keys, axis=0, return_index=True)
    dup = np.ones(len(digests), dtype=bool)
    dup[first] = False
    return dup
