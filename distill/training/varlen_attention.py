"""Padding-free attention without flash-attn: one causal SDPA call per packed sequence.

Why this is hand-written: TRL's padding-free batches flatten a whole batch into one row and pass the sequence
boundaries as `cu_seq_lens_q`. flash-attn's varlen kernel (and torch's `varlen_attn`) use them directly, but both
exist only on CUDA. Without them transformers' `sdpa` builds a dense block-diagonal mask over the flattened row
((batch x max_length)^2 entries, 8192^2 for 8 bins of 1024) and attends over all of it, which on CPU costs more
than the padding that packing saves (bench/sft.py: 0.98x with the dense mask). Here attention is computed per
sequence, so its cost is the sum of the squared sequence lengths, as with flash-attn's varlen kernel.

Registered under its own name, transformers builds no mask at all for it (`masking_utils` skips mask creation for
attention functions it has no mask function for), so it is only valid for batches that carry `cu_seq_lens_q`
(TRL's padding-free collator) or a single unpadded sequence; anything else is refused.
"""

from __future__ import annotations

import contextlib

NAME = "distill_varlen_sdpa"


def varlen_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                is_causal: bool | None = None, **kwargs):
    """transformers attention function: query (1, heads, tokens, dim), key/value (1, kv_heads, tokens, dim)."""
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:  # grouped-query attention: SDPA's enable_gqa is not taken by every CPU kernel
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    dropout = dropout if module.training else 0.0
    with _no_cudnn(query):
        return _attend(query, key, value, attention_mask, dropout, scaling, kwargs.get("cu_seq_lens_q"))


def _no_cudnn(query):
    """On CUDA, SDPA prefers cuDNN's kernel, which builds a graph for every new input shape. Called once per packed
    sequence, nearly every call is a new length: on an H200 that setup took 1.6 ms (forward) and 2.6 ms (backward)
    of CPU per call, and a 1B student's packed bf16 step was CPU-bound (GPU busy 0.53 of 1.3 s, 11% MFU). Flash
    attention (then memory-efficient) has no per-shape setup; the backward pass follows the forward's kernel."""
    if not query.is_cuda:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def _attend(query, key, value, attention_mask, dropout: float, scaling: float | None, cu):
    import torch
    import torch.nn.functional as F

    if cu is None:
        if query.shape[0] != 1 or attention_mask is not None:
            raise ValueError(f"{NAME} needs packed, padding-free batches (cu_seq_lens_q); got a padded batch of "
                             f"{query.shape[0]} rows: load the model with attn_implementation='sdpa' for those")
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, scale=scaling,
                                             is_causal=query.shape[2] > 1)
        return out.transpose(1, 2).contiguous(), None
    bounds = cu.tolist()
    parts = [F.scaled_dot_product_attention(query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], dropout_p=dropout,
                                            scale=scaling, is_causal=True)
             for s, e in zip(bounds[:-1], bounds[1:]) if e > s]
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


def register() -> str:
    """Make NAME usable as `attn_implementation` (idempotent) and return it."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_sdpa)
    return NAME


def best_for_packing() -> str:
    """The attention for padding-free training here: flash-attn's varlen kernel where it is installed (CUDA),
    else the per-sequence SDPA above."""
    import importlib.util

    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return register()
