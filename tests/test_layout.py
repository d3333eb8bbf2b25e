"""The package layout: folders by idea, imports only downward, no import circles, every folder says what it holds.

The import graph is read from the source with ``ast`` (nothing is imported): an edge ``a -> b`` for every
``import``/``from ... import`` of a ``yolo_plugins`` module anywhere in ``a``, at module level or inside a function.
Importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``; those implied edges are left out (the folders'
``__init__`` files import at most their own children).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "plugins" / "yolo_plugins"

# Layers, lowest first: a module may import its own layer and the layers below it, never one above. The core
# modules at the top level are what every folder shares (exceptions, file locations, channel rules, the registry).
LAYERS = (
    ("yolo_plugins.errors", "yolo_plugins.paths", "yolo_plugins.data"),
    ("yolo_plugins.channels",),
    ("yolo_plugins.registry",),
    ("yolo_plugins.weights",),  # files and formats: nothing here knows the parser or the hook
    ("yolo_plugins.blocks",),  # the blocks load weights; they never import the host wrappers
    ("yolo_plugins.host",),  # activation registers the blocks; the fork-YAML rows build them
    ("yolo_plugins.commands", "yolo_plugins.profile", "yolo_plugins"),  # tools, and the public facade
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """module -> the ``yolo_plugins`` modules it imports (anywhere in its source)."""
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name.split(".")[0] == "yolo_plugins"}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if base.split(".")[0] != "yolo_plugins":
                    continue
                subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods}
                out |= subs or {base}
                if len(subs) < len(node.names):  # names that are attributes of base itself
                    out.add(base)
        unknown = {m for m in out if m not in mods}
        assert not unknown, f"{name} imports modules that do not exist: {sorted(unknown)}"
        graph[name] = out - {name}
    return graph


def layer(module: str) -> int:
    """Index in LAYERS of the longest prefix that names ``module`` or a folder above it."""
    best, rank = -1, None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    assert rank is not None, f"{module} is in no layer of LAYERS"
    return rank


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_imports_only_go_down():
    upward = [
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, targets in sorted(import_graph().items())
        for b in sorted(targets)
        if layer(b) > layer(a)
    ]
    assert upward == []


@pytest.mark.parametrize("folder", sorted({p.parent for p in PACKAGE.rglob("*.py")}))
def test_every_folder_is_a_package_with_a_docstring(folder):
    init = folder / "__init__.py"
    assert init.is_file(), f"{folder} has no __init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    assert doc and doc.strip(), f"{init} has no docstring saying what the folder holds"


def test_the_top_level_holds_only_the_core():
    """New modules go into a folder by idea; the top level keeps the facade and what every folder shares."""
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top == {"__init__.py", "errors.py", "paths.py", "channels.py", "registry.py"}


@pytest.mark.parametrize(
    ("question", "module"),
    [
        ("how a weights file gets into a model", "yolo_plugins.weights.loading"),
        ("the parser hook", "yolo_plugins.host.parser_patch"),
        ("error naming (which row failed)", "yolo_plugins.host.layer_errors"),
        ("a DETR head", "yolo_plugins.blocks.dfine.decoder"),
        ("the console script", "yolo_plugins.commands.cli"),
    ],
)
def test_where_is(question, module):
    """The newcomer's questions of issue 30 and the folder that answers each (kept true as files move)."""
    assert module in modules(), question


# Modules whose classes a checkpoint can pickle by path: the blocks (README's "Checkpoint compatibility" table) and
# the deploy forms, which a fused model holds (``Model.fuse()`` and ``predict()`` fuse in place; ``Model.save()``
# then pickles the fused model). They stay where they are; a move would need an alias module at each old path.
PICKLED_MODULES = (
    "yolo_plugins.blocks.efficientvit",
    "yolo_plugins.blocks.timm_backbone",
    "yolo_plugins.blocks.timm_base",
    "yolo_plugins.blocks.pick",
    "yolo_plugins.blocks.peak_queries",
    "yolo_plugins.blocks.dfine.decoder",
    "yolo_plugins.blocks.dfine.encoder",
    "yolo_plugins.blocks.affine_conv",
    "yolo_plugins.blocks.shift_max_pool",
    "yolo_plugins.blocks.cascaded_attention",
    "yolo_plugins.blocks.deform_attention",
)


@pytest.mark.parametrize("module", PICKLED_MODULES)
def test_pickled_module_paths_stay(module):
    assert module in modules()
