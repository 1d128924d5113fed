"""The layer contract: each top-level folder is one layer, and imports never run upward.

Read bottom to top (``docs/architecture.md`` draws it):

- ``core``      pure values and rules: records, canonical JSON, ids, identity, cursors, folds, manifests, config
                structs, wire types. No I/O library at all.
- ``store``     every SQL statement, on apsw. Knows ``core`` only.
- ``runtime``   the supervision library (supervisor, child specs, backoff). Knows trio only.
- ``actors``    the supervised tasks (writer, hub, folds, reconciler, pairs). Talk to peers through an
                interface they are handed, never through an HTTP library.
- ``transport`` HTTP both ways: the Quart routes and the peer client, and the SSE framing both use.
- ``daemon``    the assembly: home, config file, init, systemd, the supervision tree, the launcher.
- ``soak``      the load-test engine and the benchmarks.
- ``cli``       thin presenters over all of the above.

Every ``import`` counts, including the ones inside functions: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Which spl layers each layer may import (itself included).
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "store": frozenset({"core", "store"}),
    "runtime": frozenset({"runtime"}),
    "actors": frozenset({"core", "store", "runtime", "actors"}),
    "transport": frozenset({"core", "store", "runtime", "actors", "transport"}),
    "daemon": frozenset({"core", "store", "runtime", "actors", "transport", "daemon"}),
    "soak": frozenset({"core", "store", "runtime", "actors", "transport", "daemon", "soak"}),
    "cli": frozenset({"core", "store", "runtime", "actors", "transport", "daemon", "soak", "cli"}),
}
LAYERS = tuple(ALLOWED)

IO_LIBRARIES = frozenset({"apsw", "trio", "httpx", "quart", "quart_trio", "hypercorn", "anyio", "socket", "sqlite3"})
HTTP_LIBRARIES = frozenset({"httpx", "quart", "quart_trio", "hypercorn"})
# Third-party (and stdlib I/O) packages a layer must not import.
FORBIDDEN: dict[str, frozenset[str]] = {
    "core": IO_LIBRARIES,
    "store": IO_LIBRARIES - {"apsw"},
    "runtime": IO_LIBRARIES - {"trio"},
    "actors": HTTP_LIBRARIES,
}


# Violations being removed by the re-layering (issue 8). Each entry must still be true (a test checks),
# so the list only ever shrinks; it is empty when the re-layering is done.
KNOWN_UPWARD: frozenset[str] = frozenset()
KNOWN_FORBIDDEN: frozenset[str] = frozenset()
KNOWN_CYCLES: frozenset[tuple[str, ...]] = frozenset()


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found["spl." + ".".join(parts)] = path
    return found


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of import nodes under ``if TYPE_CHECKING:``: annotations only, never executed."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return hidden


def imports_of(module: str, source: str, *, is_package: bool = False, runtime_only: bool = False) -> set[str]:
    """Absolute names ``module`` imports, wherever the statement sits (function bodies included)."""
    tree = ast.parse(source)
    hidden = _type_checking_nodes(tree) if runtime_only else set()
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            names.add(base)
            # `from spl.transport import peer` imports the module spl.transport.peer.
            names.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return names


def _graph(*, runtime_only: bool) -> dict[str, set[str]]:
    return {
        module: imports_of(module, path.read_text(), is_package=path.name == "__init__.py", runtime_only=runtime_only)
        for module, path in MODULES.items()
    }


GRAPH = _graph(runtime_only=False)


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "spl" and parts[1] in ALLOWED else None


def upward_imports(graph: dict[str, set[str]], layer: str) -> list[str]:
    return sorted(
        f"{module} imports {name}"
        for module, names in graph.items()
        if _layer(module) == layer
        for name in names
        if (target := _layer(name)) is not None and target not in ALLOWED[layer]
    )


def forbidden_imports(graph: dict[str, set[str]], layer: str) -> list[str]:
    return sorted(
        f"{module} imports {name}"
        for module, names in graph.items()
        if _layer(module) == layer
        for name in names
        if name.split(".")[0] in FORBIDDEN[layer]
    )


def cycles_in(graph: dict[str, set[str]]) -> list[list[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, names in graph.items():
        for name in names:
            while name and name not in graph:
                name = name.rpartition(".")[0]
            # a module importing its own package (or a package its module) is not a cycle between modules
            if name and name != module and not module.startswith(name + ".") and not name.startswith(module + "."):
                edges[module].add(name)
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_every_layer_folder_is_checked() -> None:
    """A new top-level package must be given a place in the contract before it can hold code."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(LAYERS)
    assert all(any(m.startswith(f"spl.{layer}.") for m in MODULES) for layer in LAYERS)


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_never_run_upward(layer: str) -> None:
    wrong = [v for v in upward_imports(GRAPH, layer) if v not in KNOWN_UPWARD]
    assert wrong == [], f"{layer} may import only {sorted(ALLOWED[layer])}"


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_keeps_off_io_libraries(layer: str) -> None:
    wrong = [v for v in forbidden_imports(GRAPH, layer) if v not in KNOWN_FORBIDDEN]
    assert wrong == [], f"{layer} must not import {sorted(FORBIDDEN[layer])}"


def test_no_import_cycles() -> None:
    """No two modules import each other, directly or around a loop (lazy imports included): a cycle
    means a missing layer or a module doing two jobs. ``if TYPE_CHECKING:`` imports are annotations
    and do not count."""
    assert [c for c in cycles_in(_graph(runtime_only=True)) if tuple(c) not in KNOWN_CYCLES] == []


def test_known_violations_are_still_real() -> None:
    """An entry fixed elsewhere must leave the list, so the list can only shrink."""
    upward = {v for layer in LAYERS for v in upward_imports(GRAPH, layer)}
    forbidden = {v for layer in FORBIDDEN for v in forbidden_imports(GRAPH, layer)}
    cycles = {tuple(c) for c in cycles_in(_graph(runtime_only=True))}
    assert KNOWN_UPWARD - upward == set()
    assert KNOWN_FORBIDDEN - forbidden == set()
    assert KNOWN_CYCLES - cycles == set()


def test_the_checks_see_what_they_must() -> None:
    """Guard against a vacuous pass: each check flags a planted violation."""
    planted = imports_of("spl.core.thing", "def f():\n    from spl.cli.main import app\n    import trio\n")
    assert upward_imports({"spl.core.thing": planted}, "core") == ["spl.core.thing imports spl.cli.main"]
    assert forbidden_imports({"spl.core.thing": planted}, "core") == ["spl.core.thing imports trio"]
    hidden = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from spl.actors.b import B\n"
    assert "spl.actors.b" not in imports_of("spl.actors.a", hidden, runtime_only=True)
    assert "spl.actors.b" in imports_of("spl.actors.a", hidden)
    loop = {"spl.actors.a": {"spl.actors.b"}, "spl.actors.b": {"spl.actors.a"}}
    assert cycles_in(loop) == [["spl.actors.a", "spl.actors.b", "spl.actors.a"]]
    assert len(GRAPH) > 60 and sum(map(len, GRAPH.values())) > 300
