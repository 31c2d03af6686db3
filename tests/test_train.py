"""SFT of tiny Llama and Qwen2 students (LoRA and full): the trained student emits EOS and stops."""

from __future__ import annotations

import json

import pytest

from distill.pipeline.train import train_student
from distill.spec import Student
from tests.conftest import EXAMPLES, FAMILIES, sft_dir


def _generate(model_dir, prompt: str, max_new_tokens: int = 64) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, ids["input_ids"].shape[1]:].tolist(), tok


# Full fine-tuning of each architecture is in the per-family test below (Llama-3: Llama, Qwen2.5: Qwen2).
@pytest.mark.slow  # trains
@pytest.mark.parametrize("arch,method,lr,epochs", [
    ("llama", "lora", 1e-2, 100),
    ("qwen2", "lora", 1e-2, 100),
])
def test_trained_student_stops_with_eos(arch, method, lr, epochs, tmp_path, request):
    base = request.getfixturevalue(f"tiny_{arch}")
    student = Student(name=f"t-{arch}-{method}", base=str(base), method=method, epochs=epochs,
                      learning_rate=lr, batch_size=4, max_length=128,
                      lora={"r": 32, "alpha": 64, "dropout": 0.0})
    out = tmp_path / "train"
    out.mkdir()
    stats = train_student(sft_dir(tmp_path), out, student, seed=0)
    assert stats["examples"] == len(EXAMPLES) and stats["dropped_over_max_length"] == 0
    assert stats["train_loss"] > 0
    assert (out / "merged" / "model.safetensors").exists()
    assert (out / "adapter").exists() == (method == "lora")
    assert json.loads((out / "merged" / "generation_config.json").read_text())["eos_token_id"] is not None

    generated, tok = _generate(out / "merged", EXAMPLES[0][0])
    assert tok.eos_token_id in generated, tok.decode(generated)
    text = tok.decode(generated[: generated.index(tok.eos_token_id)])
    assert "</think>" in text and "\\boxed{5}" in text, text


def test_over_long_examples_are_dropped_not_truncated(tmp_path, tiny_llama):
    student = Student(name="t", base=str(tiny_llama), method="full", epochs=1, max_length=16)
    out = tmp_path / "train"
    out.mkdir()
    with pytest.raises(ValueError, match="longer than max_length=16: 2"):
        train_student(sft_dir(tmp_path), out, student, seed=0)


@pytest.mark.slow  # trains
def test_end_of_turn_token_stops_a_student_whose_eos_differs(tmp_path, tiny_qwen2):
    """A base model whose EOS is not the template's end-of-turn token (Qwen2.5-Math: EOS `<|endoftext|>`, turns
    end with `<|im_end|>`) must still get a generation config that stops at the end of its turn."""
    import shutil

    from transformers import AutoTokenizer

    base = tmp_path / "base"
    shutil.copytree(tiny_qwen2, base)
    tok = AutoTokenizer.from_pretrained(base)
    tok.eos_token = "<|endoftext|>"
    tok.save_pretrained(base)
    student = Student(name="q", base=str(base), method="full", epochs=60, learning_rate=1e-2, batch_size=4,
                      max_length=128)
    out = tmp_path / "train"
    out.mkdir()
    train_student(sft_dir(tmp_path), out, student, seed=0)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    eos = json.loads((out / "merged" / "generation_config.json").read_text())["eos_token_id"]
    assert eos == [tok.convert_tokens_to_ids("<|endoftext|>"), im_end]
    generated, _ = _generate(out / "merged", EXAMPLES[0][0])
    assert generated[-1] == im_end and len(generated) < 64  # stopped at the end of its turn



@pytest.mark.slow  # trains (once per session: the GGUF test exports the same students)
@pytest.mark.parametrize("family", ["qwen2_5", "qwen3", "llama3"])
def test_each_family_template_student_stops_at_its_end_of_turn(family, trained_family):
    """Qwen2.5, Qwen3 and Llama-3 chat templates (TRL's copies of the originals), each with its own special
    tokens: the student learns `<think>` reasoning and ends its turn with the family's end-of-turn token."""
    merged = trained_family(family)
    generated, tok = _generate(merged, EXAMPLES[0][0])
    end_of_turn = tok.convert_tokens_to_ids(FAMILIES[family][3])
    assert end_of_turn in json.loads((merged / "generation_config.json").read_text())["eos_token_id"]
    assert generated[-1] == end_of_turn and len(generated) < 64, tok.decode(generated)
    text = tok.decode(generated[:-1])
    assert "</think>" in text and "\\boxed{5}" in text, text


def test_template_that_drops_reasoning_is_refused(tmp_path, tiny_qwen2):
    """DeepSeek-R1-Distill's template re-renders assistant turns without their reasoning: training through it
    would teach answers without reasoning, so it is refused by name before any training."""
    student = Student(name="r1", base=str(tiny_qwen2), method="full", epochs=1, chat_template="deepseek_r1_distill")
    out = tmp_path / "train"
    out.mkdir()
    with pytest.raises(ValueError, match="drops the reasoning"):
        train_student(sft_dir(tmp_path), out, student, seed=0)


def test_unknown_chat_template_names_the_field():
    with pytest.raises(ValueError, match="student.chat_template: unknown template 'qwen9'"):
        Student(name="x", base="b", chat_template="qwen9")
