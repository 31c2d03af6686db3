"""Spec validation: good specs load, bad ones fail with one line per problem naming the field."""

from __future__ import annotations

import copy

import pytest
import yaml

from distill.cli import main
from distill.spec import SpecError, load_spec, parse_spec
from tests.conftest import REPO

QUICKSTART = REPO / "examples" / "quickstart.yaml"


def _data() -> dict:
    return yaml.safe_load(QUICKSTART.read_text())


def _error(data: dict) -> str:
    with pytest.raises(SpecError) as e:
        parse_spec(data, base_dir=QUICKSTART.parent)
    return str(e.value)


def test_quickstart_spec_is_valid():
    spec = load_spec(QUICKSTART)
    assert spec.teacher.model == "smollm2-135m"
    assert spec.sampling.n == 4
    assert spec.students[0].method == "lora"
    assert [b.name for b in spec.eval.benchmarks] == ["gsm8k_test", "arith_steps_test"]
    # local paths are resolved against the spec file, so the run does not depend on the current directory
    assert spec.prompts.sources[1].path.endswith("datasets_spec/data/arithmetic.jsonl")


def test_gain_spec_is_valid_and_evaluates_held_out_problems():
    spec = load_spec(REPO / "examples" / "gain.yaml")
    assert spec.teacher.model == spec.students[0].base == "smollm2-135m" and spec.sampling.until_verified
    assert len(spec.teacher.examples) == 3  # few-shot turns for the teacher only
    assert [(b.name, b.problems) for b in spec.eval.benchmarks] == [("arith_steps_test", 300)]
    held_out = REPO / "datasets_spec" / "benchmarks" / "arith_steps_test.jsonl"
    assert len(held_out.read_text().splitlines()) >= 500
    assert spec.prompts.sources[0].dataset == "arith_steps_train" and spec.filter.decontaminate
    assert spec.teacher.engine["enforce_eager"] is True


def test_unknown_key_names_the_field():
    d = _data()
    d["teacher"]["modle"] = "x"
    assert _error(d) == "teacher.modle: unknown key"


def test_wrong_type_names_the_field():
    d = _data()
    d["sampling"]["n"] = "many"
    msg = _error(d)
    assert msg.startswith("sampling.n: ") and "\n" not in msg


def test_missing_file_names_the_field():
    d = _data()
    d["prompts"]["sources"][1]["path"] = "nope.jsonl"
    assert _error(d) == "prompts.sources[1].path: file not found: nope.jsonl"


def test_unknown_dataset_and_benchmark():
    d = _data()
    d["prompts"]["sources"][0]["dataset"] = "gsm9k"
    d["eval"]["benchmarks"][0]["name"] = "mmlu"
    lines = _error(d).splitlines()
    assert lines[0].startswith("prompts.sources[0].dataset: unknown dataset 'gsm9k'")
    assert lines[1].startswith("eval.benchmarks[0].name: unknown dataset 'mmlu'")


def test_missing_required_and_bad_method():
    d = _data()
    del d["teacher"]
    d["students"][0]["method"] = "qlora"
    lines = _error(d).splitlines()
    assert "teacher: Field required" in lines
    assert any(line.startswith("students[0].method: ") for line in lines)


def test_duplicate_student_names():
    d = _data()
    d["students"].append(copy.deepcopy(d["students"][0]))
    assert "duplicate name" in _error(d)


def test_cli_validate(tmp_path, capsys):
    assert main(["validate", str(QUICKSTART)]) == 0
    assert capsys.readouterr().out.startswith("ok: quickstart")
    d = _data()
    d["sampling"]["temprature"] = 0.5
    d["prompts"]["sources"][1]["path"] = str(REPO / "datasets_spec" / "data" / "arithmetic.jsonl")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(d))
    assert main(["validate", str(bad)]) == 2
    assert capsys.readouterr().err == "spec error: sampling.temprature: unknown key\n"
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_student_fsdp_on_cpu_and_unknown_chat_template_name_the_field():
    d = _data()
    d["students"][0].update({"fsdp": True, "workers": 2})
    d["students"].append({**copy.deepcopy(d["students"][0]), "name": "b", "fsdp": False, "chat_template": "qwen9"})
    lines = _error(d).splitlines()
    assert lines[0].startswith("students[0]: ") and "student.fsdp needs workers > 1 and gpus_per_worker > 0" in lines[0]
    assert lines[1].startswith("students[1].chat_template: student.chat_template: unknown template 'qwen9'")


