"""The import graph of aiobs and the demo service, read from the source with ``ast``.

Dependencies flow one way: no import cycle among the project's modules, counting imports at
module level, imports inside functions and the modules the CLI names for
``importlib.import_module``. An import inside a function never hides a cycle: it is allowed
only where the imported project module loads, at its module level, a dependency that is
optional or loaded only when configured (:data:`DEFERRED`); everything else is imported at
the top of the module.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("aiobs", "demo_service")

DEFERRED = {
    "grafanalib": "the aiobs[dashboards] extra, for the dashboards generator only",
    "starlette": "the aiobs[fastapi] extra: setup() serves processes without Starlette",
    "opentelemetry.exporter.otlp.proto.http": "the OTLP exporter, built when an endpoint is set",
}
"""Third-party modules a project module may be imported lazily for, and why."""


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int
    kind: str  # "module", "function" or "named" (a string given to importlib)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


MODULES = project_modules()


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def deepest_module(dotted: str) -> str | None:
    """The project module that importing ``dotted`` names (its longest existing prefix)."""
    parts = dotted.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


class Collector(ast.NodeVisitor):
    def __init__(self, name: str) -> None:
        self.name = name
        self.depth = 0
        self.imports: list[Import] = []
        self.third_party: set[str] = set()  # module-level imports of anything else
        self.third_party_anywhere: set[str] = set()  # those and the ones inside functions

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _add(self, dotted: str, line: int) -> None:
        kind = "function" if self.depth else "module"
        target = deepest_module(dotted)
        if target is None:
            self.third_party_anywhere.add(dotted)
            if not self.depth:
                self.third_party.add(dotted)
        elif target != self.name:
            self.imports.append(Import(self.name, target, line, kind))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            package = self.name if is_package(self.name) else self.name.rpartition(".")[0]
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
            source = f"{base}.{node.module}" if node.module else base
        else:
            source = node.module or ""
        for alias in node.names:
            # ``from package import module`` names the module, ``from module import name``
            # the module itself.
            submodule = f"{source}.{alias.name}"
            self._add(submodule if submodule in MODULES else source, node.lineno)

    def visit_Constant(self, node: ast.Constant) -> None:
        # A string naming a non-package project module: what importlib.import_module is given
        # (the CLI's subcommands). Counted for cycles like an import inside a function.
        value = node.value
        named = isinstance(value, str) and value in MODULES and not is_package(value)
        if named and value != self.name:
            self.imports.append(Import(self.name, value, node.lineno, "named"))


def collect() -> tuple[list[Import], dict[str, set[str]], dict[str, set[str]]]:
    imports: list[Import] = []
    third_party: dict[str, set[str]] = {}
    third_party_anywhere: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        collector = Collector(name)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        imports.extend(collector.imports)
        third_party[name] = collector.third_party
        third_party_anywhere[name] = collector.third_party_anywhere
    return imports, third_party, third_party_anywhere


IMPORTS, THIRD_PARTY, THIRD_PARTY_ANYWHERE = collect()


def is_ops(name: str) -> bool:
    return name == "aiobs.ops" or name.startswith("aiobs.ops.")


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return components


def test_the_graph_sees_the_project() -> None:
    """The parser finds the modules and the imports this test is about."""
    assert {"aiobs", "aiobs.catalog", "demo_service.config", "demo_service.model"} <= set(MODULES)
    seen = {(i.importer, i.target, i.kind) for i in IMPORTS}
    assert ("aiobs.logging", "aiobs.logs.pipeline", "module") in seen
    assert ("demo_service.app", "aiobs", "module") in seen  # ``import aiobs``
    assert ("aiobs._setup", "aiobs.http.starlette", "function") in seen
    assert ("aiobs.ops.cli", "aiobs.ops.deploy", "named") in seen
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    edges: dict[str, set[str]] = {}
    for found in IMPORTS:
        edges.setdefault(found.importer, set()).add(found.target)
    cycles = find_cycles(edges)
    described = []
    for members in cycles:
        inside = [i for i in IMPORTS if i.importer in members and i.target in members]
        edges_inside = sorted({f"{i.importer}:{i.line} -> {i.target} ({i.kind})" for i in inside})
        described.append("; ".join(edges_inside))
    assert not cycles, "import cycles:\n" + "\n".join(described)


def test_imports_inside_functions_only_defer_optional_dependencies() -> None:
    deferred = [i for i in IMPORTS if i.kind == "function"]
    wrong = sorted({
        f"{i.importer}:{i.line} imports {i.target} inside a function"
        for i in deferred
        if not any(
            dependency == wanted or dependency.startswith(f"{wanted}.")
            for dependency in THIRD_PARTY[i.target]
            for wanted in DEFERRED
        )
    })  # fmt: skip
    assert not wrong, "import these at the top of the module:\n" + "\n".join(wrong)


@pytest.mark.parametrize("dependency", sorted(DEFERRED))
def test_each_deferred_dependency_is_still_needed(dependency: str) -> None:
    """An entry of DEFERRED that no project module imports at module level is stale."""
    assert any(
        found == dependency or found.startswith(f"{dependency}.")
        for imported in THIRD_PARTY.values()
        for found in imported
    )


def test_the_runtime_never_imports_the_generators() -> None:
    """No module of aiobs outside aiobs.ops imports aiobs.ops or grafanalib, anywhere in it
    (tests/test_runtime_isolation.py checks the same of a served request)."""
    runtime = {name for name in MODULES if name.partition(".")[0] == "aiobs" and not is_ops(name)}
    wrong = sorted(
        {f"{i.importer}:{i.line} -> {i.target}" for i in IMPORTS
         if i.importer in runtime and is_ops(i.target)}
        | {f"{name} -> {dependency}" for name in runtime
           for dependency in THIRD_PARTY_ANYWHERE[name]
           if dependency.partition(".")[0] == "grafanalib"}
    )  # fmt: skip
    assert not wrong
