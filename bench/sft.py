"""SFT throughput: plain TRL SFTTrainer (no packing, padded batches) versus distill's trainer (best-fit-decreasing
packing, padding-free) on the same model, data and hyperparameters, one run. Both take the same examples per
optimizer step (`batch_size`; packed rows per step are scaled to hold that many, see `train._rows_per_step`).

    .venv/bin/python bench/sft.py [--examples 96] [--repeats 3]

Data: GSM8K reference solutions from the repo as reasoning traces (`<think>` + solution + boxed answer): their
lengths vary several-fold, like real traces. Model: a random-init Llama (hidden 256, 4 layers) with SmolLM2's
tokenizer: big enough that compute, not Python overhead, dominates on a CPU. Prints tokens/s of each (median of
--repeats one-epoch runs), the ratio, and the share of real (non-pad) tokens in the batches each one trains on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def dataset(n: int):
    import datasets

    from distill.pipeline.sft import assistant_turn
    from distill.verify import reference_answer

    rows = []
    for line in list((REPO / "datasets_spec" / "data" / "gsm8k_sample.jsonl").open())[:n]:
        r = json.loads(line)
        reasoning = r["answer"].rsplit("####", 1)[0]
        answer = reference_answer(r["answer"], "gsm8k")
        rows.append({"prompt": [{"role": "user", "content": r["question"]}],
                     "completion": [{"role": "assistant", "content": assistant_turn(reasoning, answer, "correct")}]})
    return datasets.Dataset.from_list(rows)


def model_dir(tmp: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from distill.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(tmp / "model")
    tok.save_pretrained(tmp / "model")
    return tmp / "model"


def real_token_share(trainer) -> tuple[int, float]:
    """(real tokens, real / all token positions) over one epoch of the trainer's own batches."""
    real = total = 0
    for batch in trainer.get_train_dataloader():
        ids = batch["input_ids"]
        total += ids.numel()
        real += int(batch["attention_mask"].sum()) if "attention_mask" in batch else ids.numel()
    return real, real / total


def one_run(ds, student, tmp, packing: bool) -> tuple[float, float]:
    from distill.training.sft import build_trainer

    trainer = build_trainer(ds, student.model_copy(update={"packing": packing}), tmp / f"out-{packing}", seed=0,
                            logging_steps=1000, save_strategy="no")  # a throughput bench: no checkpoints
    real, share = real_token_share(trainer)
    t = time.perf_counter()
    trainer.train()
    return real / (time.perf_counter() - t), share


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    from distill.spec import Student

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        student = Student(name="bench", base=str(model_dir(tmp)), method="full", epochs=1, learning_rate=1e-4,
                          batch_size=args.batch_size, max_length=1024)
        ds = dataset(args.examples)
        runs = {False: [], True: []}
        for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
            for packing in (False, True):
                runs[packing].append(one_run(ds, student, tmp, packing))
    base_tps = statistics.median(r[0] for r in runs[False])
    ours_tps = statistics.median(r[0] for r in runs[True])
    print(f"{args.examples} examples, batch {args.batch_size}, max_length 1024, 1 epoch, median of {args.repeats}")
    print(f"plain TRL (padded):            {base_tps:8.0f} real tokens/s, {100 * runs[False][0][1]:5.1f}% real tokens per batch")
    print(f"distill (BFD packing, no pad): {ours_tps:8.0f} real tokens/s, {100 * runs[True][0][1]:5.1f}% real tokens per batch")
    print(f"ratio: {ours_tps / base_tps:.2f}x")
