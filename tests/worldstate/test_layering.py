"""The layering of `worldstate` (see README "Architecture" and DESIGN.md): every import,
including the ones only type checkers see, points down; the graph of our modules has no
circle; the three paths never import each other; nothing imports `worldstate.world` but the
public face, the CLI and the demo."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("regions", "conflicts", "consistency", "worldstate")

# Layers, lowest first. A module may import its own layer or lower ones only.
LAYERS: list[tuple[str, ...]] = [
    ("regions",),
    ("conflicts",),
    ("consistency",),
    (
        "worldstate.errors",
        "worldstate.config",
        "worldstate.operations",
        "worldstate.objects",
        "worldstate.results",
        "worldstate.updates",
        "worldstate._validation",
        "worldstate._codec",
        "worldstate.security",
    ),
    ("worldstate.protocol", "worldstate.store", "worldstate.cache", "worldstate.bus"),
    ("worldstate.node", "worldstate.history"),
    ("worldstate.strong", "worldstate.causal", "worldstate.eventual"),
    ("worldstate.mesh",),
    ("worldstate.metrics",),  # reads a world through a Protocol; the coordinator's too
    ("worldstate.world",),
    ("worldstate", "worldstate.cli", "worldstate.demo", "worldstate.serve"),
]

PATHS = ("worldstate.strong", "worldstate.causal", "worldstate.eventual")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            out[module_name(path)] = path
    return out


MODULES = all_modules()


def imports_of(name: str) -> set[str]:
    """Every module of ours that ``name`` imports (top level, in functions, under
    TYPE_CHECKING alike), resolved to the most specific module that exists."""
    tree = ast.parse(MODULES[name].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for t in targets:
            if t.split(".")[0] not in PACKAGES:
                continue
            while t not in MODULES and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in MODULES and t != name:
                found.add(t)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def layer_of(name: str) -> int:
    best, best_len = -1, -1
    for i, group in enumerate(LAYERS):
        for prefix in group:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    assert best >= 0, f"{name} is in no layer: add it to LAYERS"
    return best


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        layer_of(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down(name: str) -> None:
    mine = layer_of(name)
    up = sorted(t for t in GRAPH[name] if layer_of(t) > mine)
    assert not up, f"{name} (layer {mine}) imports upward: {up}"


def test_paths_never_import_each_other() -> None:
    for name, targets in GRAPH.items():
        own = next((p for p in PATHS if name == p or name.startswith(p + ".")), None)
        if own is None:
            continue
        for t in targets:
            other = next((p for p in PATHS if t == p or t.startswith(p + ".")), None)
            assert other in (None, own), f"{name} imports {t}"


def test_only_the_face_cli_and_demo_import_world() -> None:
    allowed = ("worldstate", "worldstate.cli", "worldstate.demo", "worldstate.serve")
    for name, targets in GRAPH.items():
        if "worldstate.world" in targets:
            assert any(name == a or name.startswith(a + ".") for a in allowed if a), name
            assert name == "worldstate" or not name.startswith("worldstate.world"), name


def test_no_circle_in_the_import_graph() -> None:
    # Package __init__ files re-export their private modules; an edge into a package is an
    # edge into whatever it re-exports, so keep them: a circle through them is a circle.
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        color[n] = 1
        stack.append(n)
        for m in sorted(GRAPH[n]):
            if m.startswith(n + "."):
                continue  # a package importing its own submodules is not a circle
            if color.get(m) == 1:
                cycle = [*stack[stack.index(m) :], m]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if color.get(m) is None:
                visit(m)
        stack.pop()
        color[n] = 2

    for n in sorted(GRAPH):
        if color.get(n) is None:
            visit(n)


def test_worldstate_has_few_flat_modules() -> None:
    flat = sorted(p.name for p in (ROOT / "worldstate").glob("*.py"))
    assert flat == [
        "__init__.py",
        "_codec.py",
        "_validation.py",
        "config.py",
        "errors.py",
        "objects.py",
        "operations.py",
        "results.py",
        "updates.py",
        "world.py",
    ]


def test_topic_names_come_from_the_catalogue() -> None:
    """Every topic family is named once, in `worldstate/protocol/_topics.py`."""
    import re

    families = ("ops/", "replies/", "cmd/", "cmd-replies/", "members/", "notice/", "eventual/")
    literal = re.compile(r"""f?["']({})""".format("|".join(re.escape(f) for f in families)))
    for name, path in MODULES.items():
        if name == "worldstate.protocol._topics" or not name.startswith("worldstate"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if '"""' in code or "``" in code:
                continue
            assert not literal.search(code), f"{path}:{n}: topic literal {line.strip()!r}"
