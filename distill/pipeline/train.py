"""Stage 5, train: fine-tune one student on the SFT dataset (`distill.training.sft`: TRL's SFTTrainer with PEFT
LoRA, or full). One worker trains in this process; `workers > 1` trains under Ray Train (`distill.training.ray_train`).

Checkpoints go to `checkpoint_dir` (the runner gives `<run>/checkpoints/<student>/<stage fingerprint>`, outside
the stage's temporary directory) every `save_steps`; a re-run after a kill resumes from the newest complete one,
and they are removed once the student is saved.

Writes `merged/` (full weights + tokenizer, EOS set in the generation config), `adapter/` (LoRA only)
and `train_stats.json`, whose `accelerators` (workers x GPUs per worker) x `wall_seconds` (the whole stage: the
devices are held from model load to the final save) is the stage's ledger entry.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from distill import ledger
from distill.spec import Student
from distill.training.final_weights import save_trained
from distill.training.ray_train import train_with_ray
from distill.training.resume import last_complete_checkpoint, step_of
from distill.training.sft import build_trainer, load_sft, tokenizer_for


def train_student(sft_dir: Path, out_dir: Path, student: Student, seed: int,
                  checkpoint_dir: Path | None = None, callbacks: Sequence[Any] = ()) -> dict:
    """`callbacks`: extra HF TrainerCallbacks (tests inject faults and observe steps this way)."""
    t0 = time.time()
    checkpoint_dir = checkpoint_dir or out_dir / "checkpoints"
    if student.workers > 1:
        stats = train_with_ray(sft_dir, out_dir, student, seed, checkpoint_dir, callbacks=callbacks)
        accelerators = student.workers * student.gpus_per_worker  # what Ray Train reserved for the whole fit
    else:
        stats, accelerators = _train_here(sft_dir, out_dir, student, seed, checkpoint_dir, callbacks)
    wall = time.time() - t0
    stats = ledger.charge(stats, accelerators, wall)
    (out_dir / "train_stats.json").write_text(json.dumps(stats, indent=2))
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the student is saved: nothing left to resume
    return stats


def _train_here(sft_dir: Path, out_dir: Path, student: Student, seed: int, checkpoint_dir: Path,
                callbacks: Sequence[Any]) -> tuple[dict, float]:
    import torch

    tok = tokenizer_for(student)
    ds, too_long, n_tokens = load_sft(sft_dir, student)
    trainer = build_trainer(ds, student, checkpoint_dir, seed)
    for callback in callbacks:
        trainer.add_callback(callback)
    resume = last_complete_checkpoint(checkpoint_dir)
    resumed = step_of(resume)  # read now: training rotates that checkpoint away
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.time() - t0
    trained_here = n_tokens * student.epochs * (result.global_step - resumed) / max(result.global_step, 1)
    save_trained(trainer, tok, student, out_dir)
    # Declared GPUs count (Ray and the ledger plan with them); none declared, the GPUs the Trainer itself used.
    accelerators = student.gpus_per_worker or float(trainer.args.n_gpu if torch.cuda.is_available() else 0)
    stats = {
        "student": student.name, "method": student.method, "base": student.base,
        "examples": len(ds), "dropped_over_max_length": too_long, "tokens_per_epoch": n_tokens,
        "steps": result.global_step, "train_loss": result.training_loss, "resumed_from_step": resumed,
        "seconds": round(seconds, 2), "tokens_per_second": round(trained_here / max(seconds, 1e-9), 1),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    return stats, accelerators
