"""The package's layers: no module imports a layer above its own.

    protocol < config < seda < routing, conditioning, mesh < stages < graph
             < edge, ops < traces, bench < cli

Imports are read from the source (every `import`, at any depth, including
those only for type checking), so a cycle cannot hide behind a function-level
import. Rooms on one layer may import each other, but not in a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.fixtures import ROOT

PACKAGE = ROOT / "gnurouter"

LAYERS: dict[str, int] = {
    "protocol": 0,
    "config": 1,
    "seda": 2,
    "routing": 3,
    "conditioning": 3,
    "mesh": 3,
    "stages": 4,
    "graph": 5,
    "edge": 6,
    "ops": 6,
    "traces": 7,
    "bench": 7,
    "cli": 8,
    "__main__": 8,
}


def room_of(module: str) -> str:
    """'gnurouter.mesh.peers' -> 'mesh'; 'gnurouter.cli' -> 'cli'."""
    return module.split(".")[1]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if len(parts) > 1:
            found[".".join(parts)] = path
    return found


def imports_of(path: Path, module: str) -> set[str]:
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from gnurouter.ops import controlweb` imports a module, not a name.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("gnurouter.") and name.count(".") >= 1}


def test_every_room_has_a_layer() -> None:
    rooms = {room_of(module) for module in modules()}
    assert rooms <= set(LAYERS), f"rooms without a layer: {sorted(rooms - set(LAYERS))}"


def test_no_module_imports_a_layer_above_its_own() -> None:
    known = modules()
    upward = []
    for module, path in sorted(known.items()):
        own = LAYERS[room_of(module)]
        for imported in sorted(imports_of(path, module)):
            if imported not in known:
                continue  # a name imported from a module, already counted as that module
            if LAYERS[room_of(imported)] > own:
                upward.append(f"{module} ({own}) imports {imported} ({LAYERS[room_of(imported)]})")
    assert not upward, "\n".join(upward)


def test_rooms_import_each_other_in_no_circle() -> None:
    known = modules()
    edges: dict[str, set[str]] = {}
    for module, path in known.items():
        for imported in imports_of(path, module):
            if imported in known and room_of(imported) != room_of(module):
                edges.setdefault(room_of(module), set()).add(room_of(imported))

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circles = sorted(room for room in edges if reaches(room, room, {room}))
    assert not circles, f"rooms in an import circle: {circles}"


@pytest.mark.parametrize("room", ["protocol"])
def test_the_protocol_package_is_sans_io(room: str) -> None:
    for module, path in modules().items():
        if room_of(module) != room:
            continue
        tree = ast.parse(path.read_text())
        names = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not any(name.split(".")[0] in ("twisted", "socket", "asyncio") for name in names), (
            module
        )
