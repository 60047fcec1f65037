"""The package's folders are its layers, and imports only go down them (docs/design.md section 1).

Every ``import`` of the package's own modules, at the top of a file or inside a function, read from the source with
``ast``: a module imports only modules of its own layer or of the layers below it, and no two folders import each
other, however indirectly. A module that belongs to no layer is a failure too, so a new top-level module is placed
in a layer (and in README's Layout) on purpose. Written for the layered tree; skipped while the flat one stands.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mpl_runner"

#: top to bottom: what each folder holds is in README, "Layout"
LAYERS = ("cli", "loop", "search", "gates", "record", "methods", "data", "models", "core")
#: what any module may import: the package itself (its version, its path) and the config files shipped in it
ANYWHERE = {"mpl_runner", "mpl_runner.conf"}
#: entry points above every layer
ENTRY = {"mpl_runner", "mpl_runner.__main__"}

layered = pytest.mark.skipif((PACKAGE / "cli.py").exists(), reason="the flat layout still stands (issue 23 item 1)")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, known: set[str]) -> set[str]:
    """The package's modules ``path`` imports anywhere in it (``from a.b import c`` names module ``a.b.c`` where
    that is one, else ``a.b``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "mpl_runner"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "mpl_runner":
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                      for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: a relative import (from {'.' * node.level}{node.module or ''} ...); "
                                 "the package imports itself by absolute names")
    return found


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(path, set(found)) for name, path in found.items()}


@layered
def test_every_module_is_in_a_layer():
    loose = [name for name in modules() if name not in ENTRY and layer(name) is None]
    assert not loose, f"modules in no layer of {LAYERS} (place each in a folder, and in README's Layout): {loose}"


@layered
def test_imports_only_go_down_the_layers():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for module, targets in graph().items():
        if module in ENTRY:
            continue
        for target in targets - ANYWHERE:
            if layer(target) is None or rank[layer(target)] < rank[layer(module)]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that go up the layers (" + " > ".join(LAYERS) + "):\n" + "\n".join(sorted(upward))


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``edges`` (node -> the nodes it imports) as ``[a, b, ..., a]``, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            found = visit(nxt)
            if found:
                return found
        path.pop()
        done.add(node)
        return None

    return next((found for found in map(visit, sorted(edges)) if found), None)


@layered
def test_no_two_folders_import_each_other():
    edges: dict[str, set[str]] = {name: set() for name in LAYERS}
    for module, targets in graph().items():
        if module not in ENTRY:
            edges[layer(module)] |= {layer(t) for t in targets - ANYWHERE if layer(t) not in (None, layer(module))}
    cycle = find_cycle(edges)
    assert cycle is None, "folders that import each other: " + " -> ".join(cycle)


def test_the_checks_find_a_cycle_and_an_import_inside_a_function(tmp_path):
    """The checks can fail: a loop of three folders is found, and an import made inside a function is read (the
    command line imports its heavy parts lazily)."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from mpl_runner.core import errors\n    import mpl_runner.loop.run\n")
    known = {"mpl_runner.core", "mpl_runner.core.errors", "mpl_runner.loop.run"}
    assert imported(source, known) == {"mpl_runner.core.errors", "mpl_runner.loop.run"}
