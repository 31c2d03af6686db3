"""Where the verify stage judges, decided without a cluster: all of this machine's cores by default, and no Ray
started just to verify (`distill/verify/distributed.py`; the multi-node run is tests/test_verify_cluster.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from distill.spec import Filter
from distill.cluster import local_cores
from tests.conftest import REPO


def test_workers_default_to_every_core_this_process_may_use():
    assert local_cores() == len(os.sched_getaffinity(0)) >= 1
    assert Filter().judge_workers() == local_cores()
    assert Filter(workers=3).judge_workers() == 3


def test_no_cluster_means_no_ray_started_and_no_spreading():
    code = ("import ray\nfrom distill.verify.distributed import spread_over_cluster\n"
            "print(spread_over_cluster(), ray.is_initialized())")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "False"]
