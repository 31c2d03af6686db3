"""The built wheel carries the `datasets_spec/` catalog (and the report's page template): installed into a fresh venv (no checkout on the path),
distill lists the same catalog and reads a shipped data file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from distill import catalog

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_catalog(tmp_path):
    # Built from a copy of what the wheel is made of, so the build leaves nothing in the checkout.
    src = tmp_path / "src"
    for name in ("pyproject.toml", "README.md"):
        (src / name).parent.mkdir(exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    for name in ("distill", "datasets_spec"):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    # --no-build-isolation: setuptools from this environment (no download); --no-deps: nothing but distill itself
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(src)], check=True, cwd=tmp_path, capture_output=True)
    wheel = next(wheels.glob("distill-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True)
    # The dependencies (pydantic, yaml, ...) come from this environment's site-packages, appended after the fresh
    # venv's own without its .pth files (they hold this environment's editable distill); the checkout is not on
    # the path (-I, cwd elsewhere).
    probe = ("import json, sys; from pathlib import Path; sys.path.append(sys.argv[1]); import distill.catalog as c; "
             "e = c.get('gsm8k_sample'); print(json.dumps({'file': c.__file__, 'names': c.names(), "
             "'rows': sum(1 for _ in c.read_rows(path=e.loader.path)), "
             "'page': (Path(c.__file__).parent / 'report' / 'page.html.j2').is_file()}))")
    out = subprocess.run([str(python), "-I", "-c", probe, sysconfig.get_paths()["purelib"]], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert got["file"].startswith(str(venv))  # the installed copy, not the checkout
    assert got["names"] == catalog.names() and "gsm8k_sample" in got["names"]
    assert got["rows"] == 200
    assert got["page"]  # the report's page template is package data too
