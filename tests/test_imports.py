"""The package's import graph, read with `ast` (module-level and function-level imports both): no cycles, and no
module takes another module's private (`_name`) function or class."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "distill"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT / rel).with_suffix(".py").exists() or (ROOT / rel / "__init__.py").exists()


def _imports(path: Path) -> list[tuple[str, str | None, int]]:
    """(module imported, name taken from it or None, line) for every import statement anywhere in the file."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for a in node.names:
                sub = f"{base}.{a.name}"
                # `from pkg import sub` imports the submodule; `from mod import name` takes a name from mod
                out.append((sub, None, node.lineno) if _is_module(sub) else (base, a.name, node.lineno))
    return out


def import_graph(pkg: Path = PKG) -> tuple[dict[str, set[str]], list[str]]:
    """{module: modules of the package it imports}, and every private name one module takes from another."""
    graph: dict[str, set[str]] = {}
    private = []
    for path in sorted(pkg.rglob("*.py")):
        mod = _module_name(path)
        graph.setdefault(mod, set())
        for target, name, line in _imports(path):
            if target.split(".")[0] != pkg.name:
                continue
            if target != mod:
                graph[mod].add(target)
            if name and name.startswith("_") and not name.startswith("__") and target != mod:
                private.append(f"{path.relative_to(ROOT)}:{line}: imports {name} from {target}")
    return graph, private


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    graph, _ = import_graph()
    assert len(graph) > 40  # the walk found the package
    assert cycles(graph) == []


def test_no_private_names_across_modules():
    _, private = import_graph()
    assert private == []


def test_the_walk_sees_function_level_imports_and_cycles(tmp_path):
    """The checker itself: a cycle hidden in a function-level import is found, and so is a private import."""
    pkg = tmp_path / "distill"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from distill import b\n")
    (pkg / "b.py").write_text("def f():\n    from distill.a import _helper\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        graph, private = import_graph(pkg)
    finally:
        ROOT = saved
    assert cycles(graph) == [["distill.a", "distill.b"]]
    assert private == ["distill/b.py:2: imports _helper from distill.a"]
