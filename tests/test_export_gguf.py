"""GGUF export round trip: the F16 file generates exactly what the merged model does, the Q8_0 file agrees on the
next token almost everywhere, and both carry the tokenizer, the end-of-turn token and the chat template.

Loaded back with transformers' own GGUF reader (`from_pretrained(dir, gguf_file=...)`), which undoes llama.cpp's
conventions (Llama's q/k permutation, tied embeddings without `output.weight`, token types) independently of us.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from distill.dataset import assistant_turn
from distill.export.gguf import GGUFUnsupported, export_gguf
from tests.conftest import FAMILIES

PROMPTS = ["What is 2 + 3?", "What is 4 + 4?", "Name a prime number."]
EXAMPLES = [("What is 2 + 3?", "5"), ("What is 4 + 4?", "8")]


def _load(model_dir, gguf_dir=None, gguf_file=None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if gguf_file is None:
        return AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    # transformers' GGUF config map has no `attention.key_length` for qwen3 (it has it for qwen3_moe), so it
    # falls back to Qwen3Config's default head_dim 128; the file carries the right one (checked below).
    extra = {"head_dim": cfg["head_dim"]} if cfg["model_type"] == "qwen3" else {}
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32, **extra)
    return model, AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)


def _prompt_ids(tok, prompt):
    return tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                   tokenize=False)


def _compare(model_dir, gguf_dir, name, max_new_tokens=24, q8_0=True):
    """(F16 greedy outputs identical on every prompt, Q8_0 top-1 agreement over the greedy continuations)."""
    import torch

    ref, tok = _load(model_dir)
    f16, f16_tok = _load(model_dir, gguf_dir, f"{name}-F16.gguf")
    q8 = _load(model_dir, gguf_dir, f"{name}-Q8_0.gguf")[0] if q8_0 else None
    identical, agree, total = True, 0, 0
    for prompt in PROMPTS:
        text = _prompt_ids(tok, prompt)
        ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
        # the GGUF's own tokenizer (built by transformers from tokens, merges and pre-tokenizer name) agrees
        assert f16_tok(text, add_special_tokens=False).input_ids == ids[0].tolist()
        with torch.no_grad():
            want = ref.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
            got = f16.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
            identical &= torch.equal(want, got)
            if q8 is not None:
                a, b = ref(want).logits.argmax(-1), q8(want).logits.argmax(-1)
                agree, total = agree + int((a == b).sum()), total + a.numel()
    return identical, agree / total if total else None


def _metadata(path):
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    # the token and merge lists are read as counts: decoding 49k strings in Python takes seconds
    fields = {k: len(f.data) if k in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges") else f.contents()
              for k, f in r.fields.items()}
    return fields, {t.name: t.tensor_type.name for t in r.tensors}


# Qwen3 (added `<think>` tokens, q/k norms, explicit head_dim) in the fast suite; the others with the slow ones.
@pytest.mark.parametrize("family", [pytest.param("qwen2_5", marks=pytest.mark.slow), "qwen3",
                                    pytest.param("llama3", marks=pytest.mark.slow)])
def test_family_gguf_carries_tokenizer_and_template(family, tiny_family, tmp_path):
    """Untrained tiny students (fast): the metadata, and the Q8_0 weight error bound."""
    from gguf import GGUFReader, GGMLQuantizationType
    from gguf.quants import dequantize
    from transformers import AutoTokenizer

    base = tiny_family(family)
    written = export_gguf(base, tmp_path, "tiny")
    assert [w.path.name for w in written] == ["tiny-F16.gguf", "tiny-Q8_0.gguf"]
    tok = AutoTokenizer.from_pretrained(base)
    fields, types = _metadata(tmp_path / "tiny-F16.gguf")
    arch = FAMILIES[family][0]
    assert fields["general.architecture"] == arch
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.pre"] == {"qwen2_5": "qwen2", "qwen3": "llama-bpe", "llama3": "llama-bpe"}[family]
    assert fields["tokenizer.chat_template"] == tok.chat_template
    eot = tok.convert_tokens_to_ids(FAMILIES[family][3])
    assert fields["tokenizer.ggml.eot_token_id"] == eot and fields["tokenizer.ggml.eos_token_id"] == eot
    assert fields["tokenizer.ggml.tokens"] == len(tok) and fields["tokenizer.ggml.merges"] > 0
    token_types = fields["tokenizer.ggml.token_type"]
    assert token_types[eot] == 3  # CONTROL
    if family == "qwen3":
        assert token_types[tok.convert_tokens_to_ids("<think>")] == 4  # USER_DEFINED: shown in output
        assert fields["qwen3.attention.key_length"] == 32
    if arch == "qwen2":
        assert "blk.0.attn_q.bias" in types
    if arch == "qwen3":
        assert "blk.0.attn_q_norm.weight" in types
    assert types["blk.0.attn_norm.weight"] == "F32" and types["blk.0.attn_q.weight"] == "F16"

    # Q8_0: every weight within half a quantisation step of the original (blocks of 32, step = max/127, stored
    # as f16: its rounding adds up to 127 * 2^-11 of a step)
    from safetensors.numpy import load_file

    hf = load_file(str(base / "model.safetensors"))
    q8 = {t.name: t for t in GGUFReader(str(tmp_path / "tiny-Q8_0.gguf")).tensors}
    t = q8["blk.0.ffn_down.weight"]
    assert t.tensor_type == GGMLQuantizationType.Q8_0
    orig = hf["model.layers.0.mlp.down_proj.weight"]
    step = np.abs(orig.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
    err = np.abs(dequantize(t.data, t.tensor_type).reshape(-1, 32) - orig.reshape(-1, 32))
    assert (err <= step * (0.5 + 127 * 2**-11) + 1e-7).all()


def test_untrained_llama3_f16_round_trips(tiny_family, tmp_path):
    """Fast: Llama's q/k permutation undone by transformers' reader gives back the exact model."""
    base = tiny_family("llama3")
    export_gguf(base, tmp_path, "tiny", quants=("F16",))
    identical, _ = _compare(base, tmp_path, "tiny", max_new_tokens=12, q8_0=False)
    assert identical


def _sft_dir(tmp_path):
    import datasets

    rows = [{"prompt": [{"role": "user", "content": q}],
             "completion": [{"role": "assistant", "content": assistant_turn(f"{q[8:-1]} = {a}", a, "correct")}]}
            for q, a in EXAMPLES]
    sft = tmp_path / "sft"
    datasets.Dataset.from_list(rows).save_to_disk(str(sft / "hf"))
    return sft


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2_5", "qwen3", "llama3"])
def test_trained_family_student_round_trips(family, tiny_family, tmp_path):
    """The EOS tests' students, trained the same way (full SFT until they answer and stop): F16 greedy output
    identical to the merged model's, Q8_0 top-1 next-token agreement >= 99%."""
    from distill.spec import Student
    from distill.train import train_student

    student = Student(name=f"f-{family}", base=str(tiny_family(family)), method="full", epochs=60,
                      learning_rate=1e-2, batch_size=4, max_length=256)
    out = tmp_path / "train"
    out.mkdir()
    train_student(_sft_dir(tmp_path), out, student, seed=0)
    export_gguf(out / "merged", tmp_path / "gguf", student.name)
    identical, agreement = _compare(out / "merged", tmp_path / "gguf", student.name)
    print(f"{family}: F16 identical {identical}, Q8_0 top-1 agreement {agreement:.4f}")
    assert identical
    assert agreement >= 0.99


@pytest.mark.slow
def test_smollm2_student_round_trips(tmp_path):
    """The real SmolLM2-135M (a Llama with tied embeddings and GPT-2 pre-tokenizer)."""
    from pathlib import Path

    from distill.models import resolve_model

    base = Path(resolve_model("smollm2-135m"))
    export_gguf(base, tmp_path, "smollm2")
    fields, types = _metadata(tmp_path / "smollm2-F16.gguf")
    assert "output.weight" not in types  # tied: llama.cpp reuses token_embd
    assert fields["tokenizer.ggml.pre"] == "gpt2"
    identical, agreement = _compare(base, tmp_path, "smollm2")
    print(f"smollm2-135m: F16 identical {identical}, Q8_0 top-1 agreement {agreement:.4f}")
    assert identical
    assert agreement >= 0.99


def test_unsupported_architecture_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(GGUFUnsupported, match=r"^architecture 'gpt2' \(GGUF export knows llama, qwen2, qwen3\)$"):
        export_gguf(tmp_path, tmp_path / "gguf", "x")
