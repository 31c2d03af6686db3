"""`distill run`: the stages in order, each skipped when its marker matches its fingerprint.

  prompts -> generate -> verify -> sft -> train/<student> -> eval/<model> -> package/<student>

A stage's fingerprint covers its own config and its inputs' fingerprints, so changing a knob redoes that stage
and everything downstream of it, and nothing upstream.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Callable

import yaml

from distill import artifacts, cluster, ledger, progress
from distill.dataset import build_sft_dataset
from distill.evaluate import evaluate_model
from distill.generate import generate_stage
from distill.package import package_student
from distill.prompts import build_prompts
from distill.spec import Spec
from distill.train import train_student
from distill.verify import verify_stage


def _log(msg: str) -> None:
    print(f"[distill {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


class Runner:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.root = Path(spec.output_dir)
        self.markers: dict[str, dict] = {}

    def stage(self, name: str, fp: str, build: Callable[[Path], dict | None]) -> dict:
        path = self.root / name
        if artifacts.is_done(path, fp):
            _log(f"{name}: up to date, skipped")
            m = artifacts.marker(path)
        else:
            _log(f"{name}: running")
            progress.set_stage(name)  # the name the stage's progress bar and status counts go under
            try:
                m = artifacts.commit_stage(path, fp, build)
            finally:
                progress.set_stage(None)
            _log(f"{name}: done in {m['seconds']}s {json.dumps(m['stats'], default=str)[:300]}")
        self.markers[name] = m
        return m

    def run(self) -> dict:
        """Run every stage; write `report.html` at the end, also when a stage failed (it shows how far it got)."""
        try:
            summary = self._run_stages()
        finally:
            report = self._write_report()
        summary["report"] = str(report) if report else None
        return summary

    def _write_report(self) -> Path | None:
        from distill.report import write_report

        try:
            path = write_report(self.root)
        except Exception as e:  # noqa: BLE001 - a broken report must never hide the run's own result or error
            _log(f"report: not written ({type(e).__name__}: {e})")
            return None
        _log(f"report: {path}")
        return path

    def _run_stages(self) -> dict:
        s = self.spec
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "spec.yaml").write_text(yaml.safe_dump(s.model_dump(), sort_keys=False))
        cluster.configure(s.ray_address)
        progress.configure(self.root)

        local_files = [artifacts.file_digest(src.path) for src in s.prompts.sources if src.path]
        fp_prompts = artifacts.fingerprint("prompts", s.prompts.model_dump(), local_files)
        self.stage("prompts", fp_prompts, lambda d: build_prompts(s.prompts, d))

        fp_gen = artifacts.fingerprint("generate", fp_prompts, s.teacher.model_dump(), s.sampling.model_dump(), s.seed)
        self.stage("generate", fp_gen,
                   lambda d: generate_stage(self.root / "prompts", d, s.teacher, s.sampling, s.seed, prices=s.prices))

        fp_verify = artifacts.fingerprint("verify", fp_gen, s.filter.model_dump(),
                                          [b.model_dump() for b in s.eval.benchmarks])
        # Decontamination checks the problems against the benchmark slices this spec evaluates on.
        self.stage("verify", fp_verify, lambda d: verify_stage(self.root / "generate", d, s.filter, workers=2,
                                                               benchmarks=s.eval.benchmarks))

        fp_sft = artifacts.fingerprint("sft", fp_verify)
        self.stage("sft", fp_sft, lambda d: build_sft_dataset(self.root / "verify", d))

        ev = s.eval
        fp_eval_cfg = ev.model_dump()
        base_scores: dict[str, dict] = {}
        if ev.benchmarks and ev.include_base:
            for base in dict.fromkeys(st.base for st in s.students):
                key = f"eval/base-{_slug(base)}"
                fp = artifacts.fingerprint("eval-base", base, fp_eval_cfg, s.teacher.num_gpus, s.seed)
                self.stage(key, fp, lambda d, b=base: evaluate_model(b, f"base:{b}", ev, s.teacher, s.seed, d))
                base_scores[base] = json.loads((self.root / key / "scores.json").read_text())

        lineage = self._lineage()
        packages = []
        for st in s.students:
            train_key = f"train/{st.name}"
            fp_train = artifacts.fingerprint("train", fp_sft, st.model_dump(), s.seed)
            self.stage(train_key, fp_train, lambda d, st=st: train_student(
                self.root / "sft", d, st, s.seed, checkpoint_dir=self.root / "checkpoints" / st.name))
            train_dir = self.root / train_key

            scores = None
            # With its base scored, the student's scores carry the paired student − base comparison (vs_base).
            base_dir = self.root / f"eval/base-{_slug(st.base)}" if st.base in base_scores else None
            base_fp = self.markers[f"eval/base-{_slug(st.base)}"]["fingerprint"] if base_dir else None
            fp_eval = artifacts.fingerprint("eval", fp_train, fp_eval_cfg, s.teacher.num_gpus, s.seed, base_fp)
            if ev.benchmarks:
                key = f"eval/{st.name}"
                self.stage(key, fp_eval, lambda d, st=st, bd=base_dir: evaluate_model(
                    str(train_dir / "merged"), st.name, ev, s.teacher, s.seed, d, base_dir=bd))
                scores = json.loads((self.root / key / "scores.json").read_text())
            scores = scores or {"benchmarks": {}, "decoding": {**fp_eval_cfg, "seed": s.seed}}

            pkg_key = f"package/{st.name}"
            costs = ledger.build(self.markers, s)  # what this student has cost so far, in its manifest
            fp_pkg = artifacts.fingerprint("package", fp_eval, base_scores.get(st.base), lineage, costs)
            self.stage(pkg_key, fp_pkg, lambda d, st=st, sc=scores, c=costs: package_student(
                train_dir, d, st, sc, base_scores.get(st.base), lineage, c))
            packages.append(str(self.root / pkg_key))

        summary = {"spec": s.name, "spec_hash": s.fingerprint(), "output_dir": str(self.root),
                   "packages": packages, "stages": {k: {"seconds": m["seconds"], "stats": m["stats"]}
                                                    for k, m in self.markers.items()},
                   "ledger": ledger.build(self.markers, s)}
        (self.root / "run.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary

    def _lineage(self) -> dict:
        gen = self.markers["generate"]["stats"]
        ver = self.markers["verify"]["stats"]
        return {"teacher": self.spec.teacher.model, "spec_name": self.spec.name, "spec_hash": self.spec.fingerprint(),
                "problems": gen["problems"], "generated": ver["generated"], "verified": ver["correct"],
                "kept": ver["kept"], "drop_reasons": ver["reasons"],
                "spec": self.spec.model_dump(mode="json")}  # holds env-var names for keys, never key values


def run(spec: Spec) -> dict:
    return Runner(spec).run()
