"""Where Ray work runs: the spec's `ray_address`, else RAY_ADDRESS (set inside `ray job submit`), else an
embedded local Ray started on this machine."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
_address: str | None = None
EMBEDDED_SYSTEM_CONFIG = {"worker_niceness": 0, "enable_metrics_collection": False,
                          "enable_worker_prestart": False, "prestart_worker_first_driver": False}


def configure(address: str | None) -> None:
    global _address
    _address = address


def on_cluster() -> bool:
    """This run is to use a Ray cluster (the spec's `ray_address`, or inside a Ray job), not an embedded Ray."""
    return bool(_address or os.environ.get("RAY_ADDRESS"))


def ensure_ray() -> None:
    import ray

    if ray.is_initialized():
        return
    if _address:
        # A cluster this driver connects to: ship the distill package to its workers.
        ray.init(address=_address, runtime_env={"py_modules": [str(PACKAGE_DIR)]})
    elif os.environ.get("RAY_ADDRESS"):
        ray.init()  # inside a Ray job: the job's runtime env (working_dir) already carries the code
    else:
        # Embedded: workers are local processes, so pointing them at this checkout is enough.
        path = os.pathsep.join(filter(None, [str(PACKAGE_DIR.parent), os.environ.get("PYTHONPATH")]))
        # Ray runs workers at nice 15 by default; here the workers ARE the job (the vLLM engines), and anything
        # else on the machine would starve them.
        # address="local": start our own instance even if another Ray runs on this machine.
        # No dashboard, no metrics export, no idle pre-started workers: nobody reads them on an embedded Ray, and
        # on a small machine they take CPU from the engine (measured idle on 2 cores: Ray's processes used 2.0
        # CPU-s per 30 s with the defaults, 0.9 with these).
        ray.init(address="local", include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}},
                 _system_config=EMBEDDED_SYSTEM_CONFIG)


def local_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no sched_getaffinity
        return os.cpu_count() or 1
