"""The `datasets_spec/` catalog: declarative YAML entries for problem sources and mixtures of them.

A source says where problems come from (an HF `datasets` id or a local file), which columns hold the problem
and the reference answer, how the reference is written (GSM8K `#### N`, a `\\boxed{}` in a worked solution,
a plain value, or none), its domain and licence. A mixture names sources with a count each.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

AnswerFormat = Literal["gsm8k", "boxed", "plain", "none", "code"]  # code: JSON test cases (distill.verify.code)

# `distill/datasets_spec` is a symlink to the checkout's top-level `datasets_spec/`, and the same files are
# package data in a wheel (pyproject.toml), so the catalog is found from a checkout and from an install alike.
CATALOG_DIR = (Path(__file__).parent / "datasets_spec").resolve()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Loader(_Strict):
    hf: str | None = Field(None, description="HF datasets id")
    config: str | None = None
    split: str = "train"
    path: str | None = Field(None, description="local .jsonl/.parquet, relative to datasets_spec/")

    @model_validator(mode="after")
    def _one_of(self) -> Loader:
        if (self.hf is None) == (self.path is None):
            raise ValueError("loader needs exactly one of 'hf' or 'path'")
        return self


class SourceEntry(_Strict):
    kind: Literal["source"]
    name: str
    loader: Loader
    fields: dict[str, str]
    answer_format: AnswerFormat
    domain: str
    licence: str
    description: str | None = None


class MixturePart(_Strict):
    source: str
    count: int = Field(ge=1)


class MixtureEntry(_Strict):
    kind: Literal["mixture"]
    name: str
    sources: list[MixturePart] = Field(min_length=1)
    description: str | None = None


def _dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("DISTILL_DATASETS_SPEC", "").split(os.pathsep) if p]
    return extra + [CATALOG_DIR]


@lru_cache(maxsize=None)
def _load(name: str) -> SourceEntry | MixtureEntry:
    for d in _dirs():
        f = d / f"{name}.yaml"
        if f.exists():
            data = yaml.safe_load(f.read_text())
            entry = (MixtureEntry if data.get("kind") == "mixture" else SourceEntry).model_validate(data)
            if isinstance(entry, SourceEntry) and entry.loader.path:
                entry.loader.path = str((d / entry.loader.path).resolve())
            return entry
    raise ValueError(f"unknown dataset '{name}' (known: {', '.join(names())})")


def get(name: str) -> SourceEntry | MixtureEntry:
    return _load(name)


def names() -> list[str]:
    return sorted({f.stem for d in _dirs() if d.exists() for f in d.glob("*.yaml")})


def pick(row: dict[str, Any], column: str) -> Any:
    """Read a column, allowing paths such as `messages[0].content` into nested rows."""
    value: Any = row
    for part in column.replace("]", "").replace("[", ".").split("."):
        if part == "":
            continue
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def read_rows(path: str | None = None, hf: str | None = None, config: str | None = None,
              split: str = "train") -> Iterator[dict[str, Any]]:
    """Rows of a local JSONL/Parquet file or an HF dataset, streamed so a large source is never all in memory."""
    import datasets

    if path is not None:
        kind = "parquet" if path.endswith(".parquet") else "json"
        ds = datasets.load_dataset(kind, data_files=path, split="train", streaming=True)
    else:
        ds = datasets.load_dataset(hf, config, split=split, streaming=True)
    yield from ds
