"""Shared fixtures: tiny random-init students (Llama and Qwen2 shapes) and a clean Ray per session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Llama-3's (and Qwen2's) pre-tokenizer pattern: "\n\n" before "<think>" stays one piece, as in the real
# tokenizers (SmolLM2's GPT-2 pattern splits it differently in a prompt alone and in prompt + completion).
LLAMA3_PRETOKENIZE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                      r"\s*[\r\n]+|\s+(?!\S)|\s+")
# family -> (architecture, special tokens to add, other added tokens, EOS, TRL's copy of the original template)
FAMILIES = {
    "qwen2_5": ("qwen2", [], [], "<|im_end|>", "qwen2_5"),
    "qwen3": ("qwen3", [], ["<think>", "</think>"], "<|im_end|>", "qwen3"),
    "llama3": ("llama", ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], [],
               "<|eot_id|>", "llama3_1"),
}


def family_tokenizer(family: str):
    """SmolLM2's vocabulary dressed as a model family: its special tokens, pre-tokenizer, EOS and chat template."""
    from tokenizers import Regex, pre_tokenizers
    from transformers import AutoTokenizer

    from distill.training.chat_templates import template_text
    from distill.models import resolve_model

    _, special, added, eos, template = FAMILIES[family]
    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    if special:
        tok.add_special_tokens({"additional_special_tokens": special})
    tok.add_tokens(added)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PRETOKENIZE), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    if family == "llama3":
        tok.bos_token = "<|begin_of_text|>"
    tok.eos_token = eos
    tok.chat_template = template_text(template)
    return tok


def _tiny(arch: str, out: Path, tok=None) -> Path:
    """A ~3M-parameter random model of `arch` with SmolLM2's tokenizer and ChatML template (no download), or the
    tokenizer given."""
    import torch
    from transformers import (AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                              Qwen3Config, Qwen3ForCausalLM)

    from distill.models import resolve_model

    tok = tok or AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  # head_dim 32 (64 / 2 heads): the smallest head size vLLM's CPU attention supports
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                  tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    cls, cfg = {"llama": (LlamaForCausalLM, LlamaConfig), "qwen2": (Qwen2ForCausalLM, Qwen2Config),
                "qwen3": (Qwen3ForCausalLM, Qwen3Config)}[arch]
    model = cls(cfg(**common, **({"head_dim": 32} if arch == "qwen3" else {})))
    # An output layer at the default init (std 0.02) caps every logit near 1: no distribution can peak, so a
    # LoRA over a frozen random base could never learn to emit EOS. At std ~0.25 logits have room to peak.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(12)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return _tiny("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    return _tiny("qwen2", tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory):
    """family name -> a tiny random model of that family's architecture, tokenizer and chat template."""
    made: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in made:
            made[family] = _tiny(FAMILIES[family][0], tmp_path_factory.mktemp(f"tiny-{family}"),
                                 family_tokenizer(family))
        return made[family]

    return make


# The EOS tests' two SFT examples (tests/test_train.py), also the GGUF round trip's training data.
EXAMPLES = [("What is 2 + 3?", "5"), ("What is 4 + 4?", "8")]


def sft_dir(root: Path) -> Path:
    """An sft stage's output holding EXAMPLES, each answered with reasoning and a boxed answer."""
    import datasets

    from distill.pipeline.sft import assistant_turn

    rows = [{"prompt": [{"role": "user", "content": q}],
             "completion": [{"role": "assistant", "content": assistant_turn(f"{q[8:-1]} = {a}", a, "correct")}]}
            for q, a in EXAMPLES]
    sft = root / "sft"
    datasets.Dataset.from_list(rows).save_to_disk(str(sft / "hf"))
    return sft


@pytest.fixture(scope="session")
def trained_family(tiny_family, tmp_path_factory):
    """family name -> the merged directory of that family's tiny student after full SFT on EXAMPLES until it
    answers and ends its turn. Trained once per session (minutes on 2 cores): the EOS test (tests/test_train.py)
    checks it stops at its end-of-turn token, the GGUF test (tests/test_export_gguf.py) exports the same student.
    Tests read it and write elsewhere."""
    from distill.pipeline.train import train_student
    from distill.spec import Student

    made: dict[str, Path] = {}

    def train(family: str) -> Path:
        if family not in made:
            root = tmp_path_factory.mktemp(f"trained-{family}")
            student = Student(name=f"f-{family}", base=str(tiny_family(family)), method="full", epochs=60,
                              learning_rate=1e-2, batch_size=4, max_length=256)
            out = root / "train"
            out.mkdir()
            train_student(sft_dir(root), out, student, seed=0)
            made[family] = out / "merged"
        return made[family]

    return train


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from distill import cluster

    cluster.ensure_ray()
    yield
    ray.shutdown()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _ask(problem: str) -> str:
    from distill.spec import DEFAULT_TEMPLATE

    return DEFAULT_TEMPLATE.replace("{problem}", problem)


def tiny_spec(name: str, output_dir: str, student_base, with_eval: bool = True) -> dict:
    """The smallest real spec: SmolLM2-135M teacher on 12 arithmetic problems x 6 samples, a tiny LoRA student, and
    (optionally) a 2+2-problem eval. Used by the end-to-end and the cluster tests.

    Generation is most of these tests' time. Without examples most samples ramble on to max_tokens and one in 72
    verifies; shown two worked turns (`teacher.examples`, as examples/gain.yaml does) the teacher answers in a line
    or two and a boxed number, so generation is short and the tests do not hang on a single verified sample."""
    spec = {
        "name": name,
        "output_dir": output_dir,
        "seed": 0,
        "teacher": {"model": "smollm2-135m", "num_cpus": 2, "batch_size": 64,
                    "examples": [{"user": _ask("Tom has 15 marbles and gives away 7. How many marbles are left?"),
                                  "assistant": "15 - 7 = 8\nThe answer is \\boxed{8}."},
                                 {"user": _ask("Sue has 23 stickers and gets 14 more. How many stickers does "
                                               "Sue have now?"),
                                  "assistant": "23 + 14 = 37\nThe answer is \\boxed{37}."}],
                    "engine": {"max_model_len": 512, "enforce_eager": True}},
        "prompts": {"sources": [{"path": str(REPO / "datasets_spec/data/arithmetic.jsonl"),
                                 "fields": {"problem": "question", "answer": "answer"}, "limit": 12}]},
        "sampling": {"n": 6, "temperature": 0.7, "top_p": 0.95, "max_tokens": 64},
        "students": [{"name": "tiny-lora", "base": str(student_base), "method": "lora", "epochs": 2,
                      "learning_rate": 1e-2, "batch_size": 4, "max_length": 512}],
    }
    if with_eval:
        spec["eval"] = {"benchmarks": [{"name": "gsm8k_test", "problems": 2}, {"name": "amc23", "problems": 2}],
                        "k": 2, "max_tokens": 24}
    return spec
