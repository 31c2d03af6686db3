"""The run spec: one YAML file, validated by pydantic, that says everything a run does.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored knob. Input paths are
relative to the spec file; `output_dir` is relative to the current directory. `load_spec` turns every
validation failure into one line naming the field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from distill import catalog

DEFAULT_TEMPLATE = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{}."


class SpecError(ValueError):
    """A spec that cannot run. str() is one line per problem, each naming the field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def _existing(path: str, info: ValidationInfo) -> str:
    base = (info.context or {}).get("base_dir")
    p = Path(path)
    if base is not None and not p.is_absolute():
        p = Path(base) / p
    if not p.exists():
        raise ValueError(f"file not found: {path}")
    return str(p.resolve())


class Teacher(Strict):
    model: str = Field(description="HF hub id, local directory, or the built-in alias 'smollm2-135m'")
    backend: Literal["vllm"] = "vllm"
    engine: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for vllm.LLM")
    replicas: int = Field(1, ge=1, description="data-parallel engine copies (Ray actors)")
    num_gpus: float = Field(0, ge=0, description="GPUs per replica; 0 runs the CPU build")
    num_cpus: float = Field(1, gt=0, description="CPUs reserved per replica")
    batch_size: int = Field(64, ge=1, description="prompts handed to one engine call")
    system_prompt: str | None = None


class Source(Strict):
    """One place prompts come from: a datasets_spec entry (source or mixture), or a local file."""

    dataset: str | None = Field(None, description="name of a datasets_spec/ entry")
    path: str | None = Field(None, description="local .jsonl or .parquet file")
    fields: dict[str, str] = Field(default_factory=dict, description="problem/answer -> column in the file")
    answer_format: catalog.AnswerFormat = "plain"
    domain: str = "math"
    limit: int | None = Field(None, ge=1, description="take at most this many problems")

    @field_validator("path")
    @classmethod
    def _path_exists(cls, v: str | None, info: ValidationInfo) -> str | None:
        return None if v is None else _existing(v, info)

    @field_validator("dataset")
    @classmethod
    def _dataset_known(cls, v: str | None) -> str | None:
        if v is not None:
            catalog.get(v)  # raises with the list of known names
        return v

    @model_validator(mode="after")
    def _one_of(self) -> Source:
        if (self.dataset is None) == (self.path is None):
            raise ValueError("give exactly one of 'dataset' or 'path'")
        if self.path is not None and "problem" not in self.fields:
            self.fields = {"problem": "problem", "answer": "answer", **self.fields}
        return self


class Prompts(Strict):
    sources: list[Source] = Field(min_length=1)
    template: str = Field(DEFAULT_TEMPLATE, description="user message; {problem} is replaced")
    shuffle_seed: int = 0

    @field_validator("template")
    @classmethod
    def _has_slot(cls, v: str) -> str:
        if "{problem}" not in v:
            raise ValueError("template must contain {problem}")
        return v


class Sampling(Strict):
    n: int = Field(1, ge=1, description="samples per problem")
    temperature: float = Field(0.6, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1)


class Filter(Strict):
    drop_truncated: bool = Field(True, description="drop traces that hit max_tokens (finish reason 'length')")
    keep_unreferenced: bool = Field(True, description="keep traces of problems with no reference answer")
    max_per_problem: int | None = Field(None, ge=1, description="cap kept traces per problem")


class Lora(Strict):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class Student(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    base: str = Field(description="HF hub id, local directory, or 'smollm2-135m'")
    method: Literal["lora", "full"] = "lora"
    lora: Lora = Field(default_factory=Lora)
    epochs: float = Field(1, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int = Field(4096, ge=16, description="tokens per training example")
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    bf16: bool = False


class Benchmark(Strict):
    name: str
    problems: int | None = Field(None, ge=1, description="first N problems; all when unset")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        catalog.get(v)
        return v


class Eval(Strict):
    benchmarks: list[Benchmark] = Field(default_factory=list)
    k: int = Field(1, ge=1, description="samples per problem; pass@1 is averaged over them")
    temperature: float = Field(0.6, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1)
    include_base: bool = Field(True, description="also score each student's base model")

    @field_validator("benchmarks", mode="before")
    @classmethod
    def _names_ok(cls, v: Any) -> Any:
        return [{"name": b} if isinstance(b, str) else b for b in v]


class Spec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    output_dir: str = Field(description="run directory; each stage writes a sub-directory")
    seed: int = 0
    ray_address: str | None = Field(None, description="Ray cluster; unset starts an embedded local Ray")
    teacher: Teacher
    prompts: Prompts
    sampling: Sampling = Field(default_factory=Sampling)
    filter: Filter = Field(default_factory=Filter)
    students: list[Student] = Field(min_length=1)
    eval: Eval = Field(default_factory=Eval)

    @model_validator(mode="after")
    def _unique_students(self) -> Spec:
        names = [s.name for s in self.students]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"students: duplicate name(s) {sorted(dup)}")
        return self

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:16]


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "spec"


def parse_spec(data: Any, base_dir: str | Path = ".") -> Spec:
    try:
        return Spec.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as e:
        lines = []
        for err in e.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            lines.append(f"{_field_path(err['loc'])}: {msg}")
        raise SpecError("\n".join(lines)) from None


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    if not path.exists():
        raise SpecError(f"spec: file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpecError(f"spec: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise SpecError("spec: the top level must be a mapping")
    spec = parse_spec(data, base_dir=path.parent)
    # Inputs are found next to the spec; the output goes where the user runs it from, like any build tool.
    spec.output_dir = str(Path(spec.output_dir).resolve())
    return spec
