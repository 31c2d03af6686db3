"""The pipeline's stage graph, declared once: `distill run` builds it (`runner.py`), `status.json`,
`distill jobs status` and the report order and list stages by it.

  prompts -> generate -> verify -> sft -> train/<student> -> eval/<model> -> package/<student>
  eval/base-<model> (a student's base model, scored for comparison) needs nothing but the spec.

Each stage's `build` gets the run (`runner.Runner`: the validated spec, the run directory, finished stages'
markers), the item (a student name, a base model) and the directory to write; the stage modules are imported
there, when the stage runs, so reading this graph (status, report) stays cheap. Fingerprints are exactly what
they were before the graph existed, so existing run directories stay up to date.
"""

from __future__ import annotations

import json
from pathlib import Path

from distill import artifacts
from distill.pipeline.graph import Stage, slug
from distill.spec import engine_content, eval_placement, student_fingerprint, teacher_fingerprint


def _students(spec: dict) -> list[str]:
    return [s["name"] for s in spec.get("students") or [] if isinstance(s, dict) and s.get("name")]


def _bases(spec: dict) -> list[str]:
    return [str(s["base"]) for s in spec.get("students") or [] if isinstance(s, dict) and s.get("base")]


def _benchmarks(spec: dict) -> bool:
    return bool((spec.get("eval") or {}).get("benchmarks"))


def _base_evals(spec: dict) -> bool:
    return _benchmarks(spec) and (spec.get("eval") or {}).get("include_base", True) is not False


def _student(run, name: str):
    return next(s for s in run.spec.students if s.name == name)


def base_eval_key(base: str) -> str:
    return f"eval/base-{slug(base)}"


# ---------------------------------------------------------------- builds (the stage modules' entry functions)

def _prompts(run, item, out: Path):
    from distill.pipeline.prompts import build_prompts

    return build_prompts(run.spec.prompts, out)


def _generate(run, item, out: Path):
    from distill import cleanup
    from distill.pipeline.generate import generate_stage, shard_key

    s = run.spec
    # Which resumable shard set is this spec's: `distill clean` keeps it and frees the others.
    cleanup.note_current_shards(run.root, shard_key(run.root / "prompts" / "prompts.parquet", s.teacher, s.sampling,
                                                    s.seed))
    return generate_stage(run.root / "prompts", out, s.teacher, s.sampling, s.seed, prices=s.prices)


def _verify(run, item, out: Path):
    from distill.pipeline.verify import verify_stage

    # Decontamination checks the problems against the benchmark slices this spec evaluates on.
    s = run.spec
    return verify_stage(run.root / "generate", out, s.filter, workers=2, benchmarks=s.eval.benchmarks)


def _sft(run, item, out: Path):
    from distill import preflight
    from distill.pipeline.sft import build_sft_dataset

    preflight.require_kept(run.markers["verify"]["stats"])  # 0 kept: a clear stop, not an IndexError in train
    # The dataset card's spec hash is the building run's: a later spec edit that leaves the data as it is does not
    # rebuild the stage (nor retrain the students downstream of it).
    s = run.spec
    card = {"name": s.name, "teacher": s.teacher.model, "spec_hash": s.fingerprint()}
    return build_sft_dataset(run.root / "verify", out, card=card)


def _eval_base(run, base: str, out: Path):
    from distill.pipeline.eval import evaluate_model

    return evaluate_model(base, f"base:{base}", run.spec.eval, eval_placement(run.spec), run.spec.seed, out)


def _train(run, name: str, out: Path):
    from distill.pipeline.train import train_student

    if _student(run, name).training == "on_policy":
        from distill.pipeline.on_policy import train_on_policy_student

        return train_on_policy_student(run.root, out, _student(run, name), run.spec)
    return train_student(run.root / "sft", out, _student(run, name), run.spec.seed,
                         checkpoint_dir=run.root / "checkpoints" / name)


def _base_eval_dir(run, name: str) -> Path | None:
    """The student's base model's finished eval, if this run scored it: the student's scores then carry the paired
    student − base comparison (`vs_base`)."""
    key = base_eval_key(_student(run, name).base)
    return run.root / key if key in run.markers else None


def _eval(run, name: str, out: Path):
    from distill.pipeline.eval import evaluate_model

    return evaluate_model(str(run.root / "train" / name / "merged"), name, run.spec.eval, eval_placement(run.spec),
                          run.spec.seed, out, base_dir=_base_eval_dir(run, name))


