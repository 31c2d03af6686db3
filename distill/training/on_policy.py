"""On-policy distillation (`training: on_policy`): the student samples its own completions of the run's prompts and
learns the teacher's per-token probabilities of exactly those tokens (Agarwal et al., GKD; Qwen3's and Thinking
Machines' on-policy distillation).

The trainer and the loss are TRL's: `ServerDistillationTrainer` (trl.experimental.server_distillation), the
`DistillationTrainer` whose teacher is a vLLM engine returning log-probabilities for given tokens rather than a
model in the trainer's memory. Its divergence (`beta`: 1 reverse KL, 0 forward KL, between the generalized JSD) is
computed on the teacher's sparse support (the sampled token and the teacher's top-1, plus a tail bucket), which is
what an engine that returns top-k log-probabilities allows. Two seams are filled with distill's own engines, both
vLLM in Ray actors (`distill.training.engines`):

  rollouts   TRL asks `trainer.vllm_generation` for completions and calls its `sync_weights()` whenever the
             optimizer has stepped: `EngineRollouts` samples on the student's engine and pushes the trainer's current
             weights (LoRA merged in) to it, so every round's rollouts come from the model being trained.
  teacher    TRL asks `trainer.teacher_client.get_sequence_logprobs(...)`: `EngineTeacher` answers from the teacher's
             engine (`prompt_logprobs`), in the same shape TRL's own vLLM-server client returns.

Checkpoints are TRL's (HF Trainer's) every `save_steps` in `checkpoint_dir`; a re-run resumes from the last one, and
the resumed weights reach the rollout engine before its first rollout. The reverse KL to the teacher on held-out
prompts (the last `heldout_prompts` of the run, never trained on) is measured before and after training.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from distill.models import resolve_model
from distill.spec import Student
from distill.teachers.vllm import engine_options
from distill.training.engines import start_engines

# TRL's ServerDistillationConfig requires a teacher server URL, and ServerDistillationTrainer.__init__ connects to it.
# The teacher here is an engine actor handed in after construction, so the URL names it and is never contacted.
_ENGINE_TEACHER_URL = "http://distill-teacher-engine.invalid"


class EngineRollouts:
    """What TRL's DistillationTrainer calls for rollouts (`sync_weights()`, `generate(...)`, as its own
    `VLLMGeneration` offers), served by the student's engine actor."""

    def __init__(self, actor, model, max_tokens: int, temperature: float = 1.0):
        self.actor, self.model, self.max_tokens, self.temperature = actor, model, max_tokens, temperature
        self.syncs = 0

    def sync_weights(self) -> None:
        import ray

        ray.get(self.actor.load_weights.remote(trainer_weights(self.model)))
        self.syncs += 1

    def generate(self, prompts: list[list[int]], images, num_generations: int, profiler=None):
        import ray

        if images is not None:
            raise ValueError("on-policy distillation here is text-only")
        outs = ray.get(self.actor.generate.remote(prompts, self.max_tokens, self.temperature, 1.0, num_generations))
        completions = [sample["ids"] for per_prompt in outs for sample in per_prompt]
        prompt_ids = [p for p in prompts for _ in range(num_generations)]
        return prompt_ids, completions, None, None


class EngineTeacher:
    """What TRL's ServerDistillationTrainer calls on its teacher (`get_sequence_logprobs`, as TRL's `VLLMClient`
    offers), served by the teacher's engine actor."""

    def __init__(self, actor):
        self.actor = actor

    def get_sequence_logprobs(self, sequences, prompt_lengths, top_logprobs: int = 1, temperature: float = 1.0,
                              **_: Any) -> dict:
        import ray

        if temperature != 1.0:
            raise ValueError("the teacher engine scores at temperature 1 (its raw distribution)")
        return ray.get(self.actor.score.remote(sequences, prompt_lengths, top_logprobs))


def trainer_weights(model) -> list[tuple[str, Any]]:
    """The trainer's current weights under the base model's parameter names, LoRA merged in. TRL's own walker for
    this (`VLLMGeneration._iter_named_params`) is a private method of its in-process engine class; this is the same
    PEFT recipe (merge, strip the PEFT prefixes, skip adapter tensors, unmerge)."""
    import torch

    from peft import PeftModel

    with torch.no_grad():
        if not isinstance(model, PeftModel):
            return [(n, p.detach().cpu().clone()) for n, p in model.named_parameters()]
        model.merge_adapter()
        try:
            prefix = model.prefix  # "lora_"
            out = []
            for name, p in model.named_parameters():
                if prefix in name or "original_module" in name:
                    continue
                name = name.removeprefix("base_model.model.").replace(".base_layer", "")
                out.append((name.replace("modules_to_save.default.", ""), p.detach().cpu().clone()))
            return out
        finally:
            model.unmerge_adapter()


