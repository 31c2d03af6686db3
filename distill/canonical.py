"""One JSON form per value, for fingerprints and hashes: a number is the same number however it was written.

A spec's defaults are not re-validated by pydantic (`num_gpus` defaults to the int 0, `timeout_s` to 600), but the
same spec written to `spec.yaml` and read back has them as floats (0.0, 600.0). Hashed as JSON, "600" and "600.0"
differ, so a resumed run would not find its generate shards or its stage markers. Whole floats are hashed as ints.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical(value: Any) -> Any:
    """`value` with every whole float (600.0) as an int (600), in dicts, lists and tuples at any depth."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def digest(value: Any) -> str:
    """16 hex digits of sha256 over the canonical JSON (sorted keys; `str` of anything JSON has no form for)."""
    return hashlib.sha256(json.dumps(canonical(value), sort_keys=True, default=str).encode()).hexdigest()[:16]
