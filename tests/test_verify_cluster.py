"""The verify stage spread over a real multi-node Ray cluster (`ray.cluster_utils.Cluster`, every node a local
raylet): both nodes judge batches, a node advertising the chart's verifier resource takes all of them, and the
written rows and the funnel are the single-process run's, row for row."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.spec import Filter
from distill.verify import verify_stage
from distill.verify.distributed import VERIFIER_RESOURCE, spread_over_cluster

pytestmark = pytest.mark.slow  # three raylets and their workers start: 40-85 s on 2 busy cores

STEPS_TEXT = ["I move every term to one side and factor.", "The discriminant is positive, so two roots.",
              "Substituting back checks the value.", "The bound agrees with the estimate."]


def _rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        p = i % 700
        body = " ".join(f"{STEPS_TEXT[(i + k) % 4]} Step {i}-{k}." for k in range(5))
        if i % 500 == 7:  # no fast-path verdict: math-verify in a checker process, inside the Ray task
            answer, ref = "(x+1)^2", "x^2+2x+1"
        else:
            answer, ref = (str(2 * p) if i % 4 else str(2 * p + 1)), str(2 * p)
        rows.append({"problem_id": f"p{p}", "problem": f"Problem {p}: add {p} and {p}.", "answer": ref,
                     "answer_format": "plain", "domain": "math", "sample_index": i // 700,
                     "response": f"<think>\n{body}\n</think>\n\nThe final answer is $\\boxed{{{answer}}}$.",
                     "finish_reason": "stop"})
    return rows


def _run(root, rows, spread: bool):
    gen, out = root / "generate", root / "verify"
    gen.mkdir(parents=True)
    out.mkdir()
    table = pa.Table.from_pylist(rows)
    pq.write_table(table.slice(0, 1500), gen / "shard-000000.parquet")
    pq.write_table(table.slice(1500), gen / "shard-000001.parquet")
    stats = verify_stage(gen, out, Filter(), workers=1, spread=spread)
    return stats, pq.read_table(out / "traces.parquet").to_pylist(), pq.read_table(out / "kept.parquet").to_pylist()


def test_verify_spreads_batches_over_the_nodes_and_writes_the_single_process_rows(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    from distill import cluster as distill_cluster

    rows = _rows(2600)  # 4 batches (1024 rows each, per part file): 1024, 476, 1024, 76
    one_stats, one_traces, one_kept = _run(tmp_path / "one", rows, spread=False)
    assert one_stats["placement"] == {"mode": "in_process", "workers": 1}
    assert one_stats["checked"]["checker"] == 6 and 0 < one_stats["kept"] < len(rows)

    was_up = ray.is_initialized()
    ray.shutdown()
    store = {"num_cpus": 1, "object_store_memory": 80 * 1024**2}
    nodes = Cluster(initialize_head=True, head_node_args={**store, "include_dashboard": False})
    try:
        second = nodes.add_node(**store)
        ray.init(address=nodes.address)
        nodes.wait_for_nodes()
        assert spread_over_cluster()  # attached, two nodes with CPUs

        stats, traces, kept = _run(tmp_path / "two", rows, spread=True)
        placement = stats["placement"]
        assert placement["mode"] == "ray" and len(placement["batch_nodes"]) == 4
        assert set(placement["batch_nodes"]) == {nodes.head_node.node_id, second.node_id}  # both judged
        assert sum(placement["rows_by_node"].values()) == len(rows)
        assert traces == one_traces and kept == one_kept  # row for row, every column
        for key in ("funnel", "reasons", "outcomes", "kept", "correct"):
            assert stats[key] == one_stats[key], key
        assert stats["checked"]["checker"] == one_stats["checked"]["checker"]

        # The chart's verifier group advertises VERIFIER_RESOURCE: once a node does, the batches go there only.
        verifier = nodes.add_node(resources={VERIFIER_RESOURCE: 1}, **store)
        nodes.wait_for_nodes()
        stats, traces, _ = _run(tmp_path / "verifier", rows, spread=True)
        assert set(stats["placement"]["batch_nodes"]) == {verifier.node_id}
        assert traces == one_traces
    finally:
        ray.shutdown()
        nodes.shutdown()
        if was_up:  # other tests of this session share an embedded Ray
            distill_cluster.ensure_ray()
