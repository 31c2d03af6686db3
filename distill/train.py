"""Stage 5, train: fine-tune one student on the SFT dataset with TRL's SFTTrainer (PEFT LoRA, or full).

Loss is on the completion only (TRL's prompt-completion format), and the completion ends with the chat
template's end-of-turn token, which is the tokenizer's EOS: that is what teaches a student to stop. Examples
longer than `max_length` are dropped and counted, never truncated (a truncated trace loses its answer and
its EOS: the student would learn to ramble and never stop).

Writes `merged/` (full weights + tokenizer, EOS set in the generation config), `adapter/` (LoRA only)
and `train_stats.json`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from distill.models import resolve_model
from distill.spec import Student


def _load_tokenizer(base: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _within_length(ds, tok, max_length: int):
    def n_tokens(ex):
        ids = tok.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=True, return_dict=False)
        ids = ids["input_ids"] if isinstance(ids, dict) else ids
        return {"n_tokens": len(ids)}

    ds = ds.map(n_tokens)
    keep = ds.filter(lambda ex: ex["n_tokens"] <= max_length)
    return keep, len(ds) - len(keep), int(sum(keep["n_tokens"]))


def train_student(sft_dir: Path, out_dir: Path, student: Student, seed: int) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    base = resolve_model(student.base)
    tok = _load_tokenizer(base)
    ds = datasets.load_from_disk(str(sft_dir / "hf"))
    ds, too_long, n_tokens = _within_length(ds, tok, student.max_length)
    if len(ds) == 0:
        raise ValueError(f"student '{student.name}': no training examples (kept traces: {len(ds) + too_long}, "
                         f"longer than max_length={student.max_length}: {too_long})")
    ds = ds.remove_columns([c for c in ds.column_names if c not in ("prompt", "completion")])

    use_cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=torch.bfloat16 if student.bf16 else torch.float32
    )
    peft_config = None
    if student.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=student.lora.r, lora_alpha=student.lora.alpha, lora_dropout=student.lora.dropout,
                                 target_modules=student.lora.target_modules, task_type="CAUSAL_LM")
    args = SFTConfig(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=student.epochs,
        learning_rate=student.learning_rate,
        per_device_train_batch_size=student.batch_size,
        gradient_accumulation_steps=student.gradient_accumulation_steps,
        warmup_steps=student.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of all steps
        max_length=student.max_length,
        completion_only_loss=True,
        bf16=student.bf16,
        use_cpu=not use_cuda,
        seed=seed,
        save_strategy="no",
        report_to=[],
        logging_steps=1,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config)
    t0 = time.time()
    result = trainer.train()
    seconds = time.time() - t0
    _save(trainer.model, tok, student, out_dir)
    stats = {
        "student": student.name, "method": student.method, "base": student.base,
        "examples": len(ds), "dropped_over_max_length": too_long, "tokens_per_epoch": n_tokens,
        "steps": result.global_step, "train_loss": result.training_loss,
        "seconds": round(seconds, 2), "tokens_per_second": round(n_tokens * student.epochs / max(seconds, 1e-9), 1),
        "device": "cuda" if use_cuda else "cpu",
    }
    (out_dir / "train_stats.json").write_text(json.dumps(stats, indent=2))
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return stats


def _save(model, tok, student: Student, out_dir: Path) -> None:
    """`merged/`: full weights any loader (vLLM, transformers) serves; `adapter/`: the LoRA adapter alone."""
    if student.method == "lora":
        model.save_pretrained(out_dir / "adapter", safe_serialization=True)
        model = model.merge_and_unload()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir / "merged", safe_serialization=True)
    tok.save_pretrained(out_dir / "merged")
