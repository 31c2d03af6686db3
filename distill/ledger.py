"""The cost ledger: per stage tokens in/out, wall time, accelerator-seconds (devices x time) and estimated cost.
The one place these figures are made: `distill run` (run.json), packages and the report all read them here.

Stages measure their own entry into their stats (`charge`, `entry`): generate (teacher GPUs x replicas x wall,
its tokens), train (workers x GPUs per worker x the stage's wall) and eval (replicas x GPUs per replica x wall).
A stage that did not (a run made before they did) is estimated from its wall time and its spec's placement.

Schema (what `distill run` puts in run.json and the package manifest under "ledger"):

  {"stages": {NAME: {"tokens_in", "tokens_out", "wall_seconds", "accelerator_seconds", "cost_usd"}},
   "total":  {same keys, summed},
   "prices": {"currency", "accelerator_hour", "prompt_tokens_per_million", "completion_tokens_per_million"}}

cost = accelerator_seconds / 3600 x accelerator_hour + tokens_in / 1e6 x prompt price + tokens_out / 1e6 x
completion price. GPU-priced teachers (vLLM) and token-priced ones (hosted APIs) use the same formula; a price
not given is 0. (R1's base run: 2.788M H800 GPU-hours x $2 = $5.576M.)
"""

from __future__ import annotations

from typing import Any

from distill.spec import VLLMTeacher, eval_placement

KEYS = ("tokens_in", "tokens_out", "wall_seconds", "accelerator_seconds", "cost_usd")


def prices_dict(prices: Any) -> dict:
    if prices is None:
        return {"currency": "USD", "accelerator_hour": 0.0, "prompt_tokens_per_million": 0.0,
                "completion_tokens_per_million": 0.0}
    d = prices.model_dump() if hasattr(prices, "model_dump") else dict(prices)
    return {"currency": d.get("currency", "USD"), "accelerator_hour": float(d.get("accelerator_hour") or 0),
            "prompt_tokens_per_million": float(d.get("prompt_tokens_per_million") or 0),
            "completion_tokens_per_million": float(d.get("completion_tokens_per_million") or 0)}


def cost(tokens_in: float, tokens_out: float, accelerator_seconds: float, prices: Any) -> float:
    p = prices_dict(prices)
    return (accelerator_seconds / 3600 * p["accelerator_hour"] + tokens_in / 1e6 * p["prompt_tokens_per_million"]
            + tokens_out / 1e6 * p["completion_tokens_per_million"])


def entry(tokens_in: float, tokens_out: float, wall_seconds: float, accelerator_seconds: float,
          prices: Any = None) -> dict:
    return {"tokens_in": int(tokens_in), "tokens_out": int(tokens_out), "wall_seconds": round(wall_seconds, 2),
            "accelerator_seconds": round(accelerator_seconds, 2),
            "cost_usd": round(cost(tokens_in, tokens_out, accelerator_seconds, prices), 6)}


def charge(stats: dict, accelerators: float, wall_seconds: float) -> dict:
    """`stats` with the stage's own measured entry: `accelerators` devices held for `wall_seconds` (train: workers x
    GPUs per worker; eval: replicas x GPUs per replica). A stage that measured its own entry keeps it."""
    out = dict(stats)
    out.setdefault("accelerators", float(accelerators))
    out.setdefault("wall_seconds", round(wall_seconds, 2))
    out.setdefault("ledger", entry(out.get("prompt_tokens", 0) or 0, out.get("completion_tokens", 0) or 0,
                                   wall_seconds, float(accelerators) * wall_seconds))
    return out


def stage_accelerators(name: str, stats: dict, spec: Any) -> float:
    """Devices a stage held, for a stage that did not measure its own entry (runs made before stages did): its
    `accelerators` stat, else what the spec placed it on."""
    if "accelerators" in (stats or {}):
        return float(stats["accelerators"])
    if spec is None:  # a spec this distill cannot read (the report of an older or newer run): nothing to go by
        return float((stats or {}).get("device") == "cuda") if name.startswith("train/") else 0.0
    t = spec.teacher
    if name == "generate":  # an API teacher holds none of our devices
        return float(t.num_gpus * t.replicas) if isinstance(t, VLLMTeacher) else 0.0
    if name.startswith("eval/"):
        e = eval_placement(spec)
        return float(e.num_gpus * e.replicas)
    if name.startswith("train/"):
        student = next((s for s in spec.students if name == f"train/{s.name}"), None)
        declared = float(student.workers * student.gpus_per_worker) if student else 0.0
        # A single worker that found a GPU trained on it, declared or not.
        return max(declared, float(stats.get("device") == "cuda"))
    return 0.0


def stage_entry(name: str, marker: dict, spec: Any, prices: Any = None) -> dict:
    """One finished stage's entry: what it measured itself (re-priced with `prices`), else wall x the devices its
    spec placed it on. Adds `measured` (bool) and `accelerators`."""
    stats = marker.get("stats") or {}
    if isinstance(stats.get("ledger"), dict) and "tokens_in" in stats["ledger"]:
        e = dict(stats["ledger"])  # measured by the stage itself; re-priced with today's prices
        e["cost_usd"] = round(cost(e["tokens_in"], e["tokens_out"], e["accelerator_seconds"], prices), 6)
        wall = float(e.get("wall_seconds") or 0)
        held = stats.get("accelerators", e["accelerator_seconds"] / wall if wall else 0.0)
        return {**e, "measured": True, "accelerators": float(held)}
    wall = float(marker.get("seconds") or 0)
    if isinstance(stats.get("accelerator_seconds"), (int, float)):  # measured, without a whole entry
        e = entry(stats.get("prompt_tokens", 0) or 0, stats.get("completion_tokens", 0) or 0, wall,
                  stats["accelerator_seconds"], prices)
        return {**e, "measured": True, "accelerators": stats["accelerator_seconds"] / wall if wall else 0.0}
    held = stage_accelerators(name, stats, spec)
    e = entry(stats.get("prompt_tokens", 0) or 0, stats.get("completion_tokens", 0) or 0, wall, held * wall, prices)
    return {**e, "measured": False, "accelerators": held}


def build(markers: dict[str, dict], spec: Any) -> dict:
    """The ledger from `Runner.markers` ({stage name: _DONE.json marker}) and the spec's prices."""
    prices = getattr(spec, "prices", None)
    stages = {}
    for name, m in markers.items():
        e = stage_entry(name, m, spec, prices)
        stages[name] = {k: e[k] for k in KEYS}
    total = {k: sum(e[k] for e in stages.values()) for k in KEYS}
    total = {k: (int(v) if k.startswith("tokens") else round(v, 6 if k == "cost_usd" else 2)) for k, v in total.items()}
    return {"stages": stages, "total": total, "prices": prices_dict(prices)}
