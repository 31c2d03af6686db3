"""Stage 5, train: fine-tune one student on the SFT dataset (`distill.training.sft`: TRL's SFTTrainer with PEFT
LoRA, or full). One worker trains in this process; `workers > 1` trains under Ray Train (`distill.training.ray_train`).

Writes `merged/` (full weights + tokenizer, EOS set in the generation config), `adapter/` (LoRA only)
and `train_stats.json`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from distill.spec import Student
from distill.training.ray_train import train_with_ray
from distill.training.sft import build_trainer, load_sft, save_model, tokenizer_for


def train_student(sft_dir: Path, out_dir: Path, student: Student, seed: int,
                  checkpoint_dir: Path | None = None) -> dict:
    import torch

    if student.workers > 1:
        return train_with_ray(sft_dir, out_dir, student, seed, checkpoint_dir or out_dir / "checkpoints")
    tok = tokenizer_for(student)
    ds, too_long, n_tokens = load_sft(sft_dir, student)
    trainer = build_trainer(ds, student, out_dir, seed)
    t0 = time.time()
    result = trainer.train()
    seconds = time.time() - t0
    save_model(trainer.model, tok, student, out_dir)
    stats = {
        "student": student.name, "method": student.method, "base": student.base,
        "examples": len(ds), "dropped_over_max_length": too_long, "tokens_per_epoch": n_tokens,
        "steps": result.global_step, "train_loss": result.training_loss,
        "seconds": round(seconds, 2), "tokens_per_second": round(n_tokens * student.epochs / max(seconds, 1e-9), 1),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    (out_dir / "train_stats.json").write_text(json.dumps(stats, indent=2))
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return stats
