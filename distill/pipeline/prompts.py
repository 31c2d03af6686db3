"""Stage 1, prompts: turn the spec's sources into one table of problems with checkable reference answers.

Writes `prompts.parquet`:
  problem_id (str, `<source>-<sha1 of problem>`, stable across runs), source, domain, problem,
  answer (the normalised reference; "" when the source has none), answer_format, prompt (the user message).
Exact duplicate problems are dropped here (counted as `duplicate_problem`): the same problem twice would
only buy the teacher the same work twice.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from distill import catalog
from distill.spec import Prompts, Source
from distill.verify import reference_answer

SCHEMA = pa.schema([
    ("problem_id", pa.string()), ("source", pa.string()), ("domain", pa.string()), ("problem", pa.string()),
    ("answer", pa.string()), ("answer_format", pa.string()), ("prompt", pa.string()),
])


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


def build_prompts(spec: Prompts, out_dir: Path) -> dict:
    seen: set[str] = set()
    counts: Counter = Counter()
    rows = []
    for src in spec.sources:
        for row in source_rows(src):
            if not row["problem"]:
                counts["empty_problem"] += 1
                continue
            digest = hashlib.sha1(row["problem"].encode()).hexdigest()[:12]
            if digest in seen:
                counts["duplicate_problem"] += 1
                continue
            seen.add(digest)
            row["problem_id"] = f"{row['source']}-{digest}"
            row["prompt"] = spec.template.replace("{problem}", row["problem"])
            rows.append(row)
            counts[row["source"]] += 1
    if not rows:
        raise ValueError("prompts: the sources produced no problems")
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), out_dir / "prompts.parquet")
    return {"problems": len(rows), "by_source_or_drop": dict(counts)}
