"""The cost ledger: per stage tokens in/out, wall time, accelerator-seconds (devices x time) and estimated cost.

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


def stage_accelerators(name: str, stats: dict, spec: Any) -> float:
    """Devices a stage held: its own measured `accelerators`, else the estimate report.py also uses."""
    if "accelerators" in (stats or {}):
        return float(stats["accelerators"])
    t = spec.teacher
    if name == "generate":  # an API teacher holds none of our devices
        return float(t.num_gpus * t.replicas) if isinstance(t, VLLMTeacher) else 0.0
    if name.startswith("eval/"):
        e = eval_placement(spec)
        return float(e.num_gpus * e.replicas)
    if name.startswith("train/"):
        return float((stats or {}).get("devices", 0))
    return 0.0


def build(markers: dict[str, dict], spec: Any) -> dict:
    """The ledger from `Runner.markers` ({stage name: _DONE.json marker}) and the spec's prices."""
    prices = getattr(spec, "prices", None)
    stages = {}
    for name, m in markers.items():
        stats = m.get("stats") or {}
        if isinstance(stats.get("ledger"), dict) and "tokens_in" in stats["ledger"]:
            e = dict(stats["ledger"])  # measured by the stage itself; re-priced with today's prices
            e["cost_usd"] = round(cost(e["tokens_in"], e["tokens_out"], e["accelerator_seconds"], prices), 6)
        else:
            wall = float(m.get("seconds") or 0)
            e = entry(stats.get("prompt_tokens", 0) or 0, stats.get("completion_tokens", 0) or 0, wall,
                      stage_accelerators(name, stats, spec) * wall, prices)
        stages[name] = e
    total = {k: sum(e[k] for e in stages.values()) for k in KEYS}
    total = {k: (int(v) if k.startswith("tokens") else round(v, 6 if k == "cost_usd" else 2)) for k, v in total.items()}
    return {"stages": stages, "total": total, "prices": prices_dict(prices)}
