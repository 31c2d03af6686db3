"""Can this teacher score this student's tokens? The guardrails of on-policy distillation, checked on the tokenizers
(from the resolved model files, no engine) before anything starts.

On-policy distillation compares the teacher's and the student's probabilities of the *same token ids* (the student
samples, the teacher scores those ids), so both must share one tokenizer: the same vocabulary (token -> id), the same
special tokens, and the same way of ending a turn (EOS and the chat template's end-of-turn token). A student that
stops on a token its teacher never stops on is taught, token by token, to ramble past its own end.
"""

from __future__ import annotations

from pathlib import Path


def load_tokenizer(model_dir: str, chat_template: str | None = None):
    """The tokenizer a model (a local directory) is trained and served with: its own, with a student's
    `chat_template` override applied (what its saved tokenizer will carry)."""
    from transformers import AutoTokenizer

    from distill.training.chat_templates import template_text

    tok = AutoTokenizer.from_pretrained(model_dir)
    if chat_template:
        tok.chat_template = template_text(chat_template)
    return tok


def stop_tokens(tok, model_dir: str | None = None) -> list[str]:
    """The tokens a model stops on: EOS, the chat template's end-of-turn token, and the EOS ids of its
    generation_config.json (what vLLM stops on), as token strings, sorted."""
    import json

    from distill.training.sft import stop_token_ids

    ids = set(stop_token_ids(tok))
    gen = Path(model_dir or "") / "generation_config.json"
    if model_dir and gen.is_file():
        try:
            eos = json.loads(gen.read_text()).get("eos_token_id")
        except ValueError:
            eos = None
        ids |= set(eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else [])
    return sorted(tok.convert_ids_to_tokens(sorted(ids)))


def mismatch(teacher, student, teacher_dir: str | None = None, student_dir: str | None = None) -> str | None:
    """Why a student with tokenizer `student` cannot be distilled on-policy from a teacher with tokenizer
    `teacher`, as one clause, or None when they match: vocabulary, then special tokens, then stop tokens."""
    tv, sv = teacher.get_vocab(), student.get_vocab()
    if tv != sv:
        only_t = sorted(set(tv) - set(sv))
        only_s = sorted(set(sv) - set(tv))
        moved = sorted(t for t in set(tv) & set(sv) if tv[t] != sv[t])
        if only_s:
            example = f"'{only_s[0]}' only in the student's"
        elif only_t:
            example = f"'{only_t[0]}' only in the teacher's"
        else:
            example = f"'{moved[0]}' is id {tv[moved[0]]} for the teacher, {sv[moved[0]]} for the student"
        return f"the vocabularies differ ({len(tv)} vs {len(sv)} tokens; {example})"
    t_special, s_special = _special(teacher), _special(student)
    if t_special != s_special:
        role = next(r for r in sorted(set(t_special) | set(s_special)) if t_special.get(r) != s_special.get(r))
        return (f"the special tokens differ ({role}: {_show(t_special.get(role))} for the teacher, "
                f"{_show(s_special.get(role))} for the student)")
    t_stop, s_stop = stop_tokens(teacher, teacher_dir), stop_tokens(student, student_dir)
    if t_stop != s_stop:
        return f"they stop differently (the teacher stops on {t_stop}, the student on {s_stop})"
    return None


def _special(tok) -> dict[str, str]:
    """Special tokens by role (bos, eos, pad, ..., additional: the sorted list), and every added special token."""
    out = {role: str(value) for role, value in tok.special_tokens_map.items()}
    out["all special tokens"] = str(sorted(tok.all_special_tokens))
    return out


def _show(value: str | None) -> str:
    return "none" if value is None else f"'{value}'" if not value.startswith("[") else value
