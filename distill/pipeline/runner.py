"""`distill run`: the stage graph (`stages.STAGES`) in order, each stage skipped when its marker matches its
fingerprint.

  prompts -> generate -> verify -> sft -> train/<student> -> eval/<model> -> package/<student>

A stage's fingerprint covers its own config and its inputs' fingerprints, so changing a knob redoes that stage
and everything downstream of it, and nothing upstream.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import yaml

from distill import artifacts, cleanup, cluster, ledger, progress
from distill.pipeline import graph
from distill.pipeline.stages import STAGES
from distill.spec import Spec


def _log(msg: str) -> None:
    print(f"[distill {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Runner:
    def __init__(self, spec: Spec, stages: tuple[graph.Stage, ...] = STAGES):
        self.spec = spec
        self.stages = stages
        self.root = Path(spec.output_dir)
        self.markers: dict[str, dict] = {}
        self.fingerprints: dict[str, str] = {}  # every planned stage's, before it runs: train keys checkpoints by it

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
        with cleanup.run_lock(self.root):  # one live run per directory: what a killed run left can go
            for path, n in cleanup.remove_leftovers(self.root):
                _log(f"removed {path.relative_to(self.root)} ({cleanup.human(n)}), left by a killed run")
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

        nodes = graph.plan(self.stages, s.model_dump(mode="json"))
        graph.write_plan(self.root, nodes)
        fps = self.fingerprints
        for node in nodes:
            st = node.stage
            fps[node.key] = artifacts.fingerprint(st.kind or st.name, *(fps[k] for k in node.inputs),
                                                  *st.covers(self, node.item))
            if node.enabled:
                self.stage(node.key, fps[node.key], lambda d, n=node: n.stage.build(self, n.item, d))
        packages = [str(self.root / n.key) for n in nodes if n.stage.name == "package" and n.enabled]

        summary = {"spec": s.name, "spec_hash": s.fingerprint(), "output_dir": str(self.root),
                   "packages": packages, "stages": {k: {"seconds": m["seconds"], "stats": m["stats"]}
                                                    for k, m in self.markers.items()},
                   "ledger": ledger.build(self.markers, s)}
        (self.root / "run.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary

    def costs(self) -> dict:
        """The ledger of the stages run so far (a package records what its student has cost)."""
        return ledger.build(self.markers, self.spec)

    def lineage(self) -> dict:
        gen = self.markers["generate"]["stats"]
        ver = self.markers["verify"]["stats"]
        return {"teacher": self.spec.teacher.model, "spec_name": self.spec.name, "spec_hash": self.spec.fingerprint(),
                "problems": gen["problems"], "generated": ver["generated"], "verified": ver["correct"],
                "kept": ver["kept"], "drop_reasons": ver["reasons"],
                "spec": self.spec.model_dump(mode="json")}  # holds env-var names for keys, never key values


def run(spec: Spec) -> dict:
    return Runner(spec).run()
