"""Rows of a prompt source: a `datasets_spec/` entry (a source, or a mixture of sources) or a local file, mapped
to {source, domain, problem, answer (the normalised reference), answer_format}. A library layer: the prompts
stage, evaluation's benchmarks and the verifier's decontamination all read sources through it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

from distill import catalog
from distill.spec import Source
from distill.verify.extract import reference_answer


def _entry_rows(entry: catalog.SourceEntry, limit: int | None) -> Iterator[dict]:
    rows = catalog.read_rows(path=entry.loader.path, hf=entry.loader.hf, config=entry.loader.config,
                             split=entry.loader.split)
    yield from _mapped(rows, entry.name, entry.fields, entry.answer_format, entry.domain, limit)


def _mapped(rows, name, fields, fmt, domain, limit) -> Iterator[dict]:
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            return
        try:
            problem = catalog.pick(row, fields["problem"])
            raw = catalog.pick(row, fields["answer"]) if fmt != "none" else None
        except (KeyError, IndexError, TypeError) as e:
            raise ValueError(f"source '{name}' row {i}: missing field {e} (fields: {fields})") from None
        yield {"source": name, "domain": domain, "problem": str(problem).strip(),
               "answer": reference_answer(raw, fmt), "answer_format": fmt}


def source_rows(src: Source) -> Iterator[dict]:
    if src.path is not None:
        rows = catalog.read_rows(path=src.path)
        yield from _mapped(rows, Path(src.path).stem, src.fields, src.answer_format, src.domain, src.limit)
        return
    entry = catalog.get(src.dataset)
    if isinstance(entry, catalog.SourceEntry):
        yield from _entry_rows(entry, src.limit)
        return
    total = sum(p.count for p in entry.sources)
    scale = 1.0 if src.limit is None else min(1.0, src.limit / total)
    for part in entry.sources:
        sub = catalog.get(part.source)
        yield from _entry_rows(sub, max(1, math.floor(part.count * scale)))
