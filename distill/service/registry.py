"""Packaged students under an artifacts root: list them, and download one with its hashes checked.

A root holds run directories (any depth); each packaged student is `<run>/package/<student>/manifest.json`
(`distill/pipeline/package.py`). The root is a local path or any fsspec URL (s3://bucket/distill, gs://...), so the same
calls work on a shared volume and on an object store the jobs upload to.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from distill.service.errors import ClientError, IntegrityError, ModelNotFound

Variant = Literal["merged", "adapter", "gguf"]
VARIANTS = ("merged", "adapter", "gguf")  # the package's sub-folders download() fetches


class Model(BaseModel):
    name: str = Field(description="the student's name in the spec")
    id: str = Field(description="'<run>/<name>': unique under the root")
    run: str = Field(description="the run directory, relative to the root")
    path: str = Field(description="the package directory (path or URL)")
    base_model: str
    method: str
    variants: list[str] = Field(description="what download() can fetch: merged, adapter for LoRA students, gguf "
                                            "(F16 and Q8_0 files and an Ollama Modelfile) when it was exported")
    scores: dict
    lineage: dict
    files: dict[str, str] = Field(description="path in the package -> sha256")


def _fs(root: str):
    import fsspec

    return fsspec.core.url_to_fs(str(root))


def list_models(root: str | Path) -> list[Model]:
    fs, base = _fs(str(root))
    base = base.rstrip("/")
    if not fs.exists(base):
        raise ClientError(f"artifacts root not found: {root}")
    found = []
    for path in sorted(fs.glob(f"{base}/**/package/*/manifest.json")):
        pkg = path.rsplit("/", 1)[0]
        if pkg.rsplit("/", 1)[1].startswith("."):
            continue  # a package stage still being built
        manifest = json.loads(fs.cat_file(path))
        run = "/".join(pkg[len(base):].strip("/").split("/")[:-2])  # pkg is <root>/<run>/package/<student>
        variants = sorted({f.split("/", 1)[0] for f in manifest["files"] if "/" in f} & set(VARIANTS))
        url = fs.unstrip_protocol(pkg) if "://" in str(root) else pkg
        found.append(Model(name=manifest["name"], id=f"{run}/{manifest['name']}" if run else manifest["name"],
                           run=run, path=url, base_model=manifest["base_model"], method=manifest["method"],
                           variants=variants, scores=manifest.get("scores") or {},
                           lineage=manifest.get("lineage") or {}, files=manifest["files"]))
    return found


def find(root: str | Path, name: str) -> Model:
    """By id ('<run>/<name>') or by name when only one run has a student of that name."""
    models = list_models(root)
    hits = [m for m in models if m.id == name] or [m for m in models if m.name == name]
    if len(hits) == 1:
        return hits[0]
    known = ", ".join(m.id for m in models) or "none"
    if not hits:
        raise ModelNotFound(f"no packaged student '{name}' under {root} (packaged: {known})")
    raise ModelNotFound(f"'{name}' is packaged by {len(hits)} runs; ask for one of: "
                        + ", ".join(m.id for m in hits))


def download(root: str | Path, name: str, variant: Variant = "merged", dest: str | Path | None = None) -> Path:
    """Copy one variant of a packaged student to `dest` (default `./<name>-<variant>`), checking every file's
    sha256 against the manifest. Returns `dest`, ready for `from_pretrained` (merged), PEFT (adapter), or
    `ollama create -f Modelfile` / `llama-cli -m` (gguf)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    model = find(root, name)
    if variant not in model.variants:
        raise ModelNotFound(f"{model.id} has no '{variant}' variant ({model.method} fine-tune; has: "
                            f"{', '.join(model.variants)})")
    fs, pkg = _fs(model.path)
    dest = Path(dest or f"{model.name}-{variant}")
    for rel, digest in sorted(model.files.items()):
        if not rel.startswith(f"{variant}/"):
            continue
        target = dest / rel[len(variant) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        fs.get_file(f"{pkg.rstrip('/')}/{rel}", str(tmp))
        h = hashlib.sha256()
        with open(tmp, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != digest:
            tmp.unlink()
            raise IntegrityError(f"{model.id}: {rel} has sha256 {h.hexdigest()[:16]}..., the manifest says "
                                 f"{digest[:16]}...")
        tmp.replace(target)
    return dest
