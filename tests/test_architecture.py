"""The floor plan: every module in its room, imports pointing down the layers, no cycles.

The layers, from the bottom (``docs/architecture.md``): the shared modules at the top of
``nmt/`` < ``data`` < ``models`` < ``training``, ``onnx`` < ``inference``, ``documents`` <
``serve``, ``pipeline`` < ``cli``. A module may import its own room and the layers below;
never a layer above, never a room beside it on its own layer, and translating never imports
training. Every import counts, those inside functions too, since a lazy import is still a
dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nmt"

SHARED = {"nmt", "nmt.errors", "nmt.fileio", "nmt.layout", "nmt.config", "nmt.device",
          "nmt.scoring", "nmt.console"}
LAYERS = {"shared": 0, "data": 1, "models": 2, "training": 3, "onnx": 3, "inference": 4,
          "documents": 4,
          "serve": 5, "pipeline": 5, "cli": 6}
#: Rooms that may not import a room even where the layers would allow it: a model loaded to
#: translate, export or serve never pulls in the trainer.
FORBIDDEN = {("inference", "training"), ("serve", "training"), ("onnx", "training")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def room(module: str) -> str:
    """The room of a module: shared, cli, or the subpackage it lies in."""
    if module in SHARED:
        return "shared"
    if module in ("nmt.cli", "nmt.__main__"):
        return "cli"
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS or parts[1] in ("shared", "cli"):
        raise AssertionError(f"{module} lies in no room: put it in a subpackage of "
                             f"{sorted(set(LAYERS) - {'shared', 'cli'})} or list it as shared")
    return parts[1]


def public_names() -> dict[str, str]:
    """``from nmt import X``: the module that defines X (the lazy table of nmt/__init__.py)."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_PUBLIC":
            return ast.literal_eval(node.value)
    raise AssertionError("nmt/__init__.py has no _PUBLIC table")


def _longest_module(dotted: str, known: set[str]) -> str:
    """The longest known module that ``dotted`` (a module or module.attribute) starts with."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return dotted


def _dotted(node: ast.AST) -> str | None:
    """``nmt.training.trainer`` for an attribute chain rooted at the name ``nmt``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join(["nmt", *reversed(parts)]) if isinstance(node, ast.Name) \
        and node.id == "nmt" and parts else None


def imports(path: Path, known: set[str], public: dict[str, str] | None = None) -> set[str]:
    """The nmt modules a file imports anywhere in it: import statements (function bodies
    included), ``from nmt import X`` through the lazy table, ``importlib.import_module`` and
    ``__import__`` with a literal name, and attribute chains such as ``nmt.training.x``. A
    relative import is reported as ``relative:LINE`` (the rooms are spelled out)."""
    public = public_names() if public is None else public
    facade = path == PACKAGE / "__init__.py"
    found: set[str] = set()
    chains: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.add(f"relative:{node.lineno}")
                continue
            if node.module == "nmt":
                names = [public.get(a.name, f"nmt.{a.name}") for a in node.names]
            elif node.module:
                names = [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call) and not facade and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                names = [node.args[0].value]
        elif isinstance(node, ast.Attribute):
            chains.update(d for d in [_dotted(node)] if d)
        found.update(_longest_module(n, known) for n in names
                     if n == "nmt" or n.startswith("nmt."))
    # an attribute chain is walked at every length (nmt.serve.app.f, nmt.serve.app, ...):
    # only the longest of each counts
    longest = {c for c in chains if not any(o.startswith(c + ".") for o in chains)}
    return found | {_longest_module(c, known) for c in longest}


def graph() -> dict[str, set[str]]:
    mods, public = modules(), public_names()
    return {name: imports(path, set(mods), public) - {name} for name, path in mods.items()}


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Imports that point up a layer, sideways into another room, or into a forbidden room."""
    bad = []
    for importer, targets in sorted(edges.items()):
        for target in sorted(targets):
            if target.startswith("relative:"):
                bad.append(f"{importer} line {target.split(':')[1]}: a relative import; "
                           "spell the module out (from nmt.room.module import ...)")
                continue
            a, b = room(importer), room(target)
            if a == b:
                continue
            if (a, b) in FORBIDDEN or LAYERS[b] >= LAYERS[a]:
                bad.append(f"{importer} ({a}, layer {LAYERS[a]}) imports {target} "
                           f"({b}, layer {LAYERS[b]})")
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_module_lies_in_a_room():
    for name in modules():
        room(name)  # raises for a module outside every room


def test_imports_point_down_the_layers():
    bad = violations(graph())
    assert not bad, "imports against the layer order (docs/architecture.md):\n" + "\n".join(bad)


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_checks_catch_what_they_are_for():
    """The checker itself: an upward import, a sideways one, a forbidden one and a cycle are
    each reported (so the passing tests above say something)."""
    up = {"nmt.data.sources": {"nmt.training.trainer"}}
    sideways = {"nmt.onnx.export": {"nmt.training.loss"}, "nmt.serve.app": {"nmt.pipeline.recipe"}}
    forbidden = {"nmt.inference.translator": {"nmt.training.checkpoints"}}
    assert len(violations(up)) == 1 and len(violations(sideways)) == 2
    assert len(violations(forbidden)) == 1
    assert violations({"nmt.cli": {"nmt.inference.translator"}}) == []
    assert cycles({"nmt.a": {"nmt.b"}, "nmt.b": {"nmt.c"}, "nmt.c": {"nmt.a"}}) == [
        ["nmt.a", "nmt.b", "nmt.c"]]
    with pytest.raises(AssertionError, match="lies in no room"):
        room("nmt.helpers")


def test_the_import_parser_sees_every_way_of_importing(tmp_path):
    """Lazy public names, relative imports, import_module, __import__ and attribute chains
    all count as imports."""
    source = tmp_path / "sneaky.py"
    source.write_text("import importlib\nimport nmt\nfrom nmt import Translator\n"
                      "from ..training import trainer\n"
                      "def f():\n    importlib.import_module('nmt.training.loss')\n"
                      "    __import__('nmt.pipeline.recipe')\n"
                      "    return nmt.serve.app.create_app\n", encoding="utf-8")
    known = set(modules())
    found = imports(source, known)
    assert {"nmt.inference.translator", "nmt.training.loss", "nmt.pipeline.recipe",
            "nmt.serve.app", "relative:4"} <= found
    bad = violations({"nmt.data.sneaky": found - {"nmt"}})
    assert len(bad) == 5 and any("relative import" in line for line in bad)


def test_every_public_name_loads():
    import nmt

    for name in public_names():
        assert getattr(nmt, name) is not None, name


def test_the_library_does_not_know_where_the_checkout_is():
    """No library module derives paths from its own location (the serve page is read as
    package data through importlib.resources)."""
    for name, path in modules().items():
        assert "__file__" not in path.read_text(encoding="utf-8"), name


def test_import_nmt_is_light_and_public_names_load_lazily():
    code = ("import sys, nmt\nlight = not any(m in sys.modules for m in "
            "('torch', 'datasets', 'sentencepiece'))\n"
            "from nmt import Translator, DecodingConfig, load_config, train, export_model\n"
            "print(light, Translator.__module__, DecodingConfig.__module__, train.__module__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "nmt.inference.translator", "nmt.config",
                                   "nmt.training.trainer"]
    import nmt

    with pytest.raises(AttributeError, match="no attribute 'Translater'"):
        nmt.Translater  # noqa: B018 - a misspelt name fails as for any module
