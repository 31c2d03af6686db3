"""Preflight: everything about a spec that can be checked without running a model, checked before anything runs.

`distill validate`, `distill run`, `distill submit`, `Client.jobs.create` and the job entry point all call
`check` after the spec parsed, so a mistake costs a second, not a generation run:

  models      a teacher (vllm backend) or student base is a built-in name, a local directory with config.json
              and safetensors weights, or a Hub id: in the local HF cache, or found on the Hub when it answers
              (when it does not, a warning says the model could not be checked)
  sampling    temperature, top_p, max_tokens (and eval's) as vLLM's own `SamplingParams` accepts them
  engine      `teacher.engine` and `eval.engine` keys are fields of vLLM's `EngineArgs` (or `vllm.LLM` parameters);
              eval's tensor/pipeline parallel fits `eval.num_gpus`
  sources     prompt files are readable, have at least one row and the named columns
  output_dir  a directory, or creatable, and writable

Each problem is one line naming the field (a `SpecError` line); what could not be checked is a warning line.
A run whose verify stage kept nothing stops with `EmptyStage` (see `require_kept`): that too is a one-line stop,
not a crash inside training.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill import jsonl
from distill.spec import Spec, SpecError

# Keys distill passes to vllm.LLM itself: in `teacher.engine` they would clash with the spec's own field.
_SET_BY_DISTILL = {"model": "teacher.model", "seed": "seed"}


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class EmptyStage(RuntimeError):
    """A stage produced nothing for the next one to work on (e.g. verify kept no trace): a clear stop.
    `details`: extra lines for whoever reports it (the funnel)."""

    details: list[str] = []


# ---------------------------------------------------------------- entry points

def check(spec: Spec, *, on_cluster: bool = False) -> Findings:
    """Every check below, collected. `on_cluster`: the spec will run elsewhere (a submitted job), so paths that
    are not visible here (output_dir, an absolute model directory) are warnings rather than errors."""
    f = Findings()
    t = spec.teacher
    vllm_teacher = getattr(t, "backend", "vllm") == "vllm"
    if vllm_teacher:
        _model(f, "teacher.model", t.model, on_cluster)
    for i, st in enumerate(spec.students):
        if st.base not in [s.base for s in spec.students[:i]]:
            _model(f, f"students[{i}].base", st.base, on_cluster)
    if vllm_teacher or spec.eval.benchmarks:
        sp = _sampling_params_class(f)
        if sp is not None:
            s = spec.sampling
            if vllm_teacher:
                _sampling(f, sp, "sampling", temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens)
            if spec.eval.benchmarks:
                e = spec.eval
                _sampling(f, sp, "eval", temperature=e.temperature, top_p=e.top_p, max_tokens=e.max_tokens)
    if vllm_teacher and t.engine:
        _engine_keys(f, "teacher.engine", t.engine)
    if spec.eval.benchmarks:
        _eval_placement(f, spec)
    for i, src in enumerate(spec.prompts.sources):
        _source(f, f"prompts.sources[{i}]", src)
    if not f.errors:  # tokenizers load from models found above: compared only once those are there
        _on_policy(f, spec)
    _output_dir(f, spec.output_dir, on_cluster)
    return f


def require(spec: Spec, *, on_cluster: bool = False, warn=None) -> Findings:
    """`check`, raising SpecError with every error line; warnings go to `warn` (default: stderr)."""
    f = check(spec, on_cluster=on_cluster)
    for w in f.warnings:
        (warn or _stderr)(w)
    if f.errors:
        raise SpecError("\n".join(f.errors))
    return f


def _stderr(line: str) -> None:
    print(f"spec warning: {line}", file=sys.stderr)


def require_kept(stats: dict) -> None:
    """Stop the run when verify kept no trace: training on 0 examples would crash, and would teach nothing."""
    if stats.get("kept", 0) > 0:
        return
    generated = stats.get("generated", 0)
    reasons = sorted(((r, c) for r, c in (stats.get("reasons") or {}).items() if c), key=lambda rc: (-rc[1], rc[0]))
    why = ", ".join(f"{r} {c}" for r, c in reasons)
    err = EmptyStage(f"verify kept 0 of {generated} traces{f' ({why})' if why else ''}: nothing to train on")
    err.details = ["funnel:", *funnel_lines(stats)]
    raise err


def funnel_lines(stats: dict) -> list[str]:
    """The verify funnel, one line per step, for the message of an empty stage."""
    out = []
    for step in stats.get("funnel") or []:
        dropped = ", ".join(f"{r} {c}" for r, c in (step.get("dropped") or {}).items())
        out.append(f"  {step['step']:<16} {step['remaining']:>8}" + (f"   dropped: {dropped}" if dropped else ""))
    return out


# ---------------------------------------------------------------- models

def _model(f: Findings, where: str, name: str, on_cluster: bool) -> None:
    from distill.models import BUILTIN, cache_dir

    if name in BUILTIN:
        package, dirname = BUILTIN[name]
        if not (cache_dir() / "models" / dirname / "model.safetensors").exists() \
                and importlib.util.find_spec(package) is None:
            problem = f"built-in model '{name}' needs the '{package.replace('_', '-')}' package"
            if on_cluster:  # the job's image may have it: the job checks again there
                f.warnings.append(f"{where}: {problem} (not installed here)")
            else:
                f.errors.append(f"{where}: {problem}")
        return
    path = Path(name).expanduser()
    if path.is_absolute() or name.startswith((".", "~")) or path.exists():
        _model_dir(f, where, name, path, on_cluster)
        return
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        f.errors.append(f"{where}: '{name}' is not a local directory, a built-in model "
                        f"({', '.join(sorted(BUILTIN))}) or a Hub id (owner/name)")
        return
    _hub_model(f, where, name)


def _model_dir(f: Findings, where: str, name: str, path: Path, on_cluster: bool) -> None:
    if not path.exists():
        problem = f"directory not found: {name}"
    elif not path.is_dir():
        problem = f"{name} is a file; a model is a directory with config.json and *.safetensors weights"
    elif not (path / "config.json").is_file():
        problem = f"{name} has no config.json"
    elif not any(path.glob("*.safetensors")):
        problem = f"{name} has no *.safetensors weights"
    else:
        return
    if on_cluster and not path.exists():
        f.warnings.append(f"{where}: {name} is not visible here: the job checks it on the cluster")
    else:
        f.errors.append(f"{where}: {problem}")


def _hub_model(f: Findings, where: str, repo: str) -> None:
    import huggingface_hub as hub
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(hub.try_to_load_from_cache(repo, "config.json"), str):
        return  # downloaded before: loads offline
    try:
        hub.model_info(repo, timeout=10)
    except GatedRepoError:
        f.warnings.append(f"{where}: '{repo}' is gated on the Hub: the run needs a token with access (HF_TOKEN)")
    except RepositoryNotFoundError:
        f.errors.append(f"{where}: '{repo}' not found on the Hub (nor a local directory or built-in model)")
    except Exception as e:  # noqa: BLE001 - offline, DNS, proxy, timeout: all mean "could not check"
        f.warnings.append(f"{where}: could not check '{repo}': not in the local cache and the Hub did not answer "
                          f"({type(e).__name__})")


# ---------------------------------------------------------------- on-policy students: can the teacher score them

def _local_model_dir(name: str) -> str | None:
    """A model's files here, without converting or downloading anything: a built-in already converted, a local
    directory, or a Hub id in the local cache; None when they are not here."""
    from distill.models import BUILTIN, cache_dir

    if name in BUILTIN:
        out = cache_dir() / "models" / BUILTIN[name][1]
        return str(out) if (out / "model.safetensors").exists() else None
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    import huggingface_hub as hub

    try:
        cached = hub.try_to_load_from_cache(name, "tokenizer_config.json")
    except Exception:  # noqa: BLE001 - not a valid repo id
        return None
    return str(Path(cached).parent) if isinstance(cached, str) else None


def _on_policy(f: Findings, spec: Spec) -> None:
    """An on-policy student and the model that scores its tokens (the run's teacher, or `on_policy.teacher`) share
    one tokenizer: vocabulary, special tokens, stop tokens (`distill.training.tokenizer_match`)."""
    students = {s.name: s for s in spec.students}
    for i, st in enumerate(spec.students):
        if st.on_policy is None:
            continue
        if st.on_policy.teacher is not None:
            scorer = students[st.on_policy.teacher]
            t_name, t_model, t_template = f"student '{scorer.name}'", scorer.base, scorer.chat_template
        else:
            t_name, t_model, t_template = f"teacher {spec.teacher.model}", spec.teacher.model, None
        t_dir, s_dir = _local_model_dir(t_model), _local_model_dir(st.base)
        if t_dir is None or s_dir is None:
            missing = t_model if t_dir is None else st.base
            f.warnings.append(f"students[{i}].base: the tokenizers of the student and its {t_name} were not "
                              f"compared: {missing} is not here yet")
            continue
        from distill.training.tokenizer_match import load_tokenizer, mismatch

        why = mismatch(load_tokenizer(t_dir, t_template), load_tokenizer(s_dir, st.chat_template), t_dir, s_dir)
        if why:
            f.errors.append(f"students[{i}].base: on-policy distillation needs the tokenizer of its {t_name}, but "
                            f"{why}")


# ---------------------------------------------------------------- vLLM: sampling ranges and engine keys

def _vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def _sampling_params_class(f: Findings):
    if not _vllm_installed():
        f.warnings.append("sampling: vLLM is not installed here: its sampling ranges were not checked")
        return None
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from vllm import SamplingParams

    return SamplingParams


_VLLM_SUFFIX = re.compile(r"\s*\(parameter=.*\)\s*$")


def _sampling(f: Findings, sampling_params, where: str, **values: Any) -> None:
    # One parameter at a time, so each message names its own field; vLLM's own check decides the range.
    for key, value in values.items():
        try:
            sampling_params(**{key: value})
        except Exception as e:  # noqa: BLE001 - VLLMValidationError is no ValueError; any refusal is the answer
            msg = _VLLM_SUFFIX.sub("", str(e).splitlines()[0]).rstrip(".")
            f.errors.append(f"{where}.{key}: {msg} (vLLM's SamplingParams)")


def engine_arg_names() -> set[str] | None:
    """The keyword arguments `vllm.LLM(...)` takes: its own parameters and `EngineArgs`' fields."""
    if not _vllm_installed():
        return None
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from vllm.engine.arg_utils import EngineArgs

    return {fl.name for fl in dataclasses.fields(EngineArgs)} | _llm_init_parameters()


def _llm_init_parameters() -> set[str]:
    """`vllm.LLM.__init__`'s named parameters, read from its source: importing `vllm.LLM` costs ~9 s more on CPU
    than `EngineArgs` alone, for the few parameters (e.g. chat_template) it takes besides EngineArgs' fields."""
    spec = importlib.util.find_spec("vllm.entrypoints.llm")
    if spec is None or not spec.origin:
        return set()
    tree = ast.parse(Path(spec.origin).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "LLM":
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == "__init__":
                    a = fn.args
                    return {x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs]} - {"self"}
    return set()


def _engine_keys(f: Findings, where: str, engine: dict) -> None:
    known = engine_arg_names()
    if known is None:
        f.warnings.append(f"{where}: vLLM is not installed here: keys not checked")
        return
    for key in engine:
        if key in _SET_BY_DISTILL:
            source = "students" if where.startswith("eval") and key == "model" else _SET_BY_DISTILL[key]
            f.errors.append(f"{where}.{key}: set by distill from the spec's '{source}'; remove it here")
        elif key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            f.errors.append(f"{where}.{key}: not a keyword argument of vLLM's engine{hint}")


def _eval_placement(f: Findings, spec: Spec) -> None:
    """Eval's own engines: their keys, and tensor/pipeline parallel against eval.num_gpus."""
    from distill.spec import eval_placement
    from distill.teachers.vllm import placement

    if spec.eval.engine:
        _engine_keys(f, "eval.engine", spec.eval.engine)
    try:
        placement(eval_placement(spec))
    except ValueError as e:
        f.errors.append(f"eval.num_gpus: {str(e).removeprefix('teacher.num_gpus is ')}")


# ---------------------------------------------------------------- prompt sources

def _source(f: Findings, where: str, src) -> None:
    from distill import catalog

    if src.path is not None:
        _rows_file(f, f"{where}.path", src.path, src.fields, src.answer_format)
        return
    entry = catalog.get(src.dataset)
    parts = [entry] if isinstance(entry, catalog.SourceEntry) else [catalog.get(p.source) for p in entry.sources]
    for e in parts:
        if e.loader.path:
            _rows_file(f, f"{where}.dataset ({e.name})", e.loader.path, e.fields, e.answer_format)
        else:  # streaming a Hub dataset's first row would need the network and seconds: said, not done
            f.warnings.append(f"{where}.dataset ({e.name}): Hub dataset '{e.loader.hf}' not checked before the run")


def _columns(fields: dict, answer_format: str) -> list[tuple[str, str]]:
    need = [("problem", fields.get("problem", "problem"))]
    if answer_format != "none":
        need.append(("answer", fields.get("answer", "answer")))
    return need


def _rows_file(f: Findings, where: str, path: str, fields: dict, answer_format: str) -> None:
    """Readable, at least one row, and the named columns present in the first one."""
    from distill import catalog

    p = Path(path)
    if p.is_dir():
        f.errors.append(f"{where}: {path} is a directory, not a .jsonl or .parquet file")
        return
    try:
        first = _first_row(p)
    except ValueError as e:
        f.errors.append(f"{where}: {e}")
        return
    except OSError as e:
        f.errors.append(f"{where}: cannot read {path}: {e.strerror or e}")
        return
    if first is None:
        f.errors.append(f"{where}: {path} has no rows")
        return
    for role, column in _columns(fields, answer_format):
        try:
            catalog.pick(first, column)
        except (KeyError, IndexError, TypeError, ValueError):
            f.errors.append(f"{where}: {path} has no column '{column}' (the {role}); columns: "
                            f"{', '.join(map(str, first)) or 'none'}")


def _first_row(p: Path) -> dict | None:
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(p)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a file that is not Parquet
            raise ValueError(f"{p} is not a readable Parquet file ({str(e).splitlines()[0]})") from None
        if pf.metadata.num_rows == 0:
            return None
        return next(pf.iter_batches(batch_size=1)).to_pylist()[0]
    with open(p, "rb") as fh:
        start = fh.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if start.startswith(b"["):  # one JSON array of rows, which the `datasets` JSON loader also reads
        return _first_of_array(p)
    return jsonl.first_row(p)


def _first_of_array(p: Path) -> dict | None:
    try:
        rows = json.loads(p.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: byte {e.start + 1}: not valid UTF-8") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: line {e.lineno}, column {e.colno}: not valid JSON ({e.msg})") from None
    if not isinstance(rows, list):
        raise ValueError(f"{p}: expected JSON lines or an array of objects")
    if rows and not isinstance(rows[0], dict):
        raise ValueError(f"{p}: the first row must be a JSON object, got {jsonl.kind(rows[0])}")
    return rows[0] if rows else None


# ---------------------------------------------------------------- output_dir

def _output_dir(f: Findings, out: str, on_cluster: bool) -> None:
    problem = output_dir_problem(Path(out))
    if problem is None:
        return
    if on_cluster:
        f.warnings.append(f"output_dir: {problem} here (the job checks it on the cluster)")
    else:
        f.errors.append(f"output_dir: {problem}")


def output_dir_problem(p: Path) -> str | None:
    """Why `p` cannot be a run directory, or None: it is a writable directory, or can be created as one."""
    if p.exists():
        if not p.is_dir():
            return f"{p} is a file, not a directory"
        if not os.access(p, os.W_OK | os.X_OK):
            return f"{p} is not writable"
        return None
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot create {p}: {ancestor} is a file"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot create {p}: {ancestor} is not writable"
    return None
