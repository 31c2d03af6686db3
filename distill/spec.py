"""The run spec: one YAML file, validated by pydantic, that says everything a run does.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored knob. Input paths are
relative to the spec file; `output_dir` is relative to the current directory. `load_spec` turns every
validation failure into one line naming the field.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from distill import canonical, catalog

DEFAULT_TEMPLATE = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{}."
# Non-reasoning prompts (sources with no checkable answer: chat, writing) are asked as they are: no \boxed{}
# instruction, which has no meaning for a haiku.
NON_REASONING_TEMPLATE = "{problem}"


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


class ChatTurn(Strict):
    """One worked example shown to the teacher before the problem: a user turn and the answer it should imitate."""

    user: str = Field(description="the example problem, worded as the run's prompts are")
    assistant: str = Field(description="the answer in the style wanted (steps, then \\boxed{...})")


class _TeacherCommon(Strict):
    """What every teacher backend has. Each backend adds only its own fields (one config class per backend, as
    `ray.data.llm` has one per engine), chosen by `backend`."""

    model: str = Field(description="HF hub id, local directory, or the built-in alias 'smollm2-135m'; for the "
                                   "'openai' backend the model name the endpoint serves")
    system_prompt: str | None = None
    # Few-shot: small instruct models follow demonstrations far better than instructions (SmolLM2-135M with
    # three example turns answers in the shown format on every problem; with the same text as a system prompt
    # it rambles). The student never sees them: its SFT example is the plain prompt and the verified trace.
    examples: list[ChatTurn] = Field(default_factory=list, description="worked examples shown to the teacher "
                                                                      "as earlier chat turns (few-shot)")
    batch_size: int = Field(64, ge=1, description="prompts handed to one engine call")
    # Sharding: prompts are processed in shards of this many problems; each shard's traces are committed
    # atomically, and a re-run after a crash only generates the shards that are missing. Unset: batch_size.
    shard_size: int | None = Field(None, ge=1, description="problems per committed shard (default batch_size)")
    max_shard_attempts: int = Field(3, ge=1, description="tries per shard when its engine worker dies")


class VLLMTeacher(_TeacherCommon):
    """vLLM's offline engine in Ray actors (`distill.teachers.vllm`); the default backend."""

    backend: Literal["vllm"] = Field("vllm", description="'vllm': offline engines in Ray actors")
    engine: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for vllm.LLM")
    replicas: int = Field(1, ge=1, description="data-parallel engine copies (Ray actors)")
    num_gpus: float = Field(0, ge=0, description="GPUs per replica; 0 runs the CPU build")
    num_cpus: float = Field(1, gt=0, description="CPUs reserved per replica")
    # The driver never waits on an engine without a deadline: a shard still unfinished this long after its
    # worker's engine took it, or an engine not up this long after its worker started, gets the worker killed
    # and its shards retried (`max_shard_attempts`). Generous by default: a shard of R1-length traces shares its
    # engine with the other shards in flight and can take an hour on a large teacher; loading a 671B teacher
    # takes tens of minutes.
    shard_timeout_s: float = Field(7200, gt=0, description="seconds a shard may take in its engine before the "
                                                          "engine worker is killed and the shard retried")
    engine_start_timeout_s: float = Field(3600, gt=0, description="seconds an engine may take to start before "
                                                                 "its worker is killed (and replaced)")