def test_teacher_is_one_config_class_per_backend():
    """`backend` picks the teacher's config class; left out it is vLLM (specs from before the choice still load)."""
    from distill.spec import OpenAITeacher, VLLMTeacher

    d = _data()
    del d["teacher"]["backend"]
    assert type(parse_spec(d, base_dir=QUICKSTART.parent).teacher) is VLLMTeacher
    d["teacher"] = {"model": "m", "backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "concurrency": 4}
    teacher = parse_spec(d, base_dir=QUICKSTART.parent).teacher
    assert type(teacher) is OpenAITeacher and teacher.concurrency == 4
    assert "num_gpus" not in teacher.model_dump() and "base_url" not in VLLMTeacher.model_fields


def test_a_field_of_the_other_backend_is_one_line_naming_it():
    d = _data()
    d["teacher"]["concurrency"] = 8  # an openai field on the (vllm) quickstart teacher
    assert _error(d) == "teacher.concurrency: a field of backend 'openai', not of backend 'vllm'"
    d["teacher"] = {"model": "m", "backend": "openai", "base_url": "http://h/v1", "num_gpus": 1}
    assert _error(d) == "teacher.num_gpus: a field of backend 'vllm', not of backend 'openai'"
    d["teacher"] = {"model": "m", "backend": "tgi"}
    assert _error(d) == "teacher.backend: unknown backend 'tgi' (one of: vllm, openai)"
    d["teacher"] = {"model": "m", "backend": "openai"}
    assert _error(d) == "teacher.base_url: Field required"


def test_cli_validate_reports_a_wrong_backend_field_without_traceback(tmp_path, capsys):
    d = _data()
    d["teacher"]["api_key_env"] = "KEY"
    d["prompts"]["sources"][1]["path"] = str(QUICKSTART.parent / d["prompts"]["sources"][1]["path"])
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(d))
    assert main(["validate", str(path)]) != 0
    err = capsys.readouterr().err
    assert err.strip().endswith("teacher.api_key_env: a field of backend 'openai', not of backend 'vllm'")
    assert "Traceback" not in err


def test_teacher_fingerprint_is_what_the_single_teacher_class_dumped():
    """Fingerprints see every backend's fields, as before the split: generate stages of existing runs made with
    default throughput knobs stay done."""
    from distill.spec import VLLMTeacher, teacher_fingerprint

    assert teacher_fingerprint(VLLMTeacher(model="m", num_gpus=1)) == {
        "model": "m", "backend": "vllm", "engine": {}, "replicas": 1, "num_gpus": 1, "num_cpus": 1, "batch_size": 64,
        "system_prompt": None, "shard_size": None, "max_shard_attempts": 3, "base_url": None, "api_key_env": None,
        "concurrency": 16, "timeout_s": 600, "max_retries": 5, "backoff_s": 1.0, "max_backoff_s": 60.0,
        "send_seed": False}


def _eval_spec(teacher: dict, students: list | None = None, **ev):
    from distill.spec import parse_spec

    return parse_spec({"name": "x", "output_dir": "o", "teacher": teacher,
                       "prompts": {"sources": [{"dataset": "gsm8k_sample"}]},
                       "students": students or [{"name": "s", "base": "b"}],
                       "eval": {"benchmarks": ["gsm8k_test"], **ev}})


def test_eval_has_its_own_placement_nothing_from_the_teacher():
    from distill.spec import eval_placement
    from distill.teachers.vllm import VLLMBackend, placement

    big = {"model": "m", "num_gpus": 8, "replicas": 2, "num_cpus": 16,
           "engine": {"tensor_parallel_size": 8, "max_model_len": 32768}}
    e = eval_placement(_eval_spec(big), "student")
    assert (e.model, e.num_gpus, e.replicas, e.num_cpus, e.engine) == ("student", 1, 1, 1, {})
    assert placement(e)["bundles"] is None  # one plain GPU actor per replica, no tensor-parallel group
    # An API teacher with students trained on GPUs: eval on GPUs, one per replica.
    api = {"model": "gpt-x", "backend": "openai", "base_url": "http://127.0.0.1:9/v1"}
    gpu_students = [{"name": "s", "base": "b", "gpus_per_worker": 1}]
    e = eval_placement(_eval_spec(api, gpu_students, replicas=4, max_model_len=8192, engine={"dtype": "bfloat16"}))
    assert (e.num_gpus, e.replicas, e.engine) == (1, 4, {"dtype": "bfloat16", "max_model_len": 8192})
    assert VLLMBackend(e, seed=0).engine_kwargs() == {"dtype": "bfloat16", "max_model_len": 8192}
    # An API teacher and CPU students: the CPU build, which starts eager (item: fast start on CPU).
    cpu = eval_placement(_eval_spec(api))
    assert cpu.num_gpus == 0 and VLLMBackend(cpu, seed=0).engine_kwargs()["enforce_eager"] is True
    # Said explicitly: it wins over the default.
    assert eval_placement(_eval_spec(big, num_gpus=0)).num_gpus == 0


def test_eval_context_given_twice_names_the_field():
    with pytest.raises(SpecError) as e:
        _eval_spec({"model": "m"}, max_model_len=2048, engine={"max_model_len": 4096})
    assert str(e.value) == "eval: max_model_len is set both here and in eval.engine: give it once"
