"""The padding-free attention: a packed row gives the same logits as each sequence run on its own under SDPA,
and a padded batch (which it cannot mask) is refused rather than silently attended across."""

from __future__ import annotations

import pytest


def _models(base):
    from transformers import AutoModelForCausalLM

    from distill.training.varlen_attention import register

    ref = AutoModelForCausalLM.from_pretrained(base, attn_implementation="sdpa").eval()
    packed = AutoModelForCausalLM.from_pretrained(base, attn_implementation=register()).eval()
    return ref, packed


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_packed_row_matches_separate_sequences(arch, request):
    import torch

    ref, packed = _models(request.getfixturevalue(f"tiny_{arch}"))
    torch.manual_seed(0)
    lengths = [7, 19, 1, 12]
    seqs = [torch.randint(0, 1000, (n,)) for n in lengths]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    with torch.no_grad():
        out = packed(input_ids=torch.cat(seqs)[None], position_ids=position_ids, cu_seq_lens_q=cu,
                     cu_seq_lens_k=cu, max_length_q=max(lengths), max_length_k=max(lengths)).logits[0]
        want = torch.cat([ref(input_ids=s[None]).logits[0] for s in seqs])
    torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-4)
    # Without the boundaries the packed row is one sequence: later sequences then see earlier ones.
    with torch.no_grad():
        leaky = packed(input_ids=torch.cat(seqs)[None]).logits[0]
    assert not torch.allclose(leaky[lengths[0]:], want[lengths[0]:], atol=1e-3)


def test_padded_batch_is_refused(tiny_llama):
    import torch

    _, packed = _models(tiny_llama)
    ids = torch.randint(0, 1000, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with pytest.raises(ValueError, match="padding-free"):
        packed(input_ids=ids, attention_mask=mask)
