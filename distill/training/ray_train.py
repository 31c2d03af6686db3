"""Stage 5 scaled out: the same TRL trainer under Ray Train's TorchTrainer, for several workers (DDP, or FSDP
via TrainingArguments), with checkpoints on storage every worker can reach and resume after a failure.

A student with `workers > 1` trains here. Ray Train starts one process per worker and sets up
torch.distributed (gloo on CPU, NCCL on GPU); HF's Trainer sees the process group and wraps the model in DDP.
`RayTrainReportCallback` hands each HF checkpoint to Ray Train; when a worker dies, Ray Train restarts the group
(up to `max_failures` times) and every worker resumes from the latest reported checkpoint, so a failure costs at
most `save_steps` steps. Checkpoints live in `checkpoint_dir`, outside the stage's temporary directory, so even
a re-run after the whole driver died resumes instead of starting over.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from distill.spec import Student


def _loop(config: dict) -> None:
    import ray.train
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

    from distill import progress
    from distill.training.final_weights import save_trained
    from distill.training.resume import step_of
    from distill.training.sft import build_trainer, load_sft, tokenizer_for

    student = Student.model_validate(config["student"])
    progress.configure(config.get("run_dir"))  # a worker does not inherit the driver's environment
    progress.set_stage(config.get("stage"))
    ds, too_long, n_tokens = load_sft(Path(config["sft_dir"]), student)
    ctx = ray.train.get_context()
    work = Path(config["checkpoint_dir"]) / "hf" / f"rank{ctx.get_world_rank()}"
    trainer = build_trainer(ds, student, work, config["seed"], ddp_backend=None if student.gpus_per_worker else "gloo")
    trainer.add_callback(RayTrainReportCallback())

    for callback in config.get("callbacks") or ():  # extra HF TrainerCallbacks (tests inject a fault this way)
        trainer.add_callback(callback)
    trainer = prepare_trainer(trainer)
    resume = None
    checkpoint = ray.train.get_checkpoint()
    t0 = time.time()
    if checkpoint:
        with checkpoint.as_directory() as d:
            local = work / "resume"
            shutil.rmtree(local, ignore_errors=True)
            shutil.copytree(Path(d) / RayTrainReportCallback.CHECKPOINT_NAME, local)
            resume = str(local)
    result = trainer.train(resume_from_checkpoint=resume)
    rank0 = ctx.get_world_rank() == 0
    out = Path(config["out_dir"])
    # Every rank: under FSDP the full state dict is gathered from all of them; rank 0 alone writes it.
    save_trained(trainer, tokenizer_for(student), student, out if rank0 else None)
    if rank0:
        stats = {
            "student": student.name, "method": student.method, "base": student.base, "workers": student.workers,
            "examples": len(ds), "dropped_over_max_length": too_long, "tokens_per_epoch": n_tokens,
            "steps": result.global_step, "train_loss": result.training_loss,
            "resumed_from_step": step_of(resume),
            # what ran, not what was asked for
            "strategy": "fsdp" if trainer.is_fsdp_enabled else "deepspeed" if trainer.is_deepspeed_enabled else "ddp",
            "seconds": round(time.time() - t0, 2), "device": "cuda" if student.gpus_per_worker else "cpu",
        }
        (out / "train_stats.json").write_text(json.dumps(stats, indent=2))


def train_with_ray(sft_dir: Path, out_dir: Path, student: Student, seed: int, checkpoint_dir: Path,
                   callbacks: Sequence[Any] = ()) -> dict:
    """Train `student` on `workers` Ray Train workers; `callbacks` (HF `TrainerCallback`s, picklable) are added to
    every worker's trainer."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from distill import cluster, progress
    from distill.training.sft import load_sft

    load_sft(sft_dir, student)  # tokenised once here, before Ray starts: every worker then reads the cache
    cluster.ensure_ray()
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    resources = {"CPU": student.cpus_per_worker}
    if student.gpus_per_worker:
        resources["GPU"] = student.gpus_per_worker
    trainer = TorchTrainer(
        _loop,
        train_loop_config={"sft_dir": str(sft_dir), "out_dir": str(out_dir), "student": student.model_dump(),
                           "seed": seed, "checkpoint_dir": str(checkpoint_dir),
                           "callbacks": list(callbacks),
                           "run_dir": os.environ.get(progress.ENV),
                           "stage": progress.current_stage(f"train/{student.name}")},
        scaling_config=ScalingConfig(num_workers=student.workers, use_gpu=bool(student.gpus_per_worker),
                                     resources_per_worker=resources),
        run_config=RunConfig(name="ray-train", storage_path=str(checkpoint_dir.resolve()),
                             failure_config=FailureConfig(max_failures=student.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    trainer.fit()
    return json.loads((out_dir / "train_stats.json").read_text())
