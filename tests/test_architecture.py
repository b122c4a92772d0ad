"""The import graph, checked with the standard library's ``ast`` (docs/architecture.md):

- no cycle between modules, nor between the three packages;
- ``lifecycle`` imports ``flows`` or ``monitors`` only in ``lifecycle/cli/``;
- only ``lifecycle/registry/`` touches an ``MlflowClient``;
- no product module over 450 lines (data tables excepted).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lifecycle", "flows", "monitors")
MAX_LINES = 450
#: Data, not logic: the ticket generator's phrase tables.
DATA_TABLES = {"lifecycle/synthetic/templates.py"}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT)
            if "migrations" in rel.parts and "versions" in rel.parts:
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(path: Path, module: str, known: dict[str, Path]) -> Iterator[str]:
    """Project modules ``path`` imports (at any depth: lazy imports count too)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            # The longest known module that the name starts with.
            parts = name.split(".")
            for end in range(len(parts), 0, -1):
                candidate = ".".join(parts[:end])
                if candidate in known and candidate != module:
                    yield candidate
                    break


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {m: set(_imports(p, m, known)) for m, p in known.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative enough)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _package_of(module: str) -> str:
    return module.split(".")[0]


def test_no_cycle_between_modules() -> None:
    graph = _graph()
    # A package's __init__ re-exporting its own submodule is not a cycle of logic.
    for module, deps in graph.items():
        deps -= {d for d in deps if d.startswith(module + ".") and module in _package_inits()}
    assert _cycles(graph) == []


def _package_inits() -> set[str]:
    return {m for m, p in _modules().items() if p.name == "__init__.py"}


def _layer(module: str) -> str:
    """The package, with ``lifecycle.cli`` as a layer of its own: the top one, which starts
    the flows and the monitors, while both build on the rest of ``lifecycle``."""
    return "lifecycle.cli" if module.startswith("lifecycle.cli") else _package_of(module)


def test_no_cycle_between_the_three_packages() -> None:
    layers: dict[str, set[str]] = {}
    for module, deps in _graph().items():
        layers.setdefault(_layer(module), set()).update(
            _layer(d) for d in deps if _layer(d) != _layer(module)
        )
    assert _cycles(layers) == []
    assert "lifecycle.cli" not in set().union(*layers.values())


def test_lifecycle_imports_flows_and_monitors_only_in_its_cli() -> None:
    offenders = sorted(
        f"{m} -> {d}"
        for m, deps in _graph().items()
        if _package_of(m) == "lifecycle" and not m.startswith("lifecycle.cli")
        for d in deps
        if _package_of(d) in ("flows", "monitors")
    )
    assert offenders == []


def test_only_the_registry_package_touches_an_mlflow_client() -> None:
    offenders = []
    for module, path in _modules().items():
        if module.startswith("lifecycle.registry"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("client", "_client")
                and isinstance(node.value, ast.Name)
                and "registry" in node.value.id
            ):
                offenders.append(f"{module}:{node.lineno} .client")
            if isinstance(node, ast.Name) and node.id == "MlflowClient":
                offenders.append(f"{module}:{node.lineno} MlflowClient")
            if isinstance(node, ast.alias) and node.name.endswith("MlflowClient"):
                offenders.append(f"{module}: imports MlflowClient")
    assert offenders == []


def test_no_product_module_is_over_450_lines() -> None:
    long = sorted(
        f"{path.relative_to(ROOT)}: {n}"
        for path in _modules().values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
        and str(path.relative_to(ROOT)) not in DATA_TABLES
    )
    assert long == []


def test_the_checker_sees_a_cycle_when_there_is_one() -> None:
    # The checks above pass on an empty answer: prove the cycle finder finds one.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