def scores_of(run, name: str) -> dict:
    """A student's eval scores, or the empty scores a package records when the spec has no benchmarks."""
    path = run.root / "eval" / name / "scores.json"
    if run.spec.eval.benchmarks and path.exists():
        return json.loads(path.read_text())
    return {"benchmarks": {}, "decoding": {**eval_protocol(run.spec.eval), "seed": run.spec.seed}}


def base_scores_of(run, name: str) -> dict | None:
    return artifacts.read_json(run.root / base_eval_key(_student(run, name).base) / "scores.json")


def _package(run, name: str, out: Path):
    from distill.pipeline.package import package_student

    st = _student(run, name)
    return package_student(run.root / "train" / name, out, st, scores_of(run, name), base_scores_of(run, name),
                           run.lineage(), run.costs(), gguf=run.spec.package.gguf)


# ---------------------------------------------------------------- the graph

def _upstream_students(run, name: str) -> list:
    """An on-policy student's train stage reads other students' trained weights (`init_from`, `on_policy.teacher`):
    their train fingerprints are part of its own, so retraining one retrains it. Nothing for SFT students."""
    st = _student(run, name)
    refs = [st.init_from, st.on_policy.teacher if st.on_policy else None]
    return [(ref, (run.markers.get(f"train/{ref}") or {}).get("fingerprint")) for ref in refs if ref]


def _base_eval_fingerprint(run, name: str) -> str | None:
    marker = run.markers.get(base_eval_key(_student(run, name).base))
    return marker["fingerprint"] if marker else None


# Eval fields that only say where and how fast eval runs: a change re-uses the scores.
EVAL_PLACEMENT_FIELDS = {"engine", "max_model_len", "replicas", "num_gpus", "num_cpus"}


def eval_protocol(ev) -> dict:
    """What decides eval's scores besides the model: eval's fields but its placement, each benchmark's own k and
    max_tokens only where set (so specs written before they existed keep their fingerprints)."""
    out = ev.model_dump(exclude=EVAL_PLACEMENT_FIELDS)
    out["benchmarks"] = [{k: v for k, v in b.items() if v is not None or k not in ("k", "max_tokens")}
                         for b in out["benchmarks"]]
    return out


def _eval_covers(run, item) -> list:
    ev = run.spec.eval
    placed = eval_placement(run.spec)
    # The device kind (0: CPU build, 1: GPUs), not the count, written as 0/1 so runs made before eval had its own
    # placement keep their fingerprints; engine settings only when set, for the same reason.
    covers = [eval_protocol(ev), int(placed.num_gpus > 0), run.spec.seed]
    engine = engine_content(placed.engine)  # throughput settings (memory, parallelism) re-use the scores
    return covers + ([engine] if engine else [])


STAGES: tuple[Stage, ...] = (
    Stage("prompts", _prompts,
          covers=lambda run, _: [run.spec.prompts.model_dump(),
                                 [artifacts.file_digest(src.path) for src in run.spec.prompts.sources if src.path]]),
    Stage("generate", _generate, inputs=("prompts",),
          covers=lambda run, _: [teacher_fingerprint(run.spec.teacher), run.spec.sampling.model_dump(),
                                 run.spec.seed]),
    Stage("verify", _verify, inputs=("generate",),
          covers=lambda run, _: [run.spec.filter.model_dump(),  # decontamination reads the benchmarks' problems
                                 [b.model_dump(include={"name", "problems"}) for b in run.spec.eval.benchmarks]]),
    Stage("sft", _sft, inputs=("verify",)),
    Stage("eval-base", _eval_base, each=_bases, key=base_eval_key, prefix="eval/base-", when=_base_evals,
          kind="eval-base", covers=lambda run, base: [base, *_eval_covers(run, base)]),
    Stage("train", _train, inputs=("sft",), each=_students,
          covers=lambda run, name: [student_fingerprint(_student(run, name)), run.spec.seed,
                                    *_upstream_students(run, name)]),
    Stage("eval", _eval, inputs=("train",), each=_students, when=_benchmarks,
          covers=lambda run, name: [*_eval_covers(run, name), _base_eval_fingerprint(run, name)]),
    Stage("package", _package, inputs=("eval",), each=_students,
          covers=lambda run, name: [base_scores_of(run, name), run.lineage(), run.costs(),
                                    run.spec.package.model_dump()]),
)
