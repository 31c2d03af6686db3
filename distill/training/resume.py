"""Where a killed training run picks up: the newest complete HF checkpoint in a checkpoint directory.

transformers' `get_last_checkpoint` picks the highest-numbered `checkpoint-N` directory, also one a kill cut short
mid-save (weights written, no optimizer or trainer state): resuming from it fails. The Trainer writes
`trainer_state.json` last (after weights, optimizer, scheduler and RNG state), so a checkpoint that has it is
whole, and the newest such one is where a re-run resumes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    if not output_dir.is_dir():
        return None
    done = [(int(m.group(1)), p) for p in output_dir.iterdir()
            if (m := _CHECKPOINT.match(p.name)) and (p / STATE_FILE).is_file()]
    return max(done)[1] if done else None


def step_of(checkpoint: Path | str | None) -> int:
    """The optimizer step a checkpoint was written after (0: none)."""
    if checkpoint is None:
        return 0
    state = Path(checkpoint) / STATE_FILE
    return int(json.loads(state.read_text())["global_step"]) if state.exists() else 0
