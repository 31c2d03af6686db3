"""`distill publish RUN_DIR --repo-id ORG/NAME`: a packaged student, or the SFT dataset, to the Hugging Face Hub.

The upload is one `huggingface_hub` commit. What goes into it is planned first (and tested: the upload itself
needs the network and a token): for a model, the merged weights at the repository root (so
`from_pretrained("ORG/NAME")` works), `adapter/` and `gguf/` as they are, the model card and the manifest; for
the dataset, the dataset card and the Parquet file it points at. The token is huggingface_hub's (HF_TOKEN or
`hf auth login`), never logged.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from distill.export.dataset_card import DATA_FILE


class PublishError(ValueError):
    """Publishing cannot start; str() is one line."""


@dataclass
class Plan:
    repo_type: str  # "model" or "dataset"
    files: dict[str, Path] = field(default_factory=dict)  # path in the repository -> local file
    card: str = ""  # README.md text, with the metadata the Hub needs


def _student_dir(run_dir: Path, student: str | None) -> Path:
    pkgs = sorted(p for p in (run_dir / "package").glob("*") if (p / "manifest.json").is_file()) \
        if (run_dir / "package").is_dir() else []
    if student is not None:
        hits = [p for p in pkgs if p.name == student]
        if not hits:
            raise PublishError(f"publish: no packaged student '{student}' in {run_dir} (packaged: "
                               f"{', '.join(p.name for p in pkgs) or 'none'})")
        return hits[0]
    if len(pkgs) != 1:
        raise PublishError(f"publish: {run_dir} has {len(pkgs)} packaged students"
                           + (f" ({', '.join(p.name for p in pkgs)}): pass --student NAME" if pkgs else ""))
    return pkgs[0]


def _card(path: Path, license: str | None, drop_local_base: bool) -> str:
    """The card with --license applied, and a base_model that is a local path dropped (the Hub wants a repo id)."""
    text = path.read_text()
    _, head, body = text.split("---\n", 2)
    meta = yaml.safe_load(head) or {}
    if license:
        meta["license"] = license
    base = meta.get("base_model")
    if drop_local_base and isinstance(base, str) and (base.startswith(("/", ".", "~")) or Path(base).exists()):
        del meta["base_model"]
    return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n{body}"


def plan(run_dir: str | Path, *, student: str | None = None, dataset: bool = False,
         license: str | None = None) -> Plan:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PublishError(f"publish: run directory not found: {run_dir}")
    if dataset:
        sft = run_dir / "sft"
        if not (sft / "README.md").is_file() or not (sft / DATA_FILE).is_file():
            raise PublishError(f"publish: {sft} has no dataset card and {DATA_FILE} (run the sft stage)")
        return Plan("dataset", {DATA_FILE: sft / DATA_FILE}, _card(sft / "README.md", license, False))
    pkg = _student_dir(run_dir, student)
    files: dict[str, Path] = {}
    for p in sorted(pkg.rglob("*")):
        if not p.is_file() or p.name == "README.md" and p.parent == pkg:
            continue
        rel = p.relative_to(pkg).as_posix()
        files[rel.removeprefix("merged/")] = p  # merged weights at the root: from_pretrained("ORG/NAME")
    return Plan("model", files, _card(pkg / "README.md", license, True))


def _token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise PublishError("publish: no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    return token


def _repo_id(repo_id: str) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise PublishError(f"publish: --repo-id must be ORG/NAME, not {repo_id!r}") from None
    if "/" not in repo_id:
        raise PublishError(f"publish: --repo-id must be ORG/NAME, not {repo_id!r}")
    return repo_id


def publish(run_dir: str | Path, repo_id: str, *, student: str | None = None, dataset: bool = False,
            license: str | None = None, private: bool = False) -> str:
    """Upload; returns the commit URL. Everything that can fail here fails before the network is touched."""
    from huggingface_hub import CommitOperationAdd, HfApi

    repo_id = _repo_id(repo_id)
    p = plan(run_dir, student=student, dataset=dataset, license=license)
    token = _token()
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type=p.repo_type, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        card = Path(tmp) / "README.md"
        card.write_text(p.card)
        ops = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card))]
        ops += [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(local)) for rel, local in p.files.items()]
        info = api.create_commit(repo_id, operations=ops, repo_type=p.repo_type,
                                 commit_message=f"distill publish {Path(run_dir).name}")
    return info.commit_url


def add_command(sub) -> None:
    """`distill publish` on the CLI's subparsers."""
    p = sub.add_parser("publish", help="upload a packaged student (or, with --dataset, the SFT data) to the "
                                       "Hugging Face Hub; needs HF_TOKEN")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run's output directory")
    p.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub (created if missing)")
    p.add_argument("--student", help="which packaged student, when the run has several")
    p.add_argument("--dataset", action="store_true", help="publish the SFT dataset (sft/) instead of a student")
    p.add_argument("--license", help="license id for the card's metadata (e.g. apache-2.0; default: the card's)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.set_defaults(fn=_cmd_publish)


def _cmd_publish(args) -> int:
    url = publish(args.run_dir, args.repo_id, student=args.student, dataset=args.dataset, license=args.license,
                  private=args.private)
    print(f"published: {url}")
    return 0
