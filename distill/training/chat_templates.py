"""Chat templates for students: TRL's bundled copies of the model families' original templates, by name.

A base model without a chat template (Llama-3.1-8B, Qwen2.5-Math base checkpoints) or with the wrong one gets its
family's template from `student.chat_template`. We take TRL's copies (`trl/chat_templates/*.jinja`, kept
byte-identical to the hub originals by TRL's CI) rather than pasting templates into this repository.

`check_keeps_reasoning` guards against templates that re-render assistant turns without their reasoning
(DeepSeek-R1-Distill's drops everything up to `</think>`): trained through such a template the student would
learn answers with no reasoning, silently.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _bundled_dir() -> Path:
    spec = importlib.util.find_spec("trl")  # located without importing TRL (and torch) at spec-validation time
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("student.chat_template: named templates come from TRL, which is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "chat_templates"


def known() -> list[str]:
    return sorted(p.stem for p in _bundled_dir().glob("*.jinja") if not p.stem.endswith("_training"))


def template_text(name_or_path: str) -> str:
    """The Jinja text of a bundled template name (`qwen3`) or a `.jinja` file path."""
    path = Path(name_or_path).expanduser()
    if path.suffix == ".jinja":
        if not path.is_file():
            raise ValueError(f"student.chat_template: no such file {name_or_path}")
        return path.read_text(encoding="utf-8")
    bundled = _bundled_dir() / f"{name_or_path}.jinja"
    if not bundled.is_file():
        raise ValueError(f"student.chat_template: unknown template '{name_or_path}' (known: {', '.join(known())}; "
                         f"or a path to a .jinja file)")
    return bundled.read_text(encoding="utf-8")


def check_keeps_reasoning(tok, name: str) -> None:
    """Refuse a tokenizer whose template drops the reasoning (or the answer) of the assistant turn it trains on."""
    from distill.pipeline.sft import assistant_turn

    if not tok.chat_template:
        raise ValueError(f"student '{name}': the base tokenizer has no chat template; set student.chat_template "
                         f"(e.g. qwen2_5, qwen3, llama3_1)")
    turn = assistant_turn("distill-probe-reasoning", "distill-probe-answer", "correct")
    text = tok.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": turn}],
                                   tokenize=False)
    for part in ("distill-probe-reasoning", "distill-probe-answer"):
        if part not in text:
            raise ValueError(f"student '{name}': its chat template drops the {part.rsplit('-', 1)[1]} from the "
                             f"assistant turn it trains on; set student.chat_template to one that keeps <think>")