def build_trainer(model_dir: str, train_prompts: list[str], student: Student, checkpoint_dir: Path, seed: int,
                  rollouts_actor, teacher_actor):
    """TRL's ServerDistillationTrainer for `student`, its rollouts and its teacher served by the engine actors."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.experimental.server_distillation import ServerDistillationConfig, ServerDistillationTrainer
    from trl.trainer.distillation_trainer import DistillationTrainer

    from distill.training.sft import tokenizer_for

    op = student.on_policy
    tok = tokenizer_for(student)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if student.bf16 else torch.float32)
    peft_config = None
    if student.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=student.lora.r, lora_alpha=student.lora.alpha, lora_dropout=student.lora.dropout,
                                 target_modules=student.lora.target_modules, task_type="CAUSAL_LM")
    args = ServerDistillationConfig(
        output_dir=str(checkpoint_dir), teacher_model_server_url=_ENGINE_TEACHER_URL,
        beta=op.beta, loss_top_k=op.loss_top_k, max_completion_length=op.max_completion_length, temperature=1.0,
        num_train_epochs=student.epochs, learning_rate=student.learning_rate,
        per_device_train_batch_size=student.batch_size,
        gradient_accumulation_steps=student.gradient_accumulation_steps, warmup_steps=student.warmup_ratio,
        gradient_checkpointing=student.gradient_checkpointing, bf16=student.bf16,
        use_cpu=not torch.cuda.is_available(), seed=seed, use_vllm=False,
        save_strategy="steps", save_steps=student.save_steps, save_total_limit=2,
        report_to=[], logging_steps=1, disable_tqdm=True)
    from datasets import Dataset

    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in train_prompts])

    class EngineDistillationTrainer(ServerDistillationTrainer):
        def __init__(self):
            # ServerDistillationTrainer.__init__ = DistillationTrainer.__init__ + its loss settings + a client that
            # connects to a teacher server; the teacher here is an engine actor, so the client is ours.
            DistillationTrainer.__init__(self, model=model, teacher_model=None, args=args, train_dataset=ds,
                                         processing_class=tok, peft_config=peft_config)
            self.reverse_kl_top_1_mode = args.reverse_kl_top_1_mode
            self.loss_top_k = args.loss_top_k
            self.loss_add_tail = args.loss_add_tail
            self.teacher_client = EngineTeacher(teacher_actor)
            # Rollouts from the student's engine: TRL's vLLM path, with weights synced before each round.
            self.use_vllm, self.vllm_mode, self._last_loaded_step = True, "server", -1
            self.vllm_generation = EngineRollouts(rollouts_actor, self.model, op.max_completion_length)

    return EngineDistillationTrainer()


def heldout_reverse_kl(student_actor, teacher_actor, prompt_ids: list[list[int]], max_tokens: int, n: int = 4) -> dict:
    """The reverse KL from the student to the teacher on prompts it never trained on: the mean over the student's
    own sampled tokens of log p_student(token) - log p_teacher(token) (the Monte Carlo estimate of
    KL(student || teacher), per token), with the per-sample standard error."""
    import ray

    outs = ray.get(student_actor.generate.remote(prompt_ids, max_tokens, 1.0, 1.0, n))
    seqs, starts, student_lps = [], [], []
    for prompt, samples in zip(prompt_ids, outs):
        for s in samples:
            if s["ids"]:
                seqs.append(prompt + s["ids"])
                starts.append(len(prompt))
                student_lps.append(s["logprobs"])
    if not seqs:  # every sample ended at once: no token to compare
        return {"reverse_kl_per_token": None, "stderr": None, "samples": 0, "tokens": 0}
    scored = ray.get(teacher_actor.score.remote(seqs, starts, 1))
    per_sample, tokens, total = [], 0, 0.0
    for s_lps, t_lps in zip(student_lps, scored["actual_logprobs"]):
        diffs = [s - t[0] for s, t in zip(s_lps, t_lps)]
        per_sample.append(sum(diffs) / len(diffs))
        tokens += len(diffs)
        total += sum(diffs)
    mean = total / max(tokens, 1)
    m = sum(per_sample) / len(per_sample)
    se = math.sqrt(sum((x - m) ** 2 for x in per_sample) / max(len(per_sample) - 1, 1) / len(per_sample))
    return {"reverse_kl_per_token": round(mean, 4), "stderr": round(se, 4), "samples": len(per_sample),
            "tokens": tokens}


def _prompt_ids(tok, prompts: list[str]) -> list[list[int]]:
    return [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True,
                                    return_dict=False) for p in prompts]


def train_on_policy(prompts: list[str], out_dir: Path, student: Student, seed: int, *, student_model: str,
                    teacher_model: str, teacher_label: str, checkpoint_dir: Path, callbacks=()) -> dict:
    """Distil `teacher_model` into `student` (starting from `student_model`: its base, or an SFT student's merged
    weights) on-policy over `prompts`; writes `merged/` (and `adapter/` for LoRA) and `train_stats.json`."""
    import ray
    import torch

    from distill.training.sft import save_model, tokenizer_for

    op = student.on_policy
    if len(prompts) <= op.heldout_prompts:
        raise ValueError(f"student '{student.name}': {len(prompts)} prompts, and on_policy.heldout_prompts keeps "
                         f"{op.heldout_prompts} of them out of training: nothing left to train on")
    split = len(prompts) - op.heldout_prompts
    train_prompts, heldout = prompts[:split], prompts[split:]
    on_cpu = not torch.cuda.is_available()
    gpus = 0 if on_cpu else max(student.gpus_per_worker, 0.5)
    t0 = time.time()
    student_actor, teacher_actor = start_engines([(student_model, _engine_kwargs(op.engine, on_cpu, student_model)),
                                                  (teacher_model, _engine_kwargs(op.engine, on_cpu, teacher_model))],
                                                 seed, num_gpus=gpus)
    try:
        engines_seconds = time.time() - t0
        tok = tokenizer_for(student)
        heldout_ids = _prompt_ids(tok, heldout)
        kl_before = heldout_reverse_kl(student_actor, teacher_actor, heldout_ids, op.max_completion_length) \
            if heldout else None
        trainer = build_trainer(student_model, train_prompts, student, checkpoint_dir, seed, student_actor,
                                teacher_actor)
        for cb in callbacks:
            trainer.add_callback(cb)
        resume = _resumable(checkpoint_dir, student, seed, student_model, teacher_model)
        resumed_from = _step_of(resume) if resume else 0  # read now: checkpoint rotation may delete it later
        t1 = time.time()
        result = trainer.train(resume_from_checkpoint=resume)
        seconds = time.time() - t1
        kl_after = None
        if heldout:
            trainer.vllm_generation.sync_weights()  # the final weights (the last step's are not synced yet)
            kl_after = heldout_reverse_kl(student_actor, teacher_actor, heldout_ids, op.max_completion_length)
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        save_model(trainer.model, tok, student, out_dir)
        stats = {
            "student": student.name, "method": student.method, "training": "on_policy", "base": student.base,
            "init_from": student.init_from or student.base, "logprob_teacher": teacher_label,
            "loss": f"TRL ServerDistillationTrainer, beta {op.beta} "
                    f"({'reverse KL' if op.beta == 1 else 'forward KL' if op.beta == 0 else 'generalized JSD'})",
            "examples": len(train_prompts), "heldout_prompts": len(heldout),
            "steps": result.global_step, "train_loss": result.training_loss,
            "first_losses": losses[:3], "last_losses": losses[-3:],
            "resumed_from_step": resumed_from,
            "weight_syncs": trainer.vllm_generation.syncs,
            "heldout_kl_before": kl_before, "heldout_kl_after": kl_after,
            "seconds": round(seconds, 2), "engines_start_seconds": round(engines_seconds, 2),
            "device": "cpu" if on_cpu else "cuda",
        }
        (out_dir / "train_stats.json").write_text(json.dumps(stats, indent=2))
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # done: a later re-train must not resume from these
        return stats
    finally:
        for actor in (student_actor, teacher_actor):
            ray.kill(actor)


def _engine_kwargs(engine: dict, on_cpu: bool, model: str) -> dict:
    from distill.models import context_length

    return engine_options(engine, on_cpu, context_length(model) if on_cpu and "max_model_len" not in engine else None)


def _resumable(checkpoint_dir: Path, student: Student, seed: int, student_model: str, teacher_model: str):
    """The last checkpoint of an interrupted run of this same training (same student settings, seed, start and
    teacher), else None; checkpoints of other training are removed rather than resumed."""
    from transformers.trainer_utils import get_last_checkpoint

    key = json.dumps({"student": student.model_dump(), "seed": seed, "start": student_model,
                      "teacher": teacher_model}, sort_keys=True)
    stamp = checkpoint_dir / "training.json"
    if checkpoint_dir.is_dir() and (not stamp.exists() or stamp.read_text() != key):
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)
    return get_last_checkpoint(str(checkpoint_dir))


def _step_of(checkpoint_dir: str) -> int:
    state = Path(checkpoint_dir) / "trainer_state.json"
    return json.loads(state.read_text())["global_step"] if state.exists() else 0


def resolve_teacher(run_root: Path, student: Student, teacher_model: str) -> tuple[str, str]:
    """(model directory that scores the student's tokens, its name for the card and manifest)."""
    if student.on_policy.teacher:
        return str(run_root / "train" / student.on_policy.teacher / "merged"), f"student:{student.on_policy.teacher}"
    return resolve_model(teacher_model), teacher_model


def resolve_start(run_root: Path, student: Student) -> str:
    """The weights the student starts from: an SFT student's merged weights (`init_from`), else its base."""
    if student.init_from:
        return str(run_root / "train" / student.init_from / "merged")
    return resolve_model(student.base)
