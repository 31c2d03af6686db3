"""The stage graph, as data: what a stage is, and how a spec expands it into the directories a run builds.

A `Stage` names its inputs (other stages), what its fingerprint covers besides them, and the function that
builds it. A stage with `each` is built once per item of the spec (per student, per base model), as
`<group>/<item>`. `plan` expands a graph for one spec into `Node`s in run order; `distill run` builds them, the
run directory records them (`stages.json`), and status and the report read that record (or expand the same
graph) to list and order the stages. The pipeline's own graph is `distill.pipeline.stages.STAGES`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

PLAN_FILE = "stages.json"


def slug(name: str) -> str:
    """A model name as a directory name (`eval/base-<slug>`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def _nothing(ctx: Any, item: Any) -> list:
    return []


def _always(spec: dict) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    name: str
    build: Callable[[Any, Any, Path], dict | None]  # (run context, item, output directory) -> stats
    inputs: tuple[str, ...] = ()  # stages whose output it reads: their fingerprints are part of its own
    covers: Callable[[Any, Any], list] = _nothing  # (run context, item) -> the config its fingerprint covers
    each: Callable[[dict], list[str]] | None = None  # spec (a plain dict) -> items; None: built once
    key: Callable[[str], str] | None = None  # item -> directory; default `<name>/<item>`
    prefix: str | None = None  # what its directories start with (default `<name>/` when `each`, else the name)
    when: Callable[[dict], bool] = _always  # built at all for this spec (its fingerprint is taken either way)
    kind: str | None = None  # the fingerprint's kind; default the name

    def key_of(self, item: str | None) -> str:
        if self.each is None:
            return self.name
        return self.key(item) if self.key else f"{self.name}/{item}"

    def matches(self, key: str) -> bool:
        if self.each is None:
            return key == (self.prefix or self.name)
        return key.startswith(self.prefix or f"{self.name}/")


@dataclass
class Node:
    key: str
    stage: Stage
    item: str | None
    inputs: list[str] = field(default_factory=list)
    enabled: bool = True


def plan(stages: tuple[Stage, ...], spec: dict) -> list[Node]:
    """The graph expanded for `spec`, in run order. Consecutive stages with the same `each` run item by item
    (student a: train, eval, package; then student b), so each item's chain finishes before the next starts."""
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage graph: duplicate stage names in {names}")
    nodes: list[Node] = []
    by: dict[tuple[str, str | None], Node] = {}
    i = 0
    while i < len(stages):
        group = [stages[i]]
        while stages[i].each is not None and i + len(group) < len(stages) \
                and stages[i + len(group)].each is stages[i].each:
            group.append(stages[i + len(group)])
        items = list(dict.fromkeys(group[0].each(spec))) if group[0].each else [None]
        for item in items:
            for st in group:
                inputs = []
                for dep in st.inputs:
                    src = by.get((dep, item)) or by.get((dep, None))
                    if src is None:
                        raise ValueError(f"stage graph: stage '{st.name}' reads '{dep}', which is not before it")
                    inputs.append(src.key)
                node = Node(st.key_of(item), st, item, inputs, bool(st.when(spec)))
                nodes.append(node)
                by[(st.name, item)] = node
        i += len(group)
    return nodes


def rank(stages: tuple[Stage, ...], key: str) -> tuple[int, str]:
    """Sort key of a stage directory: its stage's place in the graph (unknown stages last), then the name."""
    return next((i for i, s in enumerate(stages) if s.matches(key)), len(stages)), key


def write_plan(root: Path, nodes: list[Node]) -> None:
    (root / PLAN_FILE).write_text(json.dumps(
        [{"key": n.key, "stage": n.stage.name, "inputs": n.inputs} for n in nodes if n.enabled], indent=1))


def read_plan(root: Path) -> list[str] | None:
    """The stage keys a run recorded when it started, or None (a run directory from before this file)."""
    try:
        return [n["key"] for n in json.loads((root / PLAN_FILE).read_text())]
    except (OSError, ValueError, TypeError, KeyError):
        return None


def found(stages: tuple[Stage, ...], root: Path) -> list[str]:
    """Stage directories present on disk (hidden temporary `.<name>.tmp-*` directories are not stages)."""
    keys = []
    for st in stages:
        if st.each is None:
            if (root / st.name).is_dir():
                keys.append(st.name)
            continue
        group, _, start = (st.prefix or f"{st.name}/").partition("/")
        if (root / group).is_dir():
            keys += [f"{group}/{p.name}" for p in sorted((root / group).iterdir())
                     if p.is_dir() and not p.name.startswith(".") and p.name.startswith(start)]
    return list(dict.fromkeys(keys))  # eval/base-x is under both eval-base and eval: listed once


def expected(stages: tuple[Stage, ...], root: Path, spec: dict) -> list[str]:
    """The stage keys of a run: as it recorded them, else as its spec expands, then whatever else is on disk."""
    keys = read_plan(root)
    if keys is None:
        keys = [n.key for n in plan(stages, spec) if n.enabled]
    return list(dict.fromkeys(keys + found(stages, root)))
