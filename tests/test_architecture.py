"""The house rules of the package, checked on its source (issue: the evaluation wing as a house a maintainer
can live in): the import graph has no circle, nothing below the command layer imports it, no module imports a
sibling's private name, no module is over the size limit, every module says what it holds, and every package
is installed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nnunet_lesionloss"
#: "no module over about 600 lines"
MAX_LINES = 620


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module of a ``from ... import`` (relative imports resolved against ``module``)."""
    if node.level == 0:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import of the package's own modules,
    function-level imports included: an import inside a function is still an arrow of the graph."""
    tree = ast.parse(MODULES[module].read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [
                (alias.name, None, node.lineno) for alias in node.names if alias.name.startswith("nnunet_lesionloss")
            ]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, node)
            if not target.startswith("nnunet_lesionloss"):
                continue
            for alias in node.names:
                child = f"{target}.{alias.name}"
                # "from package import module" imports the module; "from module import name" the module
                found.append((child, None, node.lineno) if child in MODULES else (target, alias.name, node.lineno))
    return found


def graph() -> dict[str, set[str]]:
    return {m: {target for target, _, _ in imports_of(m) if target in MODULES and target != m} for m in MODULES}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return result


def test_the_import_graph_has_no_circle():
    assert cycles(graph()) == []


def test_the_circle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_below_the_command_layer_imports_it():
    upward = [
        f"{m}:{line} imports {target}"
        for m in MODULES
        if not (m == "nnunet_lesionloss.cli" or m.startswith("nnunet_lesionloss.cli."))
        for target, _, line in imports_of(m)
        if target == "nnunet_lesionloss.cli" or target.startswith("nnunet_lesionloss.cli.")
    ]
    assert upward == []


def test_no_module_imports_a_private_name_of_another():
    private = [
        f"{m}:{line} imports {name} from {target}"
        for m in MODULES
        for target, name, line in imports_of(m)
        if name is not None and name.startswith("_") and not name.startswith("__") and target != m
    ]
    assert private == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_is_short_and_says_what_it_holds(module):
    path = MODULES[module]
    source = path.read_text()
    lines = source.count("\n")
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (limit {MAX_LINES}): split it by stage"
    if path.name == "__init__.py" and not source.strip():
        return
    assert ast.get_docstring(ast.parse(source)), f"{path.relative_to(ROOT)} has no docstring saying what it holds"


def test_every_package_is_installed():
    """A package missing from pyproject's list would be absent from a regular (non-editable) install."""
    listed = set(re.findall(r'"(nnunet_lesionloss[\w.]*)"', (ROOT / "pyproject.toml").read_text()))
    packages = {module_name(p) for p in PACKAGE.rglob("__init__.py")}
    assert packages - listed == set()
