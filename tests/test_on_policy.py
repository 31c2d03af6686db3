"""On-policy distillation (`training: on_policy`): the spec's refusals, each one line naming the field, before any
engine starts (real `distill validate` in a subprocess, real tokenizers); and a tiny real run (vLLM engines in Ray
actors, TRL's trainer) where the loss falls, the reverse KL to the teacher on held-out prompts falls, and a run
killed mid-way resumes from its checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from distill import preflight
from distill.spec import SpecError, load_spec
from tests.conftest import REPO
from tests.test_hostile_inputs import distill, messages

ARITH = REPO / "datasets_spec" / "data" / "arithmetic.jsonl"


def _spec(tmp_path, students, teacher=None) -> str:
    spec = {
        "name": "opd", "output_dir": str(tmp_path / "run"),
        "teacher": teacher or {"model": "smollm2-135m"},
        "prompts": {"sources": [{"path": str(ARITH), "fields": {"problem": "question", "answer": "answer"}}]},
        "students": students,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _errors(spec_path: str) -> list[str]:
    """What `distill validate` says, in-process (each CLI run would pay vLLM's import again)."""
    try:
        spec = load_spec(spec_path)
    except SpecError as e:
        return [f"spec error: {line}" for line in str(e).splitlines()]
    return [f"spec error: {line}" for line in preflight.check(spec).errors]


def _variant(src, dst, edit):
    """A copy of model directory `src` whose tokenizer `edit` changed (weights shared by copy)."""
    from transformers import AutoTokenizer

    shutil.copytree(src, dst)
    tok = AutoTokenizer.from_pretrained(dst)
    edit(tok)
    tok.save_pretrained(dst)
    return dst


def test_the_spec_refuses_bad_on_policy_links_in_one_line_each(tmp_path):
    students = [
        {"name": "sft", "base": "smollm2-135m"},
        {"name": "a", "base": "smollm2-135m", "method": "on_policy"},
        {"name": "b", "base": "smollm2-135m", "training": "on_policy", "init_from": "nope"},
        {"name": "c", "base": "smollm2-135m", "training": "on_policy", "init_from": "d"},
        {"name": "d", "base": "other/base", "training": "on_policy", "init_from": "sft",
         "on_policy": {"teacher": "c", "beta": 0.5, "loss_top_k": 4}},
        {"name": "e", "base": "smollm2-135m", "init_from": "sft"},
    ]
    assert _errors(_spec(tmp_path, students)) == [
        "spec error: students[1].method: 'on_policy' is a training method: set `training: on_policy` (method says "
        "which weights train: lora or full)",
        "spec error: students[4].on_policy: loss_top_k must be 1 when beta > 0 (TRL scores reverse and mixed KL on "
        "the sampled token and the teacher's top-1)",
        "spec error: students[5].init_from: only for `training: on_policy` students (an SFT student starts from its "
        "base and learns from the verified traces)",
    ]
    students[1]["training"] = students[1].pop("method")
    students[4]["on_policy"] = {"teacher": "c"}
    students[5]["training"] = "on_policy"
    assert _errors(_spec(tmp_path, students)) == [
        "spec error: students[2].init_from: no student 'nope' in this run (students: sft, a, b, c, d, e)",
        "spec error: students[3].init_from: student 'd' is listed after this one: list it before, so it trains first",
        "spec error: students[4].init_from: student 'sft' trains base 'smollm2-135m', this student's base is "
        "'other/base': give the same base",
        "spec error: students[4].on_policy.teacher: student 'c' is not an SFT student (training: on_policy)",
    ]


def test_an_api_teacher_cannot_score_the_students_tokens(tmp_path):
    teacher = {"model": "gpt-x", "backend": "openai", "base_url": "http://127.0.0.1:9/v1"}
    proc = distill("validate", _spec(tmp_path, [{"name": "o", "base": "smollm2-135m", "training": "on_policy"}],
                                     teacher))
    assert proc.returncode == 2
    assert messages(proc) == [
        "spec error: teacher.backend: 'openai' cannot score given tokens (an OpenAI-compatible endpoint returns "
        "log-probabilities only for tokens it samples), which on-policy student 'o' needs: use a vllm teacher, or set "
        "students[0].on_policy.teacher"]


def test_tokenizers_that_differ_are_refused_before_any_engine(tmp_path, tiny_llama, tiny_family):
    """Vocabulary, special tokens, stop tokens: each refused, naming the student's field; the same tokenizer passes."""
    eos_moved = _variant(tiny_llama, tmp_path / "eos", lambda t: setattr(t, "eos_token", "<|endoftext|>"))
    turn_end = _variant(tiny_llama, tmp_path / "turn",
                        lambda t: setattr(t, "chat_template", t.chat_template.replace("<|im_end|>", "<|endoftext|>")))
    cases = {
        tiny_family("llama3"): "the vocabularies differ (49152 vs 49156 tokens; '<|begin_of_text|>' only in the "
                               "student's)",
        eos_moved: "the special tokens differ (eos_token: '<|im_end|>' for the teacher, '<|endoftext|>' for the student)",
        turn_end: "they stop differently (the teacher stops on ['<|im_end|>'], the student on ['<|endoftext|>', "
                  "'<|im_end|>'])",
    }
    for student_dir, why in cases.items():
        spec = _spec(tmp_path, [{"name": "o", "base": str(student_dir), "training": "on_policy"}],
                     {"model": str(tiny_llama)})
        assert _errors(spec) == [f"spec error: students[0].base: on-policy distillation needs the tokenizer of its "
                                 f"teacher {tiny_llama}, but {why}"]
    # An SFT student of the run as the teacher: its base's tokenizer is what scores.
    assert _errors(_spec(tmp_path, [
        {"name": "sft", "base": str(eos_moved)},
        {"name": "o", "base": str(tiny_llama), "training": "on_policy", "on_policy": {"teacher": "sft"}}])) == [
        f"spec error: students[1].base: on-policy distillation needs the tokenizer of its student 'sft', but the "
        f"special tokens differ (eos_token: '<|endoftext|>' for the teacher, '<|im_end|>' for the student)"]
    assert _errors(_spec(tmp_path, [{"name": "o", "base": str(tiny_llama), "training": "on_policy"}],
                         {"model": str(tiny_llama)})) == []


def test_sft_students_keep_their_train_fingerprints():
    """The on-policy fields, left at their defaults, are not part of an SFT student's fingerprint."""
    from distill.spec import Student, student_fingerprint

    st = Student(name="s", base="b")
    assert student_fingerprint(st) == {k: v for k, v in st.model_dump().items()
                                       if k not in ("training", "init_from", "on_policy", "deepspeed", "use_liger_kernel")}
    op = Student(name="o", base="b", training="on_policy")
    assert student_fingerprint(op)["on_policy"]["beta"] == 1.0


def test_the_rollout_engine_gets_the_lora_students_merged_weights_under_the_base_names(tiny_llama):
    """What each round sends to the student's vLLM engine: the base model's parameter names, LoRA merged in."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from distill.training.on_policy import trainer_weights

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    names = [n for n, _ in base.named_parameters()]
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)  # a trained adapter: B is no longer zero
    merged = dict(copy.deepcopy(model).merge_and_unload().named_parameters())
    sent = trainer_weights(model)
    assert [n for n, _ in sent] == names
    assert all(torch.allclose(t, merged[n].detach(), atol=1e-6) for n, t in sent)
    assert not torch.allclose(dict(sent)["model.layers.0.self_attn.q_proj.weight"],
                              dict(base.named_parameters())["model.layers.0.self_attn.q_proj.base_layer.weight"])


def test_the_card_and_manifest_name_the_method_and_the_scoring_model(tiny_llama, tmp_path):
    from distill.pipeline.package import package_student
    from distill.spec import Student

    train = tmp_path / "train" / "opd"
    shutil.copytree(tiny_llama, train / "merged")
    (train / "train_stats.json").write_text(json.dumps({
        "examples": 16, "steps": 12, "train_loss": 0.01, "training": "on_policy", "init_from": "sft",
        "logprob_teacher": "student:sft", "loss": "TRL ServerDistillationTrainer, beta 1.0 (reverse KL)"}))
    out = tmp_path / "package" / "opd"
    out.mkdir(parents=True)
    scores = {"benchmarks": {}, "decoding": {"temperature": 0.6, "top_p": 0.95, "max_tokens": 64, "seed": 0}}
    lineage = {"teacher": "t", "spec_name": "s", "spec_hash": "h", "problems": 4, "generated": 8, "verified": 4,
               "kept": 4, "drop_reasons": {}}
    student = Student(name="opd", base="smollm2-135m", method="full", training="on_policy", init_from="sft")
    package_student(train, out, student, scores, None, lineage, gguf=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["training_method"], manifest["logprob_teacher"]) == ("on_policy", "student:sft")
    card = (out / "README.md").read_text()
    assert "- on-policy-distillation\n" in card.split("---")[1]
    assert ("Trained by on-policy distillation: it sampled its own completions of the run's prompts and learned the "
            "token log-probabilities **student:sft** gave them (TRL ServerDistillationTrainer, beta 1.0 (reverse KL)), "
            "starting from `sft`.") in card


# ---------------------------------------------------------------- a tiny real run

class _CrashAt:
    """An injected fault: the training process fails at `step` (after the checkpoint before it was written)."""

    def __new__(cls, step: int):
        from transformers import TrainerCallback

        class Crash(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step == step:
                    raise RuntimeError(f"injected crash at step {step}")

        return Crash()


def _teacher_of(student_dir, out):
    """A teacher with the student's tokenizer and a different, peaked output layer: something to distil."""
    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(student_dir, out)
    model = AutoModelForCausalLM.from_pretrained(out)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.lm_head.weight.copy_(torch.randn(model.lm_head.weight.shape, generator=gen) * 0.25)
    model.save_pretrained(out, safe_serialization=True)
    return out


@pytest.mark.slow
def test_a_tiny_on_policy_run_lowers_loss_and_heldout_kl_and_resumes(tmp_path, tiny_llama, ray_local):
    from distill.spec import Student
    from distill.training.on_policy import train_on_policy

    teacher = _teacher_of(tiny_llama, tmp_path / "teacher")
    prompts = [json.loads(line)["question"] for line in ARITH.read_text().splitlines()[:24]]
    student = Student.model_validate({
        "name": "op", "base": str(tiny_llama), "method": "full", "training": "on_policy", "epochs": 3,
        "learning_rate": 1e-2, "batch_size": 4, "save_steps": 4,
        "on_policy": {"max_completion_length": 16, "heldout_prompts": 8,
                      "engine": {"max_model_len": 256, "kv_cache_memory_bytes": 1 << 28}}})
    out, checkpoints = tmp_path / "train", tmp_path / "checkpoints"
    out.mkdir()
    common = dict(student_model=str(tiny_llama), teacher_model=str(teacher), teacher_label="tiny-teacher",
                  checkpoint_dir=checkpoints)
    with pytest.raises(RuntimeError, match="injected crash at step 6"):
        train_on_policy(prompts, out, student, 0, callbacks=[_CrashAt(6)], **common)
    assert (checkpoints / "checkpoint-4").is_dir() and not (out / "merged").exists()

    stats = train_on_policy(prompts, out, student, 0, **common)
    assert stats["resumed_from_step"] == 4 and stats["steps"] == 12  # 16 training prompts / 4 per step x 3 epochs
    assert stats["weight_syncs"] >= 12 - 4  # a rollout engine update before every round it ran
    first, last = stats["first_losses"], stats["last_losses"]
    assert sum(last) / len(last) < sum(first) / len(first), (first, last)
    before, after = stats["heldout_kl_before"], stats["heldout_kl_after"]
    assert 8 * 4 * 0.9 <= min(before["samples"], after["samples"])  # 4 samples of 8 held-out prompts (bar an empty one)
    assert after["reverse_kl_per_token"] < before["reverse_kl_per_token"], (before, after)
    assert stats["training"] == "on_policy" and stats["logprob_teacher"] == "tiny-teacher"
    assert (out / "merged" / "model.safetensors").exists()
    assert not checkpoints.exists()  # finished: a later re-train starts fresh
