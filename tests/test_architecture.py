"""The package's shape: imports point down the data flow, and no module imports itself back.

data → llm → retrieval → model → config → experiments → reproduce, with ``errors``, ``results``,
``result_files`` and ``metrics`` as the foundation every stage may use. A module that imports a
later stage (or a cycle of modules) fails here with the offending import named.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ragrec"

STAGES = {
    "errors": 0,
    "results": 0,
    "result_files": 0,
    "metrics": 0,
    "data": 1,
    "llm": 2,
    "retrieval": 3,
    "model": 4,
    "config": 5,
    "experiments": 6,
    "reproduce": 7,
}

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def ragrec_imports(path: Path) -> set[str]:
    """Every ``ragrec`` module a file imports, at module level or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ragrec":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "ragrec"}
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: ragrec_imports(path) for name, path in MODULES.items()}


def stage(module: str) -> int | None:
    parts = module.split(".")
    return STAGES.get(parts[1]) if len(parts) > 1 else None


def test_every_subpackage_and_top_level_module_has_a_stage():
    top = {module.split(".")[1] for module in MODULES if module != "ragrec"}
    assert top <= set(STAGES), f"give {sorted(top - set(STAGES))} a stage in STAGES"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_data_flow(module):
    if stage(module) is None:
        return  # ragrec/__init__.py re-exports the errors only
    later = [dep for dep in GRAPH[module] if (stage(dep) or 0) > stage(module)]
    assert not later, f"{module} imports from a later stage: {later}"


def test_no_import_cycles():
    # Importing ragrec.a.b runs ragrec.a's __init__ first, so a submodule that imports its own
    # package's __init__ closes a cycle too; the graph holds both kinds of edge.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(GRAPH.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" → ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_stay_readable(module):
    source = MODULES[module].read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{module} has over {MAX_MODULE_LINES} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{module}: functions over {MAX_FUNCTION_LINES} lines: {long}"
