"""Run directories for the report tests, built without vLLM or training.

The files are the ones a real run writes: a validated spec, stage directories committed with
`artifacts.commit_stage` (so real `_DONE.json` markers), generated traces in the generate stage's columns, and
`verify/` produced by the real `verify_stage` from them, so every count in `verify/stats.json` is the verifier's.
Only the teacher's text, the trainer and the evaluator's scores are made up.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from distill import artifacts, schemas
from distill.spec import Filter, parse_spec
from distill.verify import verify_stage

STUDENT = "tiny-lora"
BASE_KEY = "eval/base-smollm2-135m"
MAX_TOKENS = 192
N = 4  # samples per problem

# Made-up wall times, so the ledger has realistic numbers (commit_stage measures ~0 s here).
SECONDS = {"prompts": 1.2, "generate": 1834.5, "verify": 12.8, "sft": 3.1, f"train/{STUDENT}": 932.0,
           BASE_KEY: 240.0, f"eval/{STUDENT}": 236.5, f"package/{STUDENT}": 2.4}

SCORES = {
    BASE_KEY: {"gsm8k_test": (0.125, 0.0625, 16), "math500": (0.0625, 0.0442, 16)},
    f"eval/{STUDENT}": {"gsm8k_test": (0.1875, 0.0710, 16), "math500": (0.0938, 0.0521, 16)},
}


def spec_dict(root: Path) -> dict:
    return {
        "name": "report-demo",
        "output_dir": str(root),
        "seed": 0,
        "teacher": {"model": "smollm2-135m", "num_gpus": 1, "replicas": 2, "num_cpus": 2},
        "prompts": {"sources": [{"dataset": "gsm8k_sample", "limit": 10}]},
        "sampling": {"n": N, "temperature": 0.7, "top_p": 0.95, "max_tokens": MAX_TOKENS},
        "filter": {"drop_truncated": True, "max_per_problem": 2},
        "students": [{"name": STUDENT, "base": "smollm2-135m", "method": "lora", "max_length": 512}],
        "eval": {"benchmarks": [{"name": "gsm8k_test", "problems": 16}, {"name": "math500", "problems": 16}],
                 "k": 2, "max_tokens": 256},
    }


def _prompts() -> list[dict]:
    rows = []
    for i in range(12):
        a, b = 7 * i + 3, 11 * i + 5
        referenced = i < 10
        problem = f"Tom has {a} apples and buys {b} more. How many apples does he have?" if referenced else \
            f"Write a two-line poem about the number {i}."
        rows.append({"problem_id": f"synthetic-{i:04x}", "source": "synthetic" if referenced else "chat",
                     "domain": "math" if referenced else "chat", "problem": problem,
                     "answer": str(a + b) if referenced else "", "answer_format": "plain" if referenced else "none",
                     "prompt": problem + "\n\nPlease reason step by step, and put your final answer within \\boxed{}."})
    return rows


def _outcome(i: int, j: int) -> str:
    if i >= 10:
        return "unreferenced"
    if i == 0:
        return "correct"  # four right answers for one problem: the cap of 2 drops two
    return ("correct", "incorrect", "no_answer", "truncated", "unclosed_think", "correct", "incorrect")[(i * N + j) % 7]


def _trace(prompt: dict, j: int, rng: random.Random) -> dict:
    outcome = _outcome(int(prompt["problem_id"][-4:], 16), j)
    answer = prompt["answer"]
    words = ("add", "carry", "check", "regroup", "count", "compare", "subtract", "double")
    steps = "\n".join(f"Step {k + 1}: {rng.choice(words)} {rng.randint(2, 99)} and {rng.randint(2, 99)}, "
                      f"then {rng.choice(words)} the {rng.choice(('tens', 'units', 'total', 'rest'))} again."
                      for k in range(rng.randint(1, 8)))
    response = {
        "correct": f"<think>\n{steps}\n</think>\n\nThe total is $\\boxed{{{answer}}}$.",
        "incorrect": f"<think>\n{steps}\n</think>\n\nThe total is $\\boxed{{{int(answer or 0) + 1}}}$.",
        "no_answer": f"<think>\n{steps}\n</think>\n\nSo Tom has {answer} apples.</pre><script>alert(1)</script>",
        "truncated": f"<think>\n{steps}\n{steps}\nStep 99: now let me re-check every",
        "unclosed_think": f"<think>\n{steps}\nSo the answer is {answer}",
        "unreferenced": "Numbers dance in rows,\nand one of them is yours.",
    }[outcome]
    finish = "length" if outcome == "truncated" else "stop"
    tokens = MAX_TOKENS if finish == "length" else int(len(response.split()) * 1.3)
    return {**prompt, "sample_index": j, "response": response, "finish_reason": finish,
            "prompt_tokens": int(len(prompt["prompt"].split()) * 1.3) + 12, "completion_tokens": tokens,
            "teacher": "smollm2-135m"}


def _commit(root: Path, key: str, build) -> dict:
    m = artifacts.commit_stage(root / key, artifacts.fingerprint(key), build)
    marker = root / key / artifacts.MARKER
    m["seconds"] = SECONDS.get(key, 1.0)
    marker.write_text(json.dumps(m, indent=2))
    return m


def _write_json(path: Path, data: dict) -> dict:
    path.write_text(json.dumps(data, indent=2))
    return data


def _generate(d: Path, prompts: list[dict]) -> dict:
    rng = random.Random(0)
    traces = [_trace(p, j, rng) for p in prompts for j in range(N)]
    half = len(traces) // 2  # two part files, as Ray Data writes them
    pq.write_table(pa.Table.from_pylist(traces[:half]), d / "part-00000.parquet")
    pq.write_table(pa.Table.from_pylist(traces[half:]), d / "part-00001.parquet")
    finish: dict[str, int] = {}
    for t in traces:
        finish[t["finish_reason"]] = finish.get(t["finish_reason"], 0) + 1
    tokens_in, tokens_out = sum(t["prompt_tokens"] for t in traces), sum(t["completion_tokens"] for t in traces)
    wall = SECONDS["generate"]
    return {"problems": len(prompts), "traces": len(traces), "prompt_tokens": tokens_in,
            "completion_tokens": tokens_out, "finish_reasons": finish, "accelerators": 2,
            # measured by the stage itself, as distill.ledger.entry writes it (no prices in the spec: cost 0)
            "ledger": {"tokens_in": tokens_in, "tokens_out": tokens_out, "wall_seconds": wall,
                       "accelerator_seconds": 2 * wall, "cost_usd": 0.0}}


def _sft(d: Path, root: Path) -> dict:
    kept = pq.read_table(root / "verify" / "kept.parquet").to_pylist()
    pq.write_table(pa.Table.from_pylist([{"problem_id": r["problem_id"], "sample_index": r["sample_index"]}
                                         for r in kept]), d / "train.parquet")
    return {"examples": len(kept), "reasoning": sum(r["reason"] != "unreferenced" for r in kept),
            "non_reasoning": sum(r["reason"] == "unreferenced" for r in kept)}


def _scores(d: Path, key: str, label: str) -> dict:
    benchmarks = {b: {"pass@1": p, "stderr": se, "problems": n, "k": 2, "max_tokens": 256, "truncation_rate": 0.125}
                  for b, (p, se, n) in SCORES[key].items()}
    pq.write_table(pa.Table.from_pylist([{"benchmark": "gsm8k_test", "problem_id": "gsm8k_test-0",
                                          "sample_index": 0, "response": "\\boxed{1}", "correct": False}]),
                   d / "samples.parquet")
    decoding = {"k": 2, "temperature": 0.6, "top_p": 0.95, "max_tokens": 256, "seed": 0}
    scores = {"model": label, "benchmarks": benchmarks, "decoding": decoding}
    if key != BASE_KEY:  # a student: the paired comparison with its base (made-up, as the scores are)
        scores["vs_base"] = {"model": "base:smollm2-135m", "benchmarks": {
            "gsm8k_test": {"difference": 0.0625, "paired_stderr": 0.0442, "problems": 16, "k": 2, "exceeds_2se": False},
            "math500": {"difference": 0.0313, "paired_stderr": 0.0102, "problems": 16, "k": 2, "exceeds_2se": True}}}
    return _write_json(d / "scores.json", scores)


def _train(d: Path) -> dict:
    (d / "merged").mkdir()
    return _write_json(d / "train_stats.json", {
        "student": STUDENT, "method": "lora", "base": "smollm2-135m", "examples": 0, "dropped_over_max_length": 0,
        "tokens_per_epoch": 5120, "steps": 6, "train_loss": 1.2345, "seconds": 930.1, "tokens_per_second": 5.5,
        "device": "cuda"})


def make_run(root: Path, upto: str = "all", ledger: dict | None = None) -> Path:
    """A run directory under `root`. upto: "all" (finished, with run.json), or "generate" (prompts and
    generate done, verify being built in its hidden temporary directory, nothing after it)."""
    spec = parse_spec(spec_dict(root))
    root.mkdir(parents=True, exist_ok=True)
    (root / "spec.yaml").write_text(yaml.safe_dump(spec.model_dump(), sort_keys=False))
    prompts = _prompts()
    markers = {"prompts": _commit(root, "prompts", lambda d: (
        pq.write_table(pa.Table.from_pylist(prompts, schema=schemas.PROMPTS), d / "prompts.parquet"),
        {"problems": len(prompts), "by_source_or_drop": {"synthetic": 10, "chat": 2}})[1])}
    markers["generate"] = _commit(root, "generate", lambda d: _generate(d, prompts))
    if upto == "generate":
        (root / ".verify.tmp-1a2b3c4d").mkdir()  # what commit_stage leaves while verify runs
        return root
    markers["verify"] = _commit(root, "verify", lambda d: verify_stage(root / "generate", d, Filter(
        drop_truncated=True, max_per_problem=2)))
    markers["sft"] = _commit(root, "sft", lambda d: _sft(d, root))
    markers[BASE_KEY] = _commit(root, BASE_KEY, lambda d: _scores(d, BASE_KEY, "base:smollm2-135m"))
    markers[f"train/{STUDENT}"] = _commit(root, f"train/{STUDENT}", _train)
    markers[f"eval/{STUDENT}"] = _commit(root, f"eval/{STUDENT}", lambda d: _scores(d, f"eval/{STUDENT}", STUDENT))
    markers[f"package/{STUDENT}"] = _commit(root, f"package/{STUDENT}", lambda d: (
        (d / "README.md").write_text(f"# {STUDENT}\n"), _write_json(d / "manifest.json", {"name": STUDENT}),
        {"student": STUDENT, "files": 2})[2])
    summary = {"spec": spec.name, "spec_hash": spec.fingerprint(), "output_dir": str(root),
               "packages": [str(root / "package" / STUDENT)],
               "stages": {k: {"seconds": m["seconds"], "stats": m["stats"]} for k, m in markers.items()}}
    if ledger is not None:
        summary["ledger"] = ledger
    (root / "run.json").write_text(json.dumps(summary, indent=2))
    return root
