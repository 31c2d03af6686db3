"""Where Ray work runs: the cluster named by the spec or RAY_ADDRESS, else an embedded local Ray."""

from __future__ import annotations

import os

_address: str | None = None


def configure(address: str | None) -> None:
    global _address
    _address = address


def ensure_ray() -> None:
    import ray

    if ray.is_initialized():
        return
    address = _address or os.environ.get("RAY_ADDRESS")
    # Workers must import `distill` the same way the driver does (the repo may not be installed there).
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [_project_root(), os.environ.get("PYTHONPATH")]))}}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    else:
        ray.init(include_dashboard=False, runtime_env=runtime_env, log_to_driver=True)
    ray.data.DataContext.get_current().enable_progress_bars = True


def _project_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
