"""Per-domain targets of kept traces (`filter.domain_targets`): the mix the spec asks for, held after
verification.

R1's distillation data is ~600k reasoning and ~200k non-reasoning samples; prompts drawn in that ratio do not
keep it, since the verifier drops a share of each domain and the teacher writes n samples per prompt. With
targets, at most `target` traces of a domain are kept (the rest: `over_domain_target`), chosen deterministically
and spread over the domain's problems: every problem's first kept trace before any problem's second, each round
in row order (the prompts' order, shuffled by `prompts.shuffle_seed`). A domain with fewer kept traces than its
target keeps them all and is reported short. Domains without a target are not capped.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

REASON = "over_domain_target"


class DomainTargets:
    """Notes each row's domain while pass 1 reads the batches (`note`), then holds the targets over the kept
    masks (`hold`). Domains are kept as small integer codes, so 800k rows cost a few MB."""

    def __init__(self, targets: dict[str, int]):
        self.targets = dict(targets)
        self.codes: dict[str, int] = {}
        self.batches: list[np.ndarray] = []

    def note(self, batches: Iterator[dict]) -> Iterator[dict]:
        for cols in batches:
            n = len(cols["response"])
            domains = cols.get("domain") or [None] * n
            self.batches.append(np.fromiter((self.codes.setdefault(d or "", len(self.codes)) for d in domains),
                                            dtype=np.int32, count=n))
            yield cols

    def hold(self, kept: list[np.ndarray], problem_of: list[np.ndarray], reasons: list[list]) -> tuple[dict, np.ndarray]:
        """Unkeep (in place: `kept` masks and `reasons` lists, per batch) what is over a target. Returns the report
        {domain: {target, kept, short, over}} and the problem index of every unkept row."""
        rows = [np.flatnonzero(k) for k in kept]
        batch = np.concatenate([np.full(len(r), b, dtype=np.int64) for b, r in enumerate(rows)] or [np.empty(0, int)])
        index = np.concatenate(rows or [np.empty(0, int)])
        domain = np.concatenate([d[r] for d, r in zip(self.batches, rows)] or [np.empty(0, np.int32)])
        problem = np.concatenate([p[r] for p, r in zip(problem_of, rows)] or [np.empty(0, int)])
        rank = _rank_within(problem)
        report, dropped = {}, []
        for name, target in self.targets.items():
            code = self.codes.get(name)
            cand = np.flatnonzero(domain == code) if code is not None else np.empty(0, dtype=np.int64)
            order = cand[np.lexsort((cand, rank[cand]))]  # by (rank within its problem, row order)
            over = order[target:]
            for j in over.tolist():
                kept[batch[j]][index[j]] = False
                reasons[batch[j]][index[j]] = REASON
            dropped.append(problem[over])
            report[name] = {"target": target, "kept": int(min(len(cand), target)),
                            "short": int(max(0, target - len(cand))), "over": int(len(over))}
        return report, np.concatenate(dropped or [np.empty(0, int)]).astype(np.int64)


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """For each element, how many earlier elements share its group (0 for a group's first)."""
    if not len(groups):
        return np.empty(0, dtype=np.int64)
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    starts = np.r_[0, np.flatnonzero(sorted_groups[1:] != sorted_groups[:-1]) + 1]
    first = np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    rank = np.empty(len(groups), dtype=np.int64)
    rank[order] = np.arange(len(groups)) - first
    return rank
