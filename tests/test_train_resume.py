"""A single-worker student SIGKILLed mid-training resumes from its last checkpoint on the re-run, not step 0,
and its final adapter loads and generates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from transformers import TrainerCallback

from distill.pipeline.train import train_student
from distill.spec import Student
from tests.conftest import EXAMPLES
from tests.conftest import sft_dir as _sft_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 2 examples, 1 per step, no packing: 2 steps per epoch, 8 in all; a checkpoint every 2 steps; killed after step 5,
# so checkpoint-4 is the last whole one.
STUDENT = dict(name="r", method="lora", epochs=4, learning_rate=1e-2, batch_size=1, max_length=128, packing=False,
               save_steps=2, lora={"r": 8, "alpha": 16, "dropout": 0.0})
KILL_AT = 5

FIRST_RUN = """
import sys
from pathlib import Path
from distill.pipeline.train import train_student
from distill.spec import Student
from tests.faults import SigkillAt
student = Student.model_validate_json(sys.argv[1])
train_student(Path(sys.argv[2]), Path(sys.argv[3]), student, seed=0, checkpoint_dir=Path(sys.argv[4]),
              callbacks=[SigkillAt(int(sys.argv[5]))])
"""


class StepsRun(TrainerCallback):
    """Records the optimizer steps this process ran (observes; changes nothing)."""

    def __init__(self):
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kw):
        self.steps.append(state.global_step)


@pytest.mark.slow  # trains twice
def test_sigkilled_training_resumes_from_its_last_checkpoint(tmp_path, tiny_llama):
    student = Student(base=str(tiny_llama), **STUDENT)
    sft, out, ckpt = _sft_dir(tmp_path), tmp_path / "train", tmp_path / "checkpoints"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-c", FIRST_RUN, student.model_dump_json(), str(sft), str(out), str(ckpt),
                           str(KILL_AT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert sorted(p.name for p in ckpt.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (out / "merged").exists()
    state = json.loads((ckpt / "checkpoint-4" / "trainer_state.json").read_text())
    last = state["global_step"]
    assert last == 4 and [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4]

    seen = StepsRun()
    stats = train_student(sft, out, student, seed=0, checkpoint_dir=ckpt, callbacks=[seen])

    assert seen.steps == list(range(last + 1, 9))  # the re-run's first step is the checkpoint's + 1
    assert stats["resumed_from_step"] == last and stats["steps"] == 8
    assert not ckpt.exists()  # the student is saved: its checkpoints are gone

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out / "merged")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), out / "adapter")
    ids = tok.apply_chat_template([{"role": "user", "content": EXAMPLES[0][0]}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        new = model.generate(**ids, max_new_tokens=8, do_sample=False)[0, ids["input_ids"].shape[1]:]
    assert len(new) > 0 and torch.isfinite(model(**ids).logits).all()
