"""The trained student's final weights, written once by rank 0, whole, however training sharded them.

Under FSDP (or DeepSpeed ZeRO-3) no single rank holds the whole model: rank 0 saving `trainer.model` alone would
write its own shards (or block in a collective the other ranks never join). So every rank calls `save_trained`;
the full state dict is gathered with `accelerator.get_state_dict` (a collective: all ranks take part, rank 0 gets
the tensors), and rank 0 loads it into a plain copy of the model on CPU and saves that the usual way
(`distill.training.sft.save_model`: `merged/`, and `adapter/` for LoRA).
"""

from __future__ import annotations

from pathlib import Path

from distill.models import resolve_model
from distill.spec import Student
from distill.training.sft import save_model


def save_trained(trainer, tok, student: Student, out_dir: Path | None) -> None:
    """Every rank calls this; the one given `out_dir` (rank 0) writes."""
    if not (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        if out_dir is not None:
            save_model(trainer.model, tok, student, out_dir)
        return
    state = trainer.accelerator.get_state_dict(trainer.deepspeed if trainer.is_deepspeed_enabled else trainer.model)
    if out_dir is None:
        return
    save_model(_plain_copy(trainer, student, state), tok, student, out_dir)


def _plain_copy(trainer, student: Student, state: dict):
    """An unsharded CPU model (a PeftModel for LoRA, with the same adapter config) holding `state`."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(resolve_model(student.base),
                                                 dtype=torch.bfloat16 if student.bf16 else torch.float32)
    if student.method == "lora":
        from peft import get_peft_model

        trained = trainer.accelerator.unwrap_model(trainer.model)
        model = get_peft_model(model, trained.peft_config["default"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # lm_head may be tied to the embeddings
        raise RuntimeError(f"gathered state dict does not fit {student.base}: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    return model
