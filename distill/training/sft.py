"""The SFT trainer: TRL's SFTTrainer for one student on the SFT dataset (PEFT LoRA, or full).

Loss is on the completion only (labels -100 over the prompt, computed as TRL computes them for its prompt-completion
format, in the run's tokenisation cache: `distill.training.tokenized`), and the completion ends with the chat
template's end-of-turn token, which is the tokenizer's EOS: that is what teaches a student to stop. Examples
longer than `max_length` are dropped and counted, never truncated (a truncated trace loses its answer and
its EOS: the student would learn to ramble and never stop).

Writes `merged/` (full weights + tokenizer, EOS set in the generation config), `adapter/` (LoRA only)
and `train_stats.json`.
"""

from __future__ import annotations

from pathlib import Path

from distill.models import resolve_model
from distill.spec import Student


def _load_tokenizer(base: str, student: Student | None = None):
    from transformers import AutoTokenizer

    from distill.training.chat_templates import check_keeps_reasoning, template_text

    tok = AutoTokenizer.from_pretrained(base)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if student is not None:
        if student.chat_template:
            tok.chat_template = template_text(student.chat_template)  # saved with the package's tokenizer
        check_keeps_reasoning(tok, student.name)
    return tok


def _example_tokens(tok, ex) -> int:
    """Tokens of one prompt-completion example as the trainer sees it (the whole chat, templated)."""
    ids = tok.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=True, return_dict=False)
    return len(ids["input_ids"] if isinstance(ids, dict) else ids)


def build_trainer(ds, student: Student, output_dir: Path, seed: int, **overrides):
    """TRL's SFTTrainer for `student` on a tokenised (`load_sft`) or prompt-completion dataset, checkpointing into
    `output_dir`; `overrides` go to SFTConfig (bench/sft.py builds its plain-TRL baseline from the same function
    with packing off)."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from distill.training.trainer_config import sft_config_args
    from distill.training.varlen_attention import best_for_packing

    base = resolve_model(student.base)
    tok = _load_tokenizer(base, student)
    use_cuda = torch.cuda.is_available()
    # Padding-free batches need an attention that reads the sequence boundaries (see distill/training/varlen_attention.py).
    attn = best_for_packing() if student.packing else "sdpa"
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16 if student.bf16 else torch.float32,
                                                 attn_implementation=attn)
    peft_config = None
    if student.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=student.lora.r, lora_alpha=student.lora.alpha, lora_dropout=student.lora.dropout,
                                 target_modules=student.lora.target_modules, task_type="CAUSAL_LM")
    config = sft_config_args(student, output_dir, seed, _rows_per_step(ds, student, tok), use_cuda, **overrides)
    trainer = SFTTrainer(model=model, args=SFTConfig(**config), train_dataset=ds,
                         processing_class=tok, peft_config=peft_config)
    trainer.add_callback(_progress_callback(student))
    return trainer


def _rows_per_step(ds, student: Student, tok, sample: int = 1000) -> int:
    """`student.batch_size` counts examples per step, packed or not. A packed row holds about max_length /
    mean-length examples, so packing gets batch_size x mean / max_length rows: the same examples (and optimizer
    steps) per epoch as without packing, rather than several times fewer, larger steps that change the
    effective batch size and learning-rate schedule with the packing switch."""
    if not student.packing or len(ds) == 0:
        return student.batch_size
    n = min(sample, len(ds))
    if "input_ids" in ds.column_names:  # tokenised (`distill.training.tokenized`): lengths from Arrow's offsets
        import pyarrow.compute as pc

        mean = pc.mean(pc.list_value_length(ds.with_format("arrow")[:n]["input_ids"])).as_py()
    else:
        mean = sum(_example_tokens(tok, r) for r in ds.select(range(n))) / n
    return max(1, round(student.batch_size * mean / student.max_length))


def _progress_callback(student: Student):
    """Steps done / total as the stage's progress bar and status counts (rank 0 only), with the last loss."""
    from transformers import TrainerCallback

    from distill import progress

    class Progress(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kw):
            if state.is_world_process_zero:
                self.bar = progress.Bar(None, state.max_steps, "step", initial=state.global_step,
                                        default=f"train/{student.name}")

        def on_step_end(self, args, state, control, **kw):
            if self.bar is not None:
                loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)
                self.bar.update(state.global_step - self.bar.done, **({"loss": round(loss, 4)} if loss else {}))

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.close()

    return Progress()


def tokenizer_for(student: Student):
    return _load_tokenizer(resolve_model(student.base), student)


def load_sft(sft_dir: Path, student: Student):
    """(dataset of input_ids + labels, examples dropped as too long, tokens kept) for one student: the run's
    tokenisation cache (`distill.training.tokenized`), built on first use; every worker reads the same copy."""
    from distill.training.tokenized import tokenized_sft

    ds, too_long, n_tokens = tokenized_sft(sft_dir, tokenizer_for(student), student.max_length)
    if len(ds) == 0:
        raise ValueError(f"student '{student.name}': no training examples (kept traces: {len(ds) + too_long}, "
                         f"longer than max_length={student.max_length}: {too_long})")
    return ds, too_long, n_tokens


def stop_token_ids(tok) -> list[int]:
    """EOS plus the chat template's end-of-turn token. The student is trained to end its turn with whatever the
    template closes a turn with (`<|im_end|>` for Qwen, `<|eot_id|>` for Llama-3); when that is not the
    tokenizer's EOS (base models: Qwen2.5-Math's EOS is `<|endoftext|>`), a generation config holding only EOS
    gives a student that never stops. Found by rendering a turn and reading the token after its content."""
    ids = [tok.eos_token_id] if tok.eos_token_id is not None else []
    marker = "distill-end-of-turn-probe"
    text = tok.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}],
                                   tokenize=False)
    after = tok(text.split(marker, 1)[1], add_special_tokens=False)["input_ids"] if marker in text else []
    if after and after[0] in tok.all_special_ids and after[0] not in ids:
        ids.append(after[0])
    return ids


def save_model(model, tok, student: Student, out_dir: Path) -> None:
    """`merged/`: full weights any loader (vLLM, transformers) serves; `adapter/`: the LoRA adapter alone."""
    if student.method == "lora":
        model.save_pretrained(out_dir / "adapter", safe_serialization=True)
        model = model.merge_and_unload()
    model.set_attn_implementation("sdpa")  # what any loader has; the training-only varlen kernel is not saved
    model.generation_config.eos_token_id = stop_token_ids(tok)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir / "merged", safe_serialization=True)
    tok.save_pretrained(out_dir / "merged")
