"""What training does on GPUs that a CPU cannot show, checked on a machine with CUDA GPUs (run it when one is lent):

  1. bf16 training through the train stage (`distill.pipeline.train.train_student`, full fine-tuning, packed):
     tokens/s and MFU = 6 x parameters x tokens/s / the GPU's peak bf16 FLOP/s (the 6N rule: forward + backward
     matmuls; attention's own FLOPs left out, so MFU is slightly understated).
  2. FSDP's final save: `torchrun` starts one process per GPU (one process on a 1-GPU machine: a world of one
     still goes through FSDP's sharding and the full-state-dict gather), each trains a few steps under FSDP
     (`full_shard auto_wrap`, `FULL_STATE_DICT`) and calls `save_trained`; rank 0 writes. The check loads
     `merged/` and the Trainer's last checkpoint back with transformers and compares every tensor's shape with the
     base model's (a rank's shard would be smaller or missing), and checks that training changed the weights.
  3. A long trace (--long-tokens, default 16k) with gradient checkpointing, and the Liger kernel when
     liger-kernel is installed: the peak GPU memory.

    python bench/gpu_train_check.py [--base smollm2-135m] [--peak-tflops 989] [--long-tokens 16384]

The last line reads `gpu_train_check tokens_per_s T mfu M fsdp_full_state_dict ok long_trace_peak_gib G`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def sft_dir(root: Path, n: int, words: int) -> Path:
    """n prompt-completion examples whose reasoning runs about `words` words (lengths vary 1x-3x, like traces)."""
    import datasets

    from distill.pipeline.sft import assistant_turn

    out = root / f"sft-{n}-{words}"
    if (out / "train.parquet").exists():  # made already by an earlier check
        return out
    rows = []
    for i in range(n):
        a, b = 17 * i + 3, 29 * i + 11
        n_steps = words * (1 + i % 3) // 10
        steps = " ".join(f"Step {k}: {a} plus {k} is {a + k}, so we keep going." for k in range(n_steps))
        rows.append({"prompt": [{"role": "user", "content": f"What is {a} + {b}?"}],
                     "completion": [{"role": "assistant",
                                     "content": assistant_turn(steps, str(a + b), "correct")}]})
    out.mkdir()
    datasets.Dataset.from_list(rows).to_parquet(str(out / "train.parquet"))  # the sft stage's contract
    return out


def parameters(model_dir: Path) -> int:
    from safetensors import safe_open

    n = 0
    for f in model_dir.glob("*.safetensors"):
        with safe_open(f, "pt") as st:
            for k in st.keys():
                n += math.prod(st.get_slice(k).get_shape())
    return n


def bf16_throughput(base: str, root: Path, peak_tflops: float) -> tuple[float, float]:
    from distill.pipeline.train import train_student
    from distill.spec import Student

    student = Student(name="bf16", base=base, method="full", bf16=True, epochs=1, batch_size=16, max_length=4096,
                      learning_rate=1e-5, save_steps=1000)
    out = root / "bf16"
    out.mkdir()
    stats = train_student(sft_dir(root, 256, 600), out, student, seed=0)
    n = parameters(out / "merged")
    tps = stats["tokens_per_second"]
    mfu = 6 * n * tps / (peak_tflops * 1e12)
    print(f"bf16: {n / 1e6:.1f}M parameters, {stats['steps']} steps, {tps:,.0f} tokens/s, MFU {mfu:.1%}", flush=True)
    return tps, mfu


def fsdp_worker(args) -> None:
    """One torchrun rank: a few FSDP steps, then the final save every rank takes part in."""
    from distill.spec import Student
    from distill.training.final_weights import save_trained
    from distill.training.sft import build_trainer, load_sft, tokenizer_for

    # fsdp is validated for workers > 1 (the spec's single worker trains without torch.distributed); here
    # torchrun sets up the process group for any number of GPUs, so the validated fields are taken as they are.
    student = Student(name="fsdp", base=args.base).model_copy(update={
        "method": args.method, "fsdp": True, "bf16": True, "gpus_per_worker": 1, "workers": 2, "max_length": 1024,
        "batch_size": 4, "epochs": 1, "learning_rate": 1e-4, "save_steps": 4})
    ds, _, _ = load_sft(Path(args.sft), student)
    trainer = build_trainer(ds.select(range(min(len(ds), 32))), student, Path(args.out) / "checkpoints", seed=0,
                            max_steps=8)
    assert trainer.is_fsdp_enabled, "FSDP did not engage"
    trainer.train()
    rank0 = int(os.environ.get("RANK", "0")) == 0
    save_trained(trainer, tokenizer_for(student), student, Path(args.out) if rank0 else None)


def fsdp_check(base: str, root: Path, method: str) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from distill.models import resolve_model

    out = root / f"fsdp-{method}"
    out.mkdir()
    sft = sft_dir(root, 64, 100)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={torch.cuda.device_count()}",
           __file__, "--fsdp-worker", "--base", base, "--method", method, "--sft", str(sft), "--out", str(out)]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # keep the caller's packages
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": path}, timeout=900)

    reference = AutoModelForCausalLM.from_pretrained(resolve_model(base), dtype=torch.float32).state_dict()
    merged = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32).state_dict()
    assert set(merged) == set(reference), f"keys differ: {sorted(set(merged) ^ set(reference))[:5]}"
    bad = [k for k in reference if merged[k].shape != reference[k].shape]
    assert not bad, f"sharded or wrong shapes in merged/: {bad[:5]}"
    changed = sum(not torch.equal(merged[k], reference[k]) for k in reference)
    assert changed > 0, "merged/ holds the base weights: training did not reach the save"
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert checkpoints, "FSDP wrote no checkpoint"
    saved = {}
    for f in checkpoints[-1].glob("*.safetensors"):
        saved.update(load_file(f))
    if method == "full":
        small = [k for k, v in saved.items() if k in reference and v.shape != reference[k].shape]
        assert saved and not small, f"the checkpoint holds shards: {small[:5]}"
    print(f"fsdp ({method}): merged/ {len(merged)} tensors, full shapes, {changed} changed; "
          f"{checkpoints[-1].name}: {len(saved)} tensors whole", flush=True)


def long_trace(base: str, root: Path, tokens: int) -> float:
    import importlib.util

    import torch

    from distill.pipeline.train import train_student
    from distill.spec import Student

    liger = importlib.util.find_spec("liger_kernel") is not None
    student = Student(name="long", base=base, method="lora", bf16=True, epochs=1, batch_size=1, max_length=tokens,
                      gradient_checkpointing=True, use_liger_kernel=liger, save_steps=1000)
    torch.cuda.reset_peak_memory_stats()
    out = root / "long"
    out.mkdir()
    stats = train_student(sft_dir(root, 4, tokens // 4), out, student, seed=0)
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"long traces ({tokens} max tokens, {stats['examples']} kept, liger {liger}): peak {peak:.1f} GiB, "
          f"{stats['tokens_per_second']:,.0f} tokens/s", flush=True)
    return peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="smollm2-135m")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100/H200 SXM: 989)")
    ap.add_argument("--long-tokens", type=int, default=16384)
    ap.add_argument("--fsdp-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", default="full", help=argparse.SUPPRESS)
    ap.add_argument("--sft", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fsdp_worker:
        return fsdp_worker(args)

    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_train_check: no CUDA GPU here; run it where one is")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tps, mfu = bf16_throughput(args.base, root, args.peak_tflops)
        for method in ("full", "lora"):
            fsdp_check(args.base, root, method)
        peak = long_trace(args.base, root, args.long_tokens)
    print(json.dumps({"tokens_per_s": round(tps), "mfu": round(mfu, 4), "long_trace_peak_gib": round(peak, 2)}))
    print(f"gpu_train_check tokens_per_s {tps:.0f} mfu {mfu:.3f} fsdp_full_state_dict ok "
          f"long_trace_peak_gib {peak:.2f}")


if __name__ == "__main__":
    main()
