"""The student spec's training switches reach TRL's SFTConfig as they are; checkpoints resume from the newest
whole one; a request for a package that is not installed is a one-line spec error."""

from __future__ import annotations

import importlib.util
import json

import pytest

from distill.pipeline.stages import checkpoint_dir
from distill.spec import SpecError, Student, parse_spec, student_fingerprint
from distill.training.resume import last_complete_checkpoint, step_of
from distill.training.trainer_config import sft_config_args


def _args(**student):
    return sft_config_args(Student(name="s", base="b", **student), "ckpt", 0, rows_per_step=4, use_cuda=False)


def test_every_student_checkpoints_every_save_steps():
    args = _args(save_steps=7)
    assert (args["save_strategy"], args["save_steps"], args["save_total_limit"], args["output_dir"]) == (
        "steps", 7, 2, "ckpt")


def test_long_trace_switches_pass_through_to_trl():
    from trl import SFTConfig

    # use_liger_kernel is validated against the installed package; past validation it is a plain field
    student = Student(name="s", base="b", gradient_checkpointing=True).model_copy(update={"use_liger_kernel": True})
    args = sft_config_args(student, "ckpt", 0, rows_per_step=4, use_cuda=False)
    config = SFTConfig(**args)
    assert config.gradient_checkpointing is True and config.use_liger_kernel is True
    assert (config.save_strategy, config.save_steps) == ("steps", 50)


def test_deepspeed_config_passes_through_to_trl():
    zero3 = {"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True},
             "bf16": {"enabled": "auto"}, "train_micro_batch_size_per_gpu": "auto"}
    student = Student(name="s", base="b", method="full", gpus_per_worker=1).model_copy(update={"deepspeed": zero3})
    assert sft_config_args(student, "ckpt", 0, rows_per_step=4, use_cuda=True)["deepspeed"] == zero3
    assert "deepspeed" not in _args()


def test_fsdp_saves_full_state_dicts_and_checkpoints_through_fsdp():
    args = _args(fsdp=True, workers=2, gpus_per_worker=1, gradient_checkpointing=True)
    assert args["fsdp"] == "full_shard auto_wrap"
    assert args["fsdp_config"] == {"state_dict_type": "FULL_STATE_DICT", "activation_checkpointing": True}
    assert args["gradient_checkpointing"] is False


def _spec(**student) -> dict:
    return {"name": "x", "output_dir": "o", "teacher": {"model": "m"}, "prompts": {"sources": [
        {"dataset": "gsm8k_sample"}]}, "students": [{"name": "s", "base": "b", **student}]}


def _error(data: dict) -> str:
    with pytest.raises(SpecError) as e:
        parse_spec(data)
    return str(e.value)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="deepspeed is installed here")
def test_deepspeed_without_the_package_is_one_line():
    assert _error(_spec(method="full", gpus_per_worker=1, deepspeed={"zero_optimization": {"stage": 3}})) == (
        "students[0].deepspeed: student.deepspeed needs the deepspeed package, which is not installed "
        "(pip install 'distill[deepspeed]')")


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is not None, reason="liger-kernel is installed here")
def test_liger_without_the_package_is_one_line():
    assert _error(_spec(use_liger_kernel=True)) == (
        "students[0].use_liger_kernel: student.use_liger_kernel needs the liger-kernel package, which is not "
        "installed (pip install 'distill[liger-kernel]')")


def test_train_fingerprint_of_a_student_without_the_new_switches_is_unchanged():
    """Runs trained before deepspeed and use_liger_kernel existed keep their train stages."""
    before = {"name", "base", "method", "lora", "epochs", "learning_rate", "batch_size", "gradient_accumulation_steps",
              "max_length", "warmup_ratio", "bf16", "packing", "gradient_checkpointing", "workers", "fsdp",
              "cpus_per_worker", "gpus_per_worker", "save_steps", "max_failures", "chat_template"}
    assert set(student_fingerprint(Student(name="s", base="b"))) == before


def _checkpoint(root, step: int, whole: bool = True):
    d = root / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"w")
    if whole:
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return d


def test_resume_skips_a_checkpoint_cut_short_by_a_kill(tmp_path):
    assert last_complete_checkpoint(tmp_path / "none") is None and step_of(None) == 0
    _checkpoint(tmp_path, 10)
    newest = _checkpoint(tmp_path, 20)
    _checkpoint(tmp_path, 30, whole=False)  # killed mid-save: weights, no trainer state
    assert last_complete_checkpoint(tmp_path) == newest and step_of(newest) == 20


def test_checkpoints_are_kept_by_stage_fingerprint(tmp_path):
    a = checkpoint_dir(tmp_path, "s", "fp-a")
    _checkpoint(a, 4)
    assert checkpoint_dir(tmp_path, "s", "fp-a") == a and (a / "checkpoint-4").exists()  # re-run: resumes
    b = checkpoint_dir(tmp_path, "s", "fp-b")  # the student changed: starts over, the old ones go
    assert b != a and not a.exists()
