"""The package's `gguf/` folder: F16 and Q8_0 GGUF files plus an Ollama Modelfile, and the model card's
"Run it locally" section that says how to use them."""

from __future__ import annotations

from pathlib import Path

from distill.export.gguf import QUANTS, GGUFUnsupported, adds_bos, check_supported, export_gguf
from distill.export.modelfile import TemplateUnsupported, stop_tokens, write_modelfile

# about half F16's size; top-1 next-token agreement with the merged model >= 99% on the trained tiny students,
# 98.3% on SmolLM2-135M (tests/test_export_gguf.py)
OLLAMA_QUANT = "Q8_0"


def write_gguf_folder(merged_dir: Path, out_dir: Path, name: str) -> dict:
    """Write `out_dir` (the package's gguf/). Returns what the manifest records: the files and stop tokens, or
    `skipped` with the one-line reason when the student's architecture or tokenizer has no faithful GGUF."""
    from transformers import AutoTokenizer

    try:
        check_supported(merged_dir)  # before loading a tokenizer the student may not have in a known form
        tok = AutoTokenizer.from_pretrained(merged_dir)
        written = export_gguf(merged_dir, out_dir, name, QUANTS, tok=tok)
    except GGUFUnsupported as e:
        return {"skipped": f"no GGUF: {e}"}
    add_bos = adds_bos(tok)
    info = {"files": {w.quant: w.path.name for w in written}, "stop": stop_tokens(tok)}
    try:
        (out_dir / "Modelfile").write_text(write_modelfile(tok, f"{name}-{OLLAMA_QUANT}.gguf", add_bos))
        info["modelfile"] = "Modelfile"
    except TemplateUnsupported as e:
        info["modelfile_skipped"] = str(e)
    return info


def run_locally_section(name: str, info: dict | None) -> str:
    """Markdown for the model card; empty when there is no GGUF."""
    if not info or "files" not in info:
        return f"GGUF: not exported ({info['skipped']}).\n\n" if info and "skipped" in info else ""
    q8 = f"gguf/{info['files'][OLLAMA_QUANT]}"
    ollama = (f"With [Ollama](https://ollama.com) (the Modelfile carries the chat template, the stop token "
              f"{', '.join(f'`{s}`' for s in info['stop'])} and R1's sampling, temperature 0.6 and top-p 0.95):\n\n"
              f"```sh\ncd gguf\nollama create {name} -f Modelfile\nollama run {name}\n```\n\n"
              if "modelfile" in info else f"No Ollama Modelfile: {info.get('modelfile_skipped')}.\n\n")
    return ("## Run it locally\n\n`gguf/` holds the student as GGUF for llama.cpp, Ollama and LM Studio: "
            + ", ".join(f"`{f}` ({q})" for q, f in info["files"].items()) + ", each with the tokenizer and the "
            f"chat template.\n\n{ollama}"
            f"With [llama.cpp](https://github.com/ggml-org/llama.cpp) (chat mode, using the template in the file):\n\n"
            f"```sh\nllama-cli -m {q8} --jinja --temp 0.6 --top-p 0.95\n```\n\n")
