"""distill: distil reasoning traces from a teacher LLM into small students.

`distill.Client` (in `distill.service.client`) submits specs to a Ray cluster and fetches the packaged students.
"""

__all__ = ["Client"]


def __getattr__(name: str):
    # Lazy, so that `import distill.verify` in a worker process does not pull in the client and its imports.
    if name == "Client":
        from distill.service.client import Client

        return Client
    raise AttributeError(f"module 'distill' has no attribute {name!r}")
