"""Stage 3, verify & filter: the pipeline's entry to `distill.verify` (the verifier and filters live there, as a
library the eval stage and the `distill verify` / `distill audit` commands use too)."""

from distill.verify import verify_stage

__all__ = ["verify_stage"]
