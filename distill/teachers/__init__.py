"""Teacher backends: where traces come from. Each is a plug-in behind `base.TeacherBackend`, chosen by the spec's
`teacher.backend`: `vllm` (offline engines in Ray actors, `vllm.py`) or `openai` (an OpenAI-compatible
endpoint, `openai.py`). Adding one = one module here, one config class in `distill.spec`, one entry below."""

from __future__ import annotations

import importlib

from distill.spec import Teacher

# backend name -> "module:class"; imported only when chosen (vLLM and httpx are heavy, and optional per backend)
BACKENDS = {"vllm": "distill.teachers.vllm:VLLMBackend", "openai": "distill.teachers.openai:OpenAIBackend"}


def make_backend(teacher: Teacher, seed: int, teacher_id: str | None = None):
    """The backend for `teacher` (not started); `teacher_id` is the name trace rows give the teacher."""
    module, cls = BACKENDS[teacher.backend].split(":")
    return getattr(importlib.import_module(module), cls)(teacher, seed, teacher_id)
