"""The verify stage over a Ray cluster: its batches judged as Ray tasks spread over the nodes.

When: the run is attached to a Ray cluster (Ray already up in this process, or the spec's `ray_address` / a Ray
job) with more than one node offering CPUs, or any node advertising `VERIFIER_RESOURCE` (the Helm chart's
`verifier` group). On a single node (the embedded Ray of a laptop run, or no Ray at all: `distill verify`) the
stage keeps its process pool over this machine's cores (`filter.workers`, default all of them): the same cores,
without copying every batch through Ray's object store nor starting Ray just to verify.

Where: each task asks for one CPU. If a node advertises `VERIFIER_RESOURCE`, tasks also ask for a sliver of it,
so they run only on such nodes (the chart's CPU group, not the GPU pods that hold the teacher's engines and the
trainer); if none does, tasks spread over every node with CPUs.

What: a task judges one batch completely (`stage.judge_batch`: extraction, trace filters, the fast path, then
math-verify in killable checker processes and code in the sandbox, with the spec's timeouts and memory limits)
and returns the small per-row results with the id of its node. Results are taken in submission order, so the
global decisions (decontamination, dedup, caps, targets) and the written rows are exactly the single-process
path's. A task whose worker dies is retried by Ray (a batch's judgement is a pure function of its rows).
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterator


VERIFIER_RESOURCE = "distill.verifier"  # advertised by helm/distill's verifier group (values.yaml rayResources)
# Each task takes a sliver of the resource (a node advertises 1): how many tasks share a node is set by its CPUs.
RESOURCE_SHARE = 0.001
IN_FLIGHT_PER_CPU = 2  # tasks submitted ahead per cluster CPU: each CPU has its next batch waiting


def _cpu_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]


def spread_over_cluster() -> bool:
    """Whether the verify stage judges on the Ray cluster (see the module's docstring)."""
    import ray

    from distill import cluster

    if not ray.is_initialized():
        if not cluster.on_cluster():
            return False
        cluster.ensure_ray()
    nodes = _cpu_nodes()
    return len(nodes) > 1 or any(VERIFIER_RESOURCE in n["Resources"] for n in nodes)


def _task_options() -> tuple[dict, int]:
    """The tasks' Ray options and how many CPUs they can use at once."""
    nodes = _cpu_nodes()
    verifiers = [n for n in nodes if VERIFIER_RESOURCE in n["Resources"]]
    options: dict = {"num_cpus": 1, "scheduling_strategy": "SPREAD"}
    if verifiers:
        options["resources"] = {VERIFIER_RESOURCE: RESOURCE_SHARE}
    cpus = sum(int(n["Resources"]["CPU"]) for n in (verifiers or nodes))
    return options, max(1, cpus)


def _judge(judge: Callable, init: tuple, cols: dict):
    import ray

    res = judge(init, cols)
    res.node = ray.get_runtime_context().get_node_id()
    return res


def judge_on_cluster(batches: Iterator[dict], init: tuple, add: Callable, judge: Callable) -> None:
    """Each batch of `batches` judged by a Ray task running `judge(init, batch)` (`stage.judge_batch`, passed in:
    this module stays below the stage); `add(result)` called in the batches' order."""
    import ray

    options, cpus = _task_options()
    task = ray.remote(_judge).options(**options)
    init_ref = ray.put(init)  # the settings and the benchmarks' n-grams: stored once, read by every task
    window: deque = deque()
    for cols in batches:
        window.append(task.remote(judge, init_ref, cols))
        if len(window) >= IN_FLIGHT_PER_CPU * cpus:
            add(ray.get(window.popleft()))
    while window:
        add(ray.get(window.popleft()))
