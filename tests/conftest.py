"""Shared fixtures: tiny random-init students (Llama and Qwen2 shapes) and a clean Ray per session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _tiny(arch: str, out: Path) -> Path:
    """A ~3M-parameter random model of `arch` with SmolLM2's tokenizer and ChatML template (no download)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from distill.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  # head_dim 32 (64 / 2 heads): the smallest head size vLLM's CPU attention supports
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                  tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**common)) if arch == "llama" else Qwen2ForCausalLM(Qwen2Config(**common))
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
def ray_local():
    import ray

    from distill import cluster

    cluster.ensure_ray()
    yield
    ray.shutdown()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_spec(name: str, output_dir: str, student_base, with_eval: bool = True) -> dict:
    """The smallest real spec: SmolLM2-135M teacher on 12 arithmetic problems x 6 samples (a few verify), a tiny
    LoRA student, and (optionally) a 2+2-problem eval. Used by the end-to-end and the cluster tests."""
    spec = {
        "name": name,
        "output_dir": output_dir,
        "seed": 0,
        "teacher": {"model": "smollm2-135m", "num_cpus": 2, "batch_size": 64,
                    "engine": {"max_model_len": 512, "enforce_eager": True}},
        "prompts": {"sources": [{"path": str(REPO / "datasets_spec/data/arithmetic.jsonl"),
                                 "fields": {"problem": "question", "answer": "answer"}, "limit": 12}]},
        "sampling": {"n": 6, "temperature": 0.7, "top_p": 0.95, "max_tokens": 128},
        "students": [{"name": "tiny-lora", "base": str(student_base), "method": "lora", "epochs": 2,
                      "learning_rate": 1e-2, "batch_size": 4, "max_length": 512}],
    }
    if with_eval:
        spec["eval"] = {"benchmarks": [{"name": "gsm8k_test", "problems": 2}, {"name": "amc23", "problems": 2}],
                        "k": 2, "max_tokens": 24}
    return spec