class OpenAITeacher(_TeacherCommon):
    """An OpenAI-compatible endpoint (vLLM/SGLang servers, hosted APIs; `distill.teachers.openai`). The key is
    read from the environment variable named here; its value is never logged or written anywhere."""

    backend: Literal["openai"] = Field(description="'openai': an OpenAI-compatible HTTP endpoint")
    base_url: str = Field(description="endpoint root, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field(None, description="name of the environment variable holding the API key")
    concurrency: int = Field(16, ge=1, description="requests in flight at once")
    timeout_s: float = Field(600, gt=0, description="per-request timeout in seconds")
    max_retries: int = Field(5, ge=0, description="retries on 429/5xx/timeouts/malformed replies")
    backoff_s: float = Field(1.0, gt=0, description="first retry delay; doubles per retry, with jitter")
    max_backoff_s: float = Field(60.0, gt=0, description="cap on one retry delay (Retry-After is honoured)")
    send_seed: bool = Field(False, description="send a per-request seed (seed + sample index); off because "
                                               "the vLLM CPU build crashes on per-request seeds")


TEACHERS: dict[str, type[_TeacherCommon]] = {"vllm": VLLMTeacher, "openai": OpenAITeacher}


def _teacher_backend(value: Any) -> str | None:
    """The tag of a teacher: its `backend`, `vllm` when left out (specs written before there was a choice)."""
    if isinstance(value, dict):
        return value.get("backend", "vllm")
    return getattr(value, "backend", None)


Teacher = Annotated[Union[Annotated[VLLMTeacher, Tag("vllm")], Annotated[OpenAITeacher, Tag("openai")]],
                    Discriminator(_teacher_backend)]


# Teacher fields that say how fast or where traces are made, never what they say: changing one keeps committed
# generate shards and finished stages. (`shard_size` is the layout of a shard set; a resumed set keeps its own.
# The CPU build has no per-request seeds, so there batching changes which random numbers a trace draws: a sample
# of the same distribution, not a different trace content.)
THROUGHPUT_FIELDS = frozenset({"batch_size", "shard_size", "max_shard_attempts", "replicas", "num_cpus", "concurrency",
                               "timeout_s", "max_retries", "backoff_s", "max_backoff_s", "api_key_env",
                               "shard_timeout_s", "engine_start_timeout_s"})
# Throughput fields added after shard keys were first written: left out of fingerprints altogether (not even at
# their defaults, as the older knobs are), so adding them kept every existing run's keys.
UNFINGERPRINTED_FIELDS = frozenset({"shard_timeout_s", "engine_start_timeout_s"})
# vLLM engine settings that change speed, memory or parallelism but not the tokens sampled. Any other key (dtype,
# max_model_len, quantization, tokenizer, ...) is taken to change outputs: a key missing here costs a re-run, never a
# wrong reuse.
THROUGHPUT_ENGINE_KEYS = frozenset({
    "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "distributed_executor_backend",
    "gpu_memory_utilization", "kv_cache_memory_bytes", "swap_space", "cpu_offload_gb", "max_num_seqs",
    "max_num_batched_tokens", "enable_chunked_prefill", "enable_prefix_caching", "enforce_eager",
    "max_seq_len_to_capture", "compilation_config", "disable_log_stats", "disable_custom_all_reduce", "block_size",
    "async_scheduling"})


def engine_content(engine: dict[str, Any]) -> dict[str, Any]:
    """The engine settings that change what a model writes (`THROUGHPUT_ENGINE_KEYS` left out)."""
    return {k: v for k, v in engine.items() if k not in THROUGHPUT_ENGINE_KEYS}


def prompts_content(prompts: "Prompts") -> dict:
    """What the prompts stage's fingerprint covers: the prompts fields, the non-reasoning template only when it is
    not the default (so specs written before it existed keep their fingerprints)."""
    out = prompts.model_dump()
    if out["non_reasoning_template"] == NON_REASONING_TEMPLATE:
        del out["non_reasoning_template"]
    return out


def filter_content(f: "Filter") -> dict:
    """What the verify stage's fingerprint covers: the filter but its throughput knob (`workers`: where and how
    fast traces are judged, never the verdict), `domain_targets` only when set (old specs keep their
    fingerprints)."""
    out = f.model_dump(exclude={"workers"})
    if out["domain_targets"] is None:
        del out["domain_targets"]
    return out


def teacher_fingerprint(teacher: VLLMTeacher | OpenAITeacher) -> dict:
    """What decides a trace's content, for shard keys and the generate stage's fingerprint: the teacher as
    fingerprints have always seen it (every field of every backend, the other backends' at their defaults), with
    every throughput knob (`THROUGHPUT_FIELDS`, `THROUGHPUT_ENGINE_KEYS`) held at its default, so changing one
    keeps committed work, and runs made with default knobs keep their fingerprints."""
    fields = {name: (None if f.is_required() else f.get_default(call_default_factory=True))
              for cls in TEACHERS.values() for name, f in cls.model_fields.items()
              if name not in UNFINGERPRINTED_FIELDS}
    content = {k: v for k, v in teacher.model_dump().items() if k not in THROUGHPUT_FIELDS}
    if isinstance(teacher, VLLMTeacher):
        content["engine"] = engine_content(teacher.engine)
        # The device kind (CPU build or GPUs: other defaults, e.g. float32 on CPU), not the count; 0 and 1 as
        # they were written, so GPU runs made with num_gpus 1 keep their fingerprints.
        content["num_gpus"] = teacher.num_gpus if teacher.num_gpus in (0, 1) else 1.0
    merged = {**fields, **content}
    if not merged["examples"]:
        del merged["examples"]  # a run without few-shot turns keeps the fingerprint it had before they existed
    return merged


class Source(Strict):
    """One place prompts come from: a datasets_spec entry (source or mixture), or a local file."""

    dataset: str | None = Field(None, description="name of a datasets_spec/ entry")
    path: str | None = Field(None, description="local .jsonl or .parquet file")
    fields: dict[str, str] = Field(default_factory=dict, description="problem/answer -> column in the file")
    answer_format: catalog.AnswerFormat = "plain"
    domain: str = "math"
    limit: int | None = Field(None, ge=1, description="take at most this many problems")

    def domains(self) -> set[str]:
        """The domains this source's rows carry: a file's own `domain`, a catalog source's, a mixture's parts'."""
        if self.dataset is None:
            return {self.domain}
        entry = catalog.get(self.dataset)
        if isinstance(entry, catalog.SourceEntry):
            return {entry.domain}
        return {catalog.get(part.source).domain for part in entry.sources}

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
    non_reasoning_template: str = Field(NON_REASONING_TEMPLATE, description="user message of a non-reasoning "
                                        "prompt (a source with answer_format none); {problem} is replaced")
    shuffle_seed: int = Field(0, description="the prompts are written in an order shuffled by this seed (the same "
                              "seed, the same order), so every domain of a mix is spread over the generate shards")

    @field_validator("template", "non_reasoning_template")
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
    # Adaptive sampling: verify traces as they arrive and keep sampling a problem only while it has fewer than
    # `until_verified` correct traces and fewer than `max_samples` samples. `n` is then ignored. Problems
    # without a reference answer get exactly one sample.
    until_verified: int | None = Field(None, ge=1, description="stop sampling a problem at this many verified traces")
    max_samples: int | None = Field(None, ge=1, description="sample budget per problem with until_verified")

    @model_validator(mode="after")
    def _adaptive(self) -> Sampling:
        if self.until_verified is not None:
            self.max_samples = self.max_samples or max(self.n, self.until_verified)
            if self.max_samples < self.until_verified:
                raise ValueError("max_samples must be >= until_verified")
        elif self.max_samples is not None:
            raise ValueError("max_samples needs until_verified")
        return self


class Prices(Strict):
    """Prices for the cost ledger; each optional (0 = free). Same shape `distill/report/data.py` reads."""

    currency: str = "USD"
    accelerator_hour: float = Field(0.0, ge=0, description="per accelerator (GPU) hour")
    prompt_tokens_per_million: float = Field(0.0, ge=0, description="teacher input tokens (an API teacher)")
    completion_tokens_per_million: float = Field(0.0, ge=0, description="teacher output tokens")


class Filter(Strict):
    """The verify & filter stage (distill/verify/): every knob below names the funnel reason it drives."""

    drop_truncated: bool = Field(True, description="drop traces that hit max_tokens (finish reason 'length')")
    keep_unreferenced: bool = Field(True, description="keep traces of problems with no reference answer")
    max_per_problem: int | None = Field(None, ge=1, description="cap kept traces per problem")
    # trace filters
    require_think: bool = Field(False, description="drop traces with no '</think>' (missing_think); for "
                                "R1-style teachers. An unclosed '<think>' is always dropped (unclosed_think)")
    min_chars: int = Field(0, ge=0, description="drop shorter responses (too_short)")
    max_chars: int | None = Field(None, ge=1, description="drop longer responses (too_long)")
    max_repetition: float = Field(0.5, gt=0, le=1, description="drop a trace when more than this share of the "
                                  "32-character shingles of its last 4,000 characters repeat (repetition); 1: off")
    language_mixing: bool = Field(True, description="drop traces that mix scripts/languages (language_mixing)")
    max_foreign_chars: int = Field(5, ge=1, description="letters of another script that count as mixing")
    # dedup and decontamination
    dedup_problems: bool = Field(True, description="drop traces of duplicate / near-duplicate problems (same "
                                 "reference answer) after the first such problem")
    dedup_traces: bool = Field(True, description="drop exact and near-duplicate traces after the first")
    dedup_traces_scope: Literal["problem", "global"] = Field("problem", description="compare traces within "
                                                             "their problem, or across all problems")
    near_duplicate_threshold: float = Field(0.8, gt=0, le=1, description="estimated Jaccard similarity (MinHash "
                                            "of character shingles) from which texts are near-duplicates; 1: exact only")
    decontaminate: bool = Field(True, description="drop problems sharing an n-gram with an evaluated benchmark")
    decontam_ngram: int = Field(8, ge=1, description="n of the n-gram overlap (open-r1 uses 8)")
    # verifier limits (math-verify runs in killable worker processes; code in a sandbox)
    verify_timeout_s: float = Field(5.0, gt=0, description="wall-clock limit per answer comparison")
    verify_memory_mb: int = Field(1024, ge=64, description="memory limit of a checker process")
    code_timeout_s: float = Field(10.0, gt=0, description="CPU-time limit of a code answer's run (wall: +2 s)")
    code_memory_mb: int = Field(512, ge=32, description="memory limit of a code answer's process")
    # where the judging runs: a throughput knob, left out of the stage's fingerprint (`filter_content`)
    workers: int | None = Field(None, ge=1, description="processes judging traces on the driver's machine; unset: "
                                "all its cores. Attached to a Ray cluster of several nodes, the stage spreads its "
                                "batches over the cluster as Ray tasks instead (distill/verify/distributed.py)")
    # the mix: held after verification, so changing a target re-runs verify, never generation
    domain_targets: dict[str, Annotated[int, Field(ge=1)]] | None = Field(
        None, description="kept traces per domain, e.g. {math: 600000, chat: 200000} (R1's mix): at most this "
        "many are kept per domain, spread over its problems (over_domain_target); a domain short of its target is "
        "reported in the funnel")

    def judge_workers(self) -> int:
        """Processes that judge answers (verify and eval): `workers`, else every core this process may use."""
        from distill.cluster import local_cores

        return self.workers or local_cores()


def _require_package(module: str, field: str, package: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ValueError(f"{field} needs the {package} package, which is not installed "
                         f"(pip install 'distill[{package}]')")


# Student fields added after runs existed: left out of the train stage's fingerprint while at their default, so a
# run made before them keeps its trained students.
# (on-policy distillation's fields likewise: SFT students of runs made before them keep their train stages)
LATER_STUDENT_DEFAULTS = {"deepspeed": None, "use_liger_kernel": False,
                          "training": "sft", "init_from": None, "on_policy": None}


def student_fingerprint(student: "Student") -> dict:
    """What the train stage's fingerprint covers of a student: every field, those added later only when set."""
    return {k: v for k, v in student.model_dump().items()
            if not (k in LATER_STUDENT_DEFAULTS and v == LATER_STUDENT_DEFAULTS[k])}


class Lora(Strict):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class OnPolicy(Strict):
    """On-policy distillation (`distill.training.on_policy`): the student samples completions of the run's prompts
    on a vLLM engine, the teacher's vLLM engine scores those same tokens (`prompt_logprobs`), and TRL's
    distillation loss pulls the student towards the teacher token by token. Field names are TRL's
    (`DistillationConfig`, `ServerDistillationConfig`) where TRL has one."""

    teacher: str | None = Field(None, description="name of an earlier SFT student of this run whose trained weights "
                                "score the student's tokens; unset: the run's teacher (backend vllm)")
    beta: float = Field(1.0, ge=0, le=1, description="TRL's beta: 1 reverse KL (the default), 0 forward KL, in "
                        "between the generalized JSD mixing both")
    loss_top_k: int = Field(1, ge=1, description="TRL's loss_top_k: teacher tokens the divergence covers; must be "
                            "1 when beta > 0 (the teacher engine scores the sampled token and its top-1)")
    max_completion_length: int = Field(256, ge=1, description="new tokens per student rollout")
    heldout_prompts: int = Field(8, ge=0, description="last prompts of the run kept out of training: the reverse "
                                 "KL to the teacher on them is measured before and after training")
    engine: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for the student's "
                                   "and teacher's vllm.LLM (CPU build: distill's CPU defaults under them)")

    @model_validator(mode="after")
    def _trl_top_k(self) -> "OnPolicy":
        if self.beta > 0 and self.loss_top_k != 1:
            raise ValueError("loss_top_k must be 1 when beta > 0 (TRL scores reverse and mixed KL on the sampled "
                             "token and the teacher's top-1)")
        return self


class Student(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    base: str = Field(description="HF hub id, local directory, or 'smollm2-135m'")
    method: Literal["lora", "full"] = "lora"
    training: Literal["sft", "on_policy"] = Field("sft", description="sft: TRL's SFTTrainer on the verified traces; "
                                                  "on_policy: on-policy distillation from the teacher's token "
                                                  "log-probabilities (see `on_policy`)")
    init_from: str | None = Field(None, description="on_policy only: an earlier SFT student of this run whose "
                                  "trained weights this student starts from (same base)")
    on_policy: OnPolicy | None = Field(None, description="on_policy settings; defaults when training is on_policy")
    lora: Lora = Field(default_factory=Lora)
    epochs: float = Field(1, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(4, ge=1, description="examples per optimizer step and device, packed or not")
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int = Field(4096, ge=16, description="tokens per training example")
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    bf16: bool = False
    packing: bool = Field(True, description="best-fit-decreasing packing, padding-free: no compute spent on pad")
    gradient_checkpointing: bool = Field(False, description="trade compute for memory on long traces")
    workers: int = Field(1, ge=1, description=">1: Ray Train TorchTrainer, one process per worker (DDP)")
    fsdp: bool = Field(False, description="with workers > 1: shard parameters with FSDP instead of DDP")
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(0, ge=0)
    save_steps: int = Field(50, ge=1, description="checkpoint every N steps into the run directory; a re-run after "
                            "a crash resumes from the last one")
    max_failures: int = Field(2, ge=0, description="worker-group restarts Ray Train allows before giving up")
    chat_template: str | None = Field(None, description="replace the base tokenizer's chat template: a name of "
                                      "TRL's bundled originals (qwen2_5, qwen3, llama3_1, ...) or a .jinja file")
    # Switches for big students and 16-32k-token traces, passed as they are to TRL's SFTConfig (its own fields).
    deepspeed: str | dict[str, Any] | None = Field(None, description="a DeepSpeed config (JSON file or mapping), "
                                                   "e.g. ZeRO-3 for full fine-tuning of 7B+ students on GPUs")
    use_liger_kernel: bool = Field(False, description="Liger's fused Triton kernels (GPU): less activation memory "
                                   "on long traces")

    @field_validator("deepspeed")
    @classmethod
    def _deepspeed_usable(cls, v: str | dict | None, info: ValidationInfo) -> str | dict | None:
        if v is None:
            return v
        _require_package("deepspeed", "student.deepspeed", "deepspeed")
        return _existing(v, info) if isinstance(v, str) else v

    @field_validator("use_liger_kernel")
    @classmethod
    def _liger_usable(cls, v: bool) -> bool:
        if v:
            _require_package("liger_kernel", "student.use_liger_kernel", "liger-kernel")
        return v

    @field_validator("method", mode="before")
    @classmethod
    def _method_is_weights(cls, v: Any) -> Any:
        if v in ("on_policy", "sft"):
            raise ValueError(f"'{v}' is a training method: set `training: {v}` (method says which weights train: "
                             "lora or full)")
        return v

    @field_validator("init_from", "on_policy")
    @classmethod
    def _on_policy_only(cls, v: Any, info: ValidationInfo) -> Any:
        if v is not None and info.data.get("training") == "sft":
            raise ValueError("only for `training: on_policy` students (an SFT student starts from its base and "
                             "learns from the verified traces)")
        return v

    @field_validator("workers")
    @classmethod
    def _on_policy_one_worker(cls, v: int, info: ValidationInfo) -> int:
        if v > 1 and info.data.get("training") == "on_policy":
            raise ValueError("training: on_policy trains in one process: set workers to 1")
        return v

    @model_validator(mode="after")
    def _on_policy_defaults(self) -> "Student":
        if self.training == "on_policy" and self.on_policy is None:
            self.on_policy = OnPolicy()
        return self

    @model_validator(mode="after")
    def _fsdp_on_gpus(self) -> "Student":
        # accelerate has no CPU FSDP: on CPU workers the Trainer would quietly fall back to DDP.
        if self.fsdp and (self.workers < 2 or self.gpus_per_worker <= 0):
            raise ValueError("student.fsdp needs workers > 1 and gpus_per_worker > 0 (FSDP shards parameters "
                             "across GPU processes; on CPU it would silently run as DDP)")
        if self.deepspeed is not None and (self.fsdp or self.gpus_per_worker <= 0):
            raise ValueError("student.deepspeed needs gpus_per_worker > 0 and fsdp off (one sharding engine, on GPUs)")
        return self

    @field_validator("chat_template")
    @classmethod
    def _template_known(cls, v: str | None) -> str | None:
        if v is not None:
            from distill.training.chat_templates import template_text

            template_text(v)
        return v


class Benchmark(Strict):
    name: str
    problems: int | None = Field(None, ge=1, description="first N problems; all when unset")
    # R1's protocol differs per benchmark (open-r1: 64 samples for AIME, 4 for MATH-500; up to 32,768 tokens).
    k: int | None = Field(None, ge=1, description="samples per problem; unset: eval.k")
    max_tokens: int | None = Field(None, ge=1, description="new tokens per sample; unset: eval.max_tokens")

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
    # Where students and base models are served: eval's own vLLM engines, nothing taken from the teacher (a 32B
    # teacher's tensor_parallel_size or 32k context would be pushed onto a 1.5B student; an API teacher has none).
    engine: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for the eval "
                                   "engines' vllm.LLM (CPU build: distill's CPU defaults under them)")
    max_model_len: int | None = Field(None, ge=16, description="context of the eval engines; unset: vLLM's "
                                      "default (the model's own; 4096 on the CPU build)")
    replicas: int = Field(1, ge=1, description="data-parallel eval engine copies (Ray actors)")
    num_gpus: float | None = Field(None, ge=0, description="GPUs per eval replica; unset: 1 when the spec uses "
                                   "GPUs (a vLLM teacher with num_gpus > 0, or students training on GPUs), else 0 "
                                   "(the CPU build)")
    num_cpus: float = Field(1, gt=0, description="CPUs reserved per eval replica")

    def protocol(self, bench: Benchmark) -> tuple[int, int]:
        """(k, max_tokens) a benchmark is scored with: its own, else eval's."""
        return bench.k or self.k, bench.max_tokens or self.max_tokens

    @model_validator(mode="after")
    def _context_once(self) -> "Eval":
        if self.max_model_len is not None and "max_model_len" in self.engine:
            raise ValueError("max_model_len is set both here and in eval.engine: give it once")
        return self

    @field_validator("benchmarks", mode="before")
    @classmethod
    def _names_ok(cls, v: Any) -> Any:
        return [{"name": b} if isinstance(b, str) else b for b in v]


class Sft(Strict):
    """The SFT dataset stage (distill/pipeline/sft.py)."""

    # R1 answered simple queries without a chain of thought: a non-reasoning example (no reference answer) is
    # trained on the teacher's answer alone, its `<think>` block stripped, unless this asks to keep it.
    think_non_reasoning: bool = Field(False, description="keep the teacher's <think> block in non-reasoning "
                                      "examples (default: stripped, the student answers them directly)")


class Package(Strict):
    """The package stage (distill/package.py, distill/export/)."""

    gguf: bool = Field(True, description="also write gguf/: F16 and Q8_0 GGUF files and an Ollama Modelfile "
                                         "(Llama, Qwen2/2.5 and Qwen3 students; others are noted and skipped)")


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
    prices: Prices | None = Field(None, description="for the cost ledger in run.json and the package manifest")
    sft: Sft = Field(default_factory=Sft)
    package: Package = Field(default_factory=Package)

    @field_validator("filter")
    @classmethod
    def _targets_have_sources(cls, v: Filter, info: ValidationInfo) -> Filter:
        prompts = info.data.get("prompts")  # absent when the prompts failed their own validation
        if v.domain_targets and prompts is not None:
            provided = set().union(*(src.domains() for src in prompts.sources))
            missing = sorted(set(v.domain_targets) - provided)
            if missing:
                raise ValueError(f"domain_targets: no prompt source provides domain {', '.join(map(repr, missing))} "
                                 f"(the sources provide: {', '.join(sorted(provided))})")
        return v

    @model_validator(mode="after")
    def _unique_students(self) -> Spec:
        names = [s.name for s in self.students]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"students: duplicate name(s) {sorted(dup)}")
        return self

    def fingerprint(self) -> str:
        return canonical.digest(self.model_dump())


def student_links(spec: Spec) -> list[str]:
    """Errors in how students name each other (`init_from`, `on_policy.teacher`): each must be an SFT student of
    this run listed before (it trains first) and, for `init_from`, on the same base. One line per problem."""
    lines = []
    for i, st in enumerate(spec.students):
        if st.on_policy is not None and st.on_policy.teacher is None and spec.teacher.backend == "openai":
            lines.append(f"teacher.backend: 'openai' cannot score given tokens (an OpenAI-compatible endpoint returns "
                         f"log-probabilities only for tokens it samples), which on-policy student '{st.name}' needs: "
                         f"use a vllm teacher, or set students[{i}].on_policy.teacher")
        earlier = {s.name: s for s in spec.students[:i]}
        links = [("init_from", st.init_from)]
        if st.on_policy is not None:
            links.append(("on_policy.teacher", st.on_policy.teacher))
        for field, ref in links:
            if ref is None:
                continue
            where = f"students[{i}].{field}"
            names = [s.name for s in spec.students]
            if ref == st.name:
                lines.append(f"{where}: names this student itself")
            elif ref not in names:
                lines.append(f"{where}: no student '{ref}' in this run (students: {', '.join(names)})")
            elif ref not in earlier:
                lines.append(f"{where}: student '{ref}' is listed after this one: list it before, so it trains first")
            elif earlier[ref].training != "sft":
                lines.append(f"{where}: student '{ref}' is not an SFT student (training: {earlier[ref].training})")
            elif field == "init_from" and earlier[ref].base != st.base:
                lines.append(f"{where}: student '{ref}' trains base '{earlier[ref].base}', this student's base is "
                             f"'{st.base}': give the same base")
    return lines


def uses_gpus(spec: Spec) -> bool:
    """The spec runs on a GPU cluster: its vLLM teacher or its students' training workers ask for GPUs."""
    t = spec.teacher
    return (isinstance(t, VLLMTeacher) and t.num_gpus > 0) or any(s.gpus_per_worker > 0 for s in spec.students)


def eval_placement(spec: Spec, model: str = "") -> VLLMTeacher:
    """The vLLM engines students and base models are scored on, from `spec.eval` alone (never the teacher's):
    one GPU per replica on a GPU cluster (what a 0.5B-14B student needs; set `eval.num_gpus` and
    `eval.engine.tensor_parallel_size` for bigger ones), else the CPU build."""
    ev = spec.eval
    gpus = ev.num_gpus if ev.num_gpus is not None else (1 if uses_gpus(spec) else 0)
    engine = {**ev.engine, **({"max_model_len": ev.max_model_len} if ev.max_model_len is not None else {})}
    return VLLMTeacher(model=model or "eval", engine=engine, num_gpus=gpus, replicas=ev.replicas,
                       num_cpus=ev.num_cpus)


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "spec"


def parse_spec(data: Any, base_dir: str | Path = ".") -> Spec:
    try:
        spec = Spec.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as e:
        lines = []
        for err in e.errors():
            msg = err["msg"].removeprefix("Value error, ")
            loc = err["loc"]
            backend = loc[1] if loc[:1] == ("teacher",) and len(loc) > 1 and loc[1] in TEACHERS else None
            if backend:
                loc = loc[:1] + loc[2:]  # the union's tag is not a key the user wrote
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
                owner = [b for b, cls in TEACHERS.items() if backend and loc[-1] in cls.model_fields]
                if owner:
                    msg = f"a field of backend '{owner[0]}', not of backend '{backend}'"
            elif err["type"] == "union_tag_not_found":
                msg = "should be a mapping: model, backend (vllm or openai) and the backend's fields"
            elif err["type"] == "union_tag_invalid":
                loc, msg = loc + ("backend",), f"unknown backend {err['ctx']['tag']!r} (one of: {', '.join(TEACHERS)})"
            lines.append(f"{_field_path(loc)}: {msg}")
        raise SpecError("\n".join(lines)) from None
    links = student_links(spec)
    if links:
        raise SpecError("\n".join(links))
    return spec


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
