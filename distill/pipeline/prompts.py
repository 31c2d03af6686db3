"""Stage 1, prompts: turn the spec's sources into one table of problems with checkable reference answers.

Writes `prompts.parquet`:
  problem_id (str, `<source>-<sha1 of problem>`, stable across runs), source, domain, problem,
  answer (the normalised reference; "" when the source has none), answer_format, prompt (the user message).
Rows are in an order shuffled by `shuffle_seed`, and non-reasoning sources get their own template
(`distill/mixture.py`). Exact duplicate problems are dropped here (counted as `duplicate_problem`): the same
problem twice would only buy the teacher the same work twice. Rows are written a batch at a time
(`distill.streaming`): only the 12-character digests of the problems seen stay in memory.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

from distill import schemas
from distill.mixture import prompt_text, shuffle_prompts
from distill.streaming import RowWriter
from distill.sources import source_rows
from distill.spec import Prompts

def build_prompts(spec: Prompts, out_dir: Path) -> dict:
    seen: set[str] = set()
    counts: Counter = Counter()
    path = out_dir / "prompts.parquet"
    out = RowWriter(path, schemas.PROMPTS)
    try:
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
                row["prompt"] = prompt_text(row["problem"], row["answer_format"], spec)
                out.add(row)
                counts[row["source"]] += 1
        out.close()
        if not out.written:
            raise ValueError("prompts: the sources produced no problems")
        shuffle_prompts(path, spec.shuffle_seed)
    except BaseException:
        out.abort()
        raise
    return {"problems": out.written, "by_source_or_drop": dict(counts)}
