"""Stage 5 for `training: on_policy` students: on-policy distillation (`distill.training.on_policy`) over the run's
prompts, from the run's teacher or from an SFT student of the run (`on_policy.teacher`), starting from the student's
base or an SFT student's weights (`init_from`). Writes what the SFT train stage writes (`merged/`, `adapter/` for
LoRA, `train_stats.json`), the stats naming the method and the model that scored the tokens.
"""

from __future__ import annotations

from pathlib import Path

from distill.spec import Spec, Student


def train_on_policy_student(run_root: Path, out_dir: Path, student: Student, spec: Spec) -> dict:
    import pyarrow.parquet as pq

    from distill.training.on_policy import resolve_start, resolve_teacher, train_on_policy

    prompts = pq.read_table(run_root / "prompts" / "prompts.parquet", columns=["prompt"]).column("prompt").to_pylist()
    teacher_dir, teacher_label = resolve_teacher(run_root, student, spec.teacher.model)
    return train_on_policy(prompts, out_dir, student, spec.seed, student_model=resolve_start(run_root, student),
                           teacher_model=teacher_dir, teacher_label=teacher_label,
                           checkpoint_dir=run_root / "checkpoints" / student.name)
