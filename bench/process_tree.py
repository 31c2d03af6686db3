"""The process tree the memory samplers of bench/scale.py and bench/filter_scale.py add up: a process and all its
descendants (pool workers, tokeniser workers, Ray workers started below it)."""

from __future__ import annotations


def tree(proc) -> list:
    """`proc` (a psutil.Process) and its living descendants; just `proc` when they cannot be listed."""
    import psutil

    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return [proc]
