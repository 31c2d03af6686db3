"""Stage 7, package: a student people can download and use, with its scores and lineage.

`package/<student>/` holds `merged/` (safetensors + tokenizer + generation config), `adapter/` for LoRA,
`gguf/` (F16 and Q8_0 GGUF files and an Ollama Modelfile, `distill/export/`; spec `package.gguf`),
`README.md` (a model card whose metadata carries the scores in Hugging Face's `model-index` form, plus the eval
table and lineage) and `manifest.json` (the same facts for machines, and the sha256 of every file).
Files are hard-linked from the train stage when the filesystem allows, so packaging costs no extra disk.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import yaml

from distill.artifacts import file_digest
from distill.export.gguf_folder import run_locally_section, write_gguf_folder
from distill.stats import comparison_rows


def _link_tree(src: Path, dst: Path) -> None:
    def link(s, d):
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link)


def _eval_table(scores: dict, base_scores: dict | None) -> str:
    head = ("| benchmark | problems | k | max tokens | base pass@1 | student pass@1 | truncated | student − base (paired se) | > 2 se |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in comparison_rows(scores, base_scores):
        b, s, p = r["base"], r["student"], r["paired"]
        base = f"{100 * b['pass@1']:.1f} ± {100 * b['stderr']:.1f}" if b else "-"
        diff = f"{100 * p['difference']:+.1f} ± {100 * p['paired_stderr']:.1f}" if p else "-"
        clear = ("yes" if p["exceeds_2se"] else "no") if p else "-"
        # scores written before per-benchmark protocols have no max_tokens / truncation_rate: "-"
        max_tokens = s.get("max_tokens", "-")
        cut = f"{100 * s['truncation_rate']:.1f}%" if "truncation_rate" in s else "-"
        lines.append(f"| {r['benchmark']} | {r['problems']} | {r['k']} | {max_tokens} | {base} | "
                     f"{100 * s['pass@1']:.1f} ± {100 * s['stderr']:.1f} | {cut} | {diff} | {clear} |")
    return head + "\n".join(lines)


def _model_index(name: str, scores: dict) -> list:
    return [{
        "name": name,
        "results": [
            {"task": {"type": "text-generation"},
             "dataset": {"name": bench, "type": bench},
             "metrics": [{"type": "pass@1", "value": round(100 * s["pass@1"], 2), "name": "pass@1"}]}
            for bench, s in scores["benchmarks"].items()
        ],
    }]


def _cost_line(ledger: dict | None) -> str:
    if not ledger:
        return ""
    t = ledger["total"]
    cost = f", estimated cost {t['cost_usd']:.2f} {ledger['prices']['currency']}" if t["cost_usd"] else ""
    return (f"- compute: {t['tokens_in']:,.0f} prompt + {t['tokens_out']:,.0f} generated tokens, "
            f"{t['accelerator_seconds'] / 3600:.2f} accelerator-hours{cost}\n")


def _training_method(train_stats: dict) -> dict:
    """How the student was trained, for the card and the manifest: SFT on the verified traces, or on-policy
    distillation (and then the model whose token log-probabilities it learned from)."""
    if train_stats.get("training") != "on_policy":
        return {"method": "sft", "tag": "sft", "logprob_teacher": None, "card": ""}
    teacher = train_stats["logprob_teacher"]
    start = train_stats.get("init_from")
    return {"method": "on_policy", "tag": "on-policy-distillation", "logprob_teacher": teacher,
            "card": f" Trained by on-policy distillation: it sampled its own completions of the run's prompts and "
                    f"learned the token log-probabilities **{teacher}** gave them ({train_stats['loss']}), "
                    f"starting from `{start}`."}


def package_student(train_dir: Path, out_dir: Path, student, scores: dict, base_scores: dict | None,
                    lineage: dict, ledger: dict | None = None, gguf: bool = True) -> dict:
    _link_tree(train_dir / "merged", out_dir / "merged")
    if (train_dir / "adapter").exists():
        _link_tree(train_dir / "adapter", out_dir / "adapter")
    gguf_info = write_gguf_folder(out_dir / "merged", out_dir / "gguf", student.name) if gguf else None
    has_gguf = bool(gguf_info and "files" in gguf_info)
    train_stats = json.loads((train_dir / "train_stats.json").read_text())
    training = _training_method(train_stats)
    meta = {
        "base_model": student.base,
        "library_name": "transformers",
        "tags": ["distill", "reasoning", training["tag"], student.method] + (["gguf"] if has_gguf else []),
        "model-index": _model_index(student.name, scores),
    }
    d = scores["decoding"]
    card = (
        f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n"
        f"# {student.name}\n\n"
        f"A reasoning student distilled from **{lineage['teacher']}** into **{student.base}** "
        f"({student.method} fine-tune) by distill.{training['card']}\n\n"
        f"## Evaluation\n\n{_eval_table(scores, base_scores)}\n\n"
        f"pass@1 in %, averaged over k samples per problem, ± standard error over problems; truncated: the share of "
        f"the student's samples cut off at max tokens, counted as wrong; student − base is the mean of per-problem "
        f"differences over the same problems and k, ± its paired standard error. Decoding: temperature "
        f"{d['temperature']}, top-p {d['top_p']}, max {d['max_tokens']} new tokens unless the row says otherwise, "
        f"seed {d['seed']}.\n\n"
        f"## Lineage\n\n"
        f"- teacher: `{lineage['teacher']}`\n- spec: `{lineage['spec_name']}` (sha256 prefix `{lineage['spec_hash']}`)\n"
        f"- problems: {lineage['problems']}; traces generated: {lineage['generated']}; verified correct: "
        f"{lineage['verified']}; kept for SFT: {lineage['kept']}\n"
        f"- training: {train_stats['examples']} examples, {train_stats['steps']} steps, "
        f"final loss {train_stats['train_loss']:.4f}\n"
        f"{_cost_line(ledger)}\n"
        f"## Use\n\n```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"tok = AutoTokenizer.from_pretrained(\"merged\")\nmodel = AutoModelForCausalLM.from_pretrained(\"merged\")\n```\n"
        f"or `vllm serve merged`. The model thinks inside `<think>…</think>` and then answers in `\\boxed{{}}`.\n\n"
        f"{run_locally_section(student.name, gguf_info)}"
    )
    (out_dir / "README.md").write_text(card)
    files = {str(p.relative_to(out_dir)): file_digest(p) for p in sorted(out_dir.rglob("*")) if p.is_file()}
    manifest = {
        "name": student.name, "base_model": student.base, "method": student.method,
        "training_method": training["method"], "logprob_teacher": training["logprob_teacher"],
        "scores": scores, "base_scores": base_scores, "lineage": lineage, "training": train_stats,
        "ledger": ledger, "gguf": gguf_info, "files": files,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return {"student": student.name, "files": len(files),
            "gguf": sorted(gguf_info["files"]) if has_gguf else (gguf_info or {}).get("skipped", "off")}
