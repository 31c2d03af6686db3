"""GGUF round trip checks shared by the export tests and the EOS (training) tests.

The GGUF files are loaded back with transformers' own GGUF reader (`from_pretrained(dir, gguf_file=...)`), which
undoes llama.cpp's conventions (Llama's q/k permutation, tied embeddings without `output.weight`, token types)
independently of distill's writer.
"""

from __future__ import annotations

import json
from pathlib import Path

PROMPTS = ["What is 2 + 3?", "What is 4 + 4?", "Name a prime number."]


def load(model_dir: Path, gguf_dir: Path | None = None, gguf_file: str | None = None, tokenizer: bool = True):
    """(model, tokenizer or None). Each GGUF read parses the whole vocabulary in Python (~5 s for 49k tokens on 2
    busy cores): a caller that does not use the tokenizer asks for none."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if gguf_file is None:
        return AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    # transformers' GGUF config map has no `attention.key_length` for qwen3 (it has it for qwen3_moe), so it
    # falls back to Qwen3Config's default head_dim 128; the file carries the right one (test_export_gguf checks).
    extra = {"head_dim": cfg["head_dim"]} if cfg["model_type"] == "qwen3" else {}
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32, **extra)
    return model, AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file) if tokenizer else None


def compare(model_dir, gguf_dir, name, prompts=PROMPTS, max_new_tokens=24, q8_0=True):
    """(whether the F16 file's greedy outputs equal the merged model's on every prompt, and the Q8_0 file's
    top-1 agreement with the merged model at every position where the merged model chose a generated token)."""
    import torch

    ref, tok = load(model_dir)
    f16, f16_tok = load(model_dir, gguf_dir, f"{name}-F16.gguf")
    q8 = load(model_dir, gguf_dir, f"{name}-Q8_0.gguf", tokenizer=False)[0] if q8_0 else None
    identical, agree, total = True, 0, 0
    for prompt in prompts:
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                       tokenize=False)
        ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
        # the GGUF's own tokenizer (rebuilt by transformers from tokens, merges and pre-tokenizer name) agrees
        assert f16_tok(text, add_special_tokens=False).input_ids == ids[0].tolist()
        with torch.no_grad():
            want = ref.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
            got = f16.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
            identical &= torch.equal(want, got)
            if q8 is not None:
                # the positions that predicted the generated tokens: the model's own next-token choices
                span = slice(ids.shape[1] - 1, want.shape[1] - 1)
                a, b = ref(want).logits[0, span].argmax(-1), q8(want).logits[0, span].argmax(-1)
                agree, total = agree + int((a == b).sum()), total + a.numel()
    return identical, (agree / total if total else None)


def conversations(n: int) -> list[list[dict]]:
    """The first n GSM8K problems of datasets_spec/data/gsm8k_sample.jsonl as user/assistant conversations with
    their reference solutions: real, varied text (prose, numbers, GSM8K's <<a+b=c>> calculator notes), fixed."""
    path = Path(__file__).resolve().parent.parent / "datasets_spec" / "data" / "gsm8k_sample.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()[:n]]
    return [[{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}]
            for r in rows]


def teacher_forced_agreement(model_dir, gguf_dir, gguf_file: str, convs: list[list[dict]]) -> tuple[int, int]:
    """(positions where the GGUF model's top-1 next token equals the merged model's, positions), over every
    assistant-turn position of each conversation, both models fed the same reference text (teacher forcing):
    the positions at which a chat model generates, on text neither model chose."""
    import torch

    ref, tok = load(model_dir)
    other = load(model_dir, gguf_dir, gguf_file, tokenizer=False)[0]
    agree = total = 0
    for conv in convs:
        ids = tok(tok.apply_chat_template(conv, tokenize=False), add_special_tokens=False,
                  return_tensors="pt").input_ids
        prompt = tok(tok.apply_chat_template(conv[:-1], tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False).input_ids
        assert ids[0, :len(prompt)].tolist() == prompt
        span = slice(len(prompt) - 1, ids.shape[1] - 1)  # the positions that predict the assistant's tokens
        with torch.no_grad():
            a, b = ref(ids).logits[0, span].argmax(-1), other(ids).logits[0, span].argmax(-1)
        agree, total = agree + int((a == b).sum()), total + a.numel()
    return agree, total


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion k/n (sound near 0 and 1, unlike the normal approximation)."""
    import math

    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)
