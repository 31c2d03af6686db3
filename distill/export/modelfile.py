"""An Ollama Modelfile for a GGUF student: its chat template in Ollama's (Go text/template) syntax, its stop tokens
and R1's recommended sampling.

The template is not hand-written per family: it is read off the student's own Hugging Face chat template by
rendering probe conversations and cutting the text at the probe contents. What lies between two messages
depends only on the two roles, so the Go template emits, before each message, the piece for (previous role,
this role), and after the last user message the piece that closes it and opens the assistant's turn. The
result is checked against the HF template on other conversations before it is written; a template that
does not fit this shape (tools, per-message logic) is refused rather than written wrong.

A wrong stop token gives Ollama's "never stops" failure, so the stops are the template's end-of-turn token
(the one the EOS tests check) and the tokenizer's EOS.
"""

from __future__ import annotations

import json

from distill.export.gguf import end_of_turn_token

TEMPERATURE, TOP_P = 0.6, 0.95  # DeepSeek-R1's recommended sampling for its distilled models
_PROBE = {"system": "distill-probe-system", "u1": "distill-probe-user-one", "a1": "distill-probe-assistant-one",
          "u2": "distill-probe-user-two"}


class TemplateUnsupported(ValueError):
    """The chat template cannot be written as a role-to-role Ollama template; str() says why in one line."""


def _render(tok, messages, generation=True) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def _cut(text: str, *probes: str) -> list[str]:
    """The text around each probe in order: n probes give n + 1 pieces."""
    pieces = []
    for p in probes:
        if text.count(p) != 1:
            raise TemplateUnsupported(f"the chat template does not render message contents verbatim ({p!r})")
        head, text = text.split(p)
        pieces.append(head)
    return pieces + [text]


def template_pieces(tok, strip_bos: bool) -> dict[str, str]:
    """Text before a message given (previous role, role), and after the last user message."""
    p = _PROBE
    head, user_asst, asst_user, user_end = _cut(_render(tok, [
        {"role": "user", "content": p["u1"]}, {"role": "assistant", "content": p["a1"]},
        {"role": "user", "content": p["u2"]}]), p["u1"], p["a1"], p["u2"])
    sys_head, sys_user, sys_end = _cut(_render(tok, [
        {"role": "system", "content": p["system"]}, {"role": "user", "content": p["u1"]}]), p["system"], p["u1"])
    if sys_end != user_end:
        raise TemplateUnsupported("the chat template closes a user turn differently after a system message")
    bos = tok.bos_token or ""
    if strip_bos and bos:  # llama.cpp adds BOS itself when the GGUF says add_bos_token
        head, sys_head = head.removeprefix(bos), sys_head.removeprefix(bos)
    return {"start>user": head, "start>system": sys_head, "system>user": sys_user, "user>assistant": user_asst,
            "assistant>user": asst_user, "user>end": user_end}


def render_pieces(pieces: dict[str, str], messages: list[dict]) -> str:
    """What the Ollama template renders for `messages`, computed from the pieces (the self-check's reference)."""
    out, prev = [], "start"
    for m in messages:
        out.append(pieces[f"{prev}>{m['role']}"] + m["content"])
        prev = m["role"]
    if prev == "user":
        out.append(pieces["user>end"])
    return "".join(out)


def _lit(s: str) -> str:
    """A Go string literal (JSON's escapes are a subset of Go's) in an action that trims the layout before it."""
    return "{{- " + json.dumps(s) + " }}"


def ollama_template(pieces: dict[str, str]) -> str:
    # Literal text only inside {{- "..." }} actions, and every action opens with `{{-`: the newlines and indents
    # between actions are layout that Go trims, and the model's own newlines stay inside the string literals.
    lines = ['{{- $prev := "start" }}', "{{- range .Messages }}"]
    first = True
    for key, (prev, role) in (("start>system", ("start", "system")), ("start>user", ("start", "user")),
                              ("system>user", ("system", "user")), ("user>assistant", ("user", "assistant")),
                              ("assistant>user", ("assistant", "user"))):
        cond = f'and (eq $prev "{prev}") (eq .Role "{role}")'
        lines += [f"  {{{{- {'if' if first else 'else if'} {cond} }}}}", f"    {_lit(pieces[key])}"]
        first = False
    lines += ["  {{- end }}", "  {{- .Content }}", "  {{- $prev = .Role }}", "{{- end }}",
              '{{- if eq $prev "user" }}', f"  {_lit(pieces['user>end'])}", "{{- end }}"]
    return "\n".join(lines)


def _self_check(tok, pieces: dict[str, str], strip_bos: bool) -> None:
    bos = tok.bos_token if strip_bos and tok.bos_token else ""
    for messages in (
        [{"role": "user", "content": "Hi there"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
         {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}],
    ):
        want = _render(tok, messages)
        if (bos if want.startswith(bos) else "") + render_pieces(pieces, messages) != want:
            raise TemplateUnsupported("the chat template is not a fixed text between messages (it has per-message "
                                      "logic an Ollama role template cannot express)")


def stop_tokens(tok) -> list[str]:
    return list(dict.fromkeys(t for t in (end_of_turn_token(tok), tok.eos_token) if t))


def write_modelfile(tok, gguf_file: str, add_bos: bool) -> str:
    """The Modelfile text for `ollama create NAME -f Modelfile`, next to `gguf_file`."""
    pieces = template_pieces(tok, strip_bos=add_bos)
    _self_check(tok, pieces, add_bos)
    template = ollama_template(pieces)
    if '"""' in template:
        raise TemplateUnsupported('the chat template contains """, which a Modelfile cannot quote')
    stops = "".join(f"PARAMETER stop {json.dumps(s)}\n" for s in stop_tokens(tok))
    return (f"# ollama create <name> -f Modelfile && ollama run <name>\n"
            f"FROM ./{gguf_file}\n\n"
            f'TEMPLATE """{template}"""\n\n'
            f"{stops}"
            f"PARAMETER temperature {TEMPERATURE}\n"
            f"PARAMETER top_p {TOP_P}\n")
