"""TRL's SFTConfig arguments for one student: every switch of the student spec under the name TRL (and the
transformers TrainingArguments it extends) gives it, so what the spec says is what the trainer gets.

Checkpoints: every student saves one every `save_steps` (the last two kept) into `output_dir`, which the train
stage puts in the run directory outside its temporary stage directory: a re-run after a crash resumes there.
FSDP saves full state dicts (`FULL_STATE_DICT`: every rank takes part in the gather, rank 0 writes), so a
checkpoint and the final weights are whole models any loader reads, not one rank's shard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.spec import Student

CHECKPOINTS_KEPT = 2  # the newest is the one resumed from; the one before it covers a kill during a save


def sft_config_args(student: Student, output_dir: Path, seed: int, rows_per_step: int, use_cuda: bool,
                    **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of `trl.SFTConfig`; `overrides` win (bench/sft.py turns saving off)."""
    config: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=student.epochs,
        learning_rate=student.learning_rate,
        per_device_train_batch_size=rows_per_step,
        gradient_accumulation_steps=student.gradient_accumulation_steps,
        warmup_steps=student.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of all steps
        max_length=student.max_length,
        completion_only_loss=True,
        # Best-fit-decreasing packing into max_length bins, flattened padding-free: reasoning traces vary 10x in
        # length, and padding a batch to its longest wastes most of the compute. Sequence boundaries travel as
        # position_ids, so attention never crosses examples.
        packing=student.packing,
        packing_strategy="bfd",
        padding_free=student.packing,
        gradient_checkpointing=student.gradient_checkpointing,
        use_liger_kernel=student.use_liger_kernel,
        bf16=student.bf16,
        use_cpu=not use_cuda,
        seed=seed,
        save_strategy="steps",
        save_steps=student.save_steps,
        save_total_limit=CHECKPOINTS_KEPT,
        report_to=[],
        logging_steps=1,
        disable_tqdm=True,
    )
    if student.deepspeed is not None:
        config["deepspeed"] = student.deepspeed  # a JSON path or a mapping, as TRL takes it (ZeRO-3 for 7B+)
    if student.fsdp:
        config["fsdp"] = "full_shard auto_wrap"
        fsdp_config: dict[str, Any] = {"state_dict_type": "FULL_STATE_DICT"}
        if student.gradient_checkpointing:
            # Under FSDP, checkpointing belongs to FSDP's wrapping (transformers' advice): the Trainer's own
            # switch would re-gather every layer's parameters a second time in the backward pass.
            fsdp_config["activation_checkpointing"] = True
            config["gradient_checkpointing"] = False
        config["fsdp_config"] = fsdp_config
    config.update(overrides)
    return config
