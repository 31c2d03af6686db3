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
import shutil
import time
from pathlib import Path

from distill import artifacts
from distill.pipeline.graph import Stage, slug
from distill.spec import (Sft, engine_content, eval_placement, filter_content, prompts_content, student_fingerprint,
                          teacher_fingerprint)


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
    from distill.verify.distributed import spread_over_cluster

    # Decontamination checks the problems against the benchmark slices this spec evaluates on.
    s = run.spec
    return verify_stage(run.root / "generate", out, s.filter, workers=s.filter.judge_workers(),
                        benchmarks=s.eval.benchmarks, spread=spread_over_cluster())


def _sft(run, item, out: Path):
    from distill import preflight
    from distill.pipeline.sft import build_sft_dataset

    preflight.require_kept(run.markers["verify"]["stats"])  # 0 kept: a clear stop, not an IndexError in train
    # The dataset card's spec hash is the building run's: a later spec edit that leaves the data as it is does not
    # rebuild the stage (nor retrain the students downstream of it).
    s = run.spec
    card = {"name": s.name, "teacher": s.teacher.model, "spec_hash": s.fingerprint()}
    return build_sft_dataset(run.root / "verify", out, card=card, think_non_reasoning=s.sft.think_non_reasoning)


def _charged(run, evaluate) -> dict:
    """An eval stage's stats with its accelerator time: replicas x GPUs per replica, for as long as it ran."""
    from distill import ledger

    placed = eval_placement(run.spec)
    t0 = time.time()
    stats = evaluate()
    return ledger.charge(stats, placed.replicas * placed.num_gpus, time.time() - t0)


# Eval's samples are generated in shard sets here (`.eval-shards/KEY`) until its scores are written, so a killed
# eval resumes where it stopped; KEY covers the model and what decides the samples, never the placement's speed.
EVAL_SHARDS_DIR = ".eval-shards"


def eval_shard_dir(run, model_id: str, item: str) -> Path:
    return run.root / EVAL_SHARDS_DIR / artifacts.fingerprint("eval-shards", model_id, *_eval_covers(run, item))


def _eval_base(run, base: str, out: Path):
    from distill.pipeline.eval import evaluate_model

    return _charged(run, lambda: evaluate_model(base, f"base:{base}", run.spec.eval, eval_placement(run.spec),
                                                run.spec.seed, out, judge=run.spec.filter,
                                                shard_dir=eval_shard_dir(run, base, base)))


def _train(run, name: str, out: Path):
    from distill.pipeline.train import train_student

    if _student(run, name).training == "on_policy":
        from distill.pipeline.on_policy import train_on_policy_student

        return train_on_policy_student(run.root, out, _student(run, name), run.spec)
    return train_student(run.root / "sft", out, _student(run, name), run.spec.seed,
                         checkpoint_dir=checkpoint_dir(run.root, name, run.fingerprints[f"train/{name}"]))


def checkpoint_dir(root: Path, name: str, fingerprint: str) -> Path:
    """A student's training checkpoints, kept by the stage's fingerprint: a re-run of the same stage resumes from
    them; a changed student (or SFT data) starts over, and the checkpoints of its other configs are removed."""
    here = root / "checkpoints" / name
    if here.is_dir():
        for other in here.iterdir():
            if other.name != fingerprint:
                shutil.rmtree(other, ignore_errors=True)
    return here / fingerprint


def _base_eval_dir(run, name: str) -> Path | None:
    """The student's base model's finished eval, if this run scored it: the student's scores then carry the paired
    student − base comparison (`vs_base`)."""
    key = base_eval_key(_student(run, name).base)
    return run.root / key if key in run.markers else None


def _eval(run, name: str, out: Path):
    from distill.pipeline.eval import evaluate_model

    # The merged weights' directory is the same after a retrain: the train stage's fingerprint names the model.
    trained = run.markers[f"train/{name}"]["fingerprint"]
    return _charged(run, lambda: evaluate_model(
        str(run.root / "train" / name / "merged"), name, run.spec.eval, eval_placement(run.spec), run.spec.seed,
        out, base_dir=_base_eval_dir(run, name), judge=run.spec.filter, shard_dir=eval_shard_dir(run, trained, name)))


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
          covers=lambda run, _: [prompts_content(run.spec.prompts),
                                 [artifacts.file_digest(src.path) for src in run.spec.prompts.sources if src.path]]),
    Stage("generate", _generate, inputs=("prompts",),
          covers=lambda run, _: [teacher_fingerprint(run.spec.teacher), run.spec.sampling.model_dump(),
                                 run.spec.seed]),
    Stage("verify", _verify, inputs=("generate",),
          covers=lambda run, _: [filter_content(run.spec.filter),  # decontamination reads the benchmarks' problems
                                 [b.model_dump(include={"name", "problems"}) for b in run.spec.eval.benchmarks]]),
    # The SFT settings only when not the defaults: runs from before they existed keep their fingerprints.
    Stage("sft", _sft, inputs=("verify",),
          covers=lambda run, _: [] if run.spec.sft == Sft() else [run.spec.sft.model_dump()]),
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
