"""The Ollama Modelfile: its TEMPLATE, rendered by Go's text/template (Ollama's engine) for a two-turn
conversation, is the text the student's Hugging Face chat template renders; its stops are the end-of-turn
token the EOS tests check; its sampling is R1's."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from distill.export.modelfile import TemplateUnsupported, write_modelfile
from tests.conftest import FAMILIES

RENDERER = Path(__file__).parent / "ollama_template" / "render.go"
TWO_TURNS = [
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "The final answer is $\\boxed{4}$."},
    {"role": "user", "content": "And 3 + 3?\nShow your steps."},
]


@pytest.fixture(scope="module")
def go_render(tmp_path_factory):
    """Go's text/template renderer (tests/ollama_template/render.go), built once. `.ci/setup` installs Go."""
    go = shutil.which("go")
    assert go, "Go is not installed (.ci/setup installs Debian's golang-go)"
    out = tmp_path_factory.mktemp("go")
    env = {**os.environ, "GOCACHE": str(out / "cache"), "GOPATH": str(out / "gopath"), "HOME": str(out)}
    subprocess.run([go, "build", "-o", str(out / "render"), str(RENDERER)], check=True, env=env, cwd=out)

    def render(template: str, messages: list[dict]) -> str:
        done = subprocess.run([str(out / "render")], input=json.dumps({"template": template, "messages": messages}),
                              capture_output=True, text=True, check=True)
        return done.stdout

    return render


def _parse(modelfile: str) -> tuple[str, list[str], dict[str, str]]:
    template = re.search(r'^TEMPLATE """(.*?)"""$', modelfile, re.S | re.M).group(1)
    stops = [json.loads(v) for v in re.findall(r"^PARAMETER stop (.+)$", modelfile, re.M)]
    params = dict(re.findall(r"^PARAMETER (temperature|top_p) (\S+)$", modelfile, re.M))
    return template, stops, params


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("family", ["qwen2_5", "qwen3", "llama3", "smollm2"])
@pytest.mark.parametrize("add_bos", [False, True])
def test_modelfile_template_renders_like_the_hf_chat_template(family, add_bos, go_render, tiny_family, tiny_llama):
    tok = _tokenizer(tiny_llama if family == "smollm2" else tiny_family(family))
    modelfile = write_modelfile(tok, "student-Q8_0.gguf", add_bos=add_bos)
    assert modelfile.splitlines()[1] == "FROM ./student-Q8_0.gguf"
    template, stops, params = _parse(modelfile)
    # llama.cpp puts BOS in front itself when the GGUF says add_bos_token; the template must not repeat it
    bos = tok.bos_token if add_bos and tok.bos_token else ""
    for messages in (TWO_TURNS, [{"role": "system", "content": "You are terse."}] + TWO_TURNS):
        want = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        got = go_render(template, messages)
        assert (bos if want.startswith(bos) else "") + got == want
    eot = "<|im_end|>" if family == "smollm2" else FAMILIES[family][3]
    assert stops[0] == eot and tok.eos_token in stops
    assert params == {"temperature": "0.6", "top_p": "0.95"}


def test_template_with_per_message_logic_is_refused(tiny_qwen2):
    tok = _tokenizer(tiny_qwen2)
    # numbers each user turn: not a fixed text between messages
    tok.chat_template = ("{% for m in messages %}{% if m.role == 'user' %}[{{ loop.index }}]{% endif %}"
                         "{{ m.content }}<|im_end|>{% endfor %}{% if add_generation_prompt %}A:{% endif %}")
    with pytest.raises(TemplateUnsupported, match=r"^the chat template is not a fixed text between messages"):
        write_modelfile(tok, "x.gguf", add_bos=False)
