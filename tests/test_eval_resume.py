"""A killed eval resumes: its samples are committed in shards as generate's are, and a re-run generates only the
shards that were missing (real CPU vLLM engine, SmolLM2-135M, tiny)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from distill.pipeline.eval import evaluate_model
from distill.spec import Eval, VLLMTeacher
from tests.faults import DriverStops, StopAfterShards

pytestmark = pytest.mark.slow


def test_a_killed_eval_redoes_only_its_unfinished_shards(ray_local, tmp_path):
    # two shard sets (k differs), one problem per shard: gsm8k_test: 2 shards of 2 samples; arith_steps_test: 3 of 1
    ev = Eval(benchmarks=[{"name": "gsm8k_test", "problems": 2, "k": 2}, {"name": "arith_steps_test", "problems": 3}],
              k=1, max_tokens=8)
    placement = VLLMTeacher(model="eval", num_gpus=0, num_cpus=2, shard_size=1)
    shards, out = tmp_path / "shards", tmp_path / "out"
    out.mkdir()
    stop = StopAfterShards(3)  # all of gsm8k_test's shards and the first of arith_steps_test's
    with pytest.raises(DriverStops):
        evaluate_model("smollm2-135m", "base", ev, placement, 0, out, shard_dir=shards, on_shard=stop)
    assert len({info.get("pid") for info in stop.infos}) == 1  # both shard sets on one engine start
    committed = {p.relative_to(shards): pq.read_table(p) for p in shards.glob("*/shard-*.parquet")}
    assert len(committed) == 3 and not (out / "scores.json").exists()
    # which shards are left (the order shards finish in is the engine's): 2 of arith_steps_test's 3
    left = sorted({0, 1, 2} - {int(p.stem.split("-")[1]) for p in committed if p.parts[0] == "k1-max8"})
    assert len(left) == 2 and sum(p.parts[0] == "k2-max8" for p in committed) == 2

    again = StopAfterShards(99)  # records only
    scores = evaluate_model("smollm2-135m", "base", ev, placement, 0, out, shard_dir=shards, on_shard=again)
    assert sorted(again.seen) == left  # the three committed shards were not generated again
    samples = pq.read_table(out / "samples.parquet").to_pylist()
    for bench, problems, k in (("gsm8k_test", 2, 2), ("arith_steps_test", 3, 1)):
        rows = [r for r in samples if r["benchmark"] == bench]
        keys = {(r["problem_id"], r["sample_index"]) for r in rows}
        assert len(rows) == len(keys) == problems * k
        assert keys == {(f"{bench}-{i}", s) for i in range(problems) for s in range(k)}
        assert scores["benchmarks"][bench]["problems"] == problems
    # the committed samples are the ones scored, word for word
    by_key = {(r["problem_id"], r["sample_index"]): r["response"] for r in samples}
    for table in committed.values():
        for r in table.to_pylist():
            assert by_key[(r["problem_id"], r["sample_index"])] == r["response"]
    assert not shards.exists()  # scored: the shard sets are gone
