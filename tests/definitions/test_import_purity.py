"""The Dagster-free core stays Dagster-free, and no two modules import each other.

Purity is checked in a fresh interpreter per module (``sys.modules`` after the import), like the
runtime's own test. Cycles are found on the import graph of every module of ``bindu_pipelines``
and ``bindu_runtime`` read with ``ast``, function-level imports included: a cycle closed inside a
function still means neither module can be understood, tested or loaded without the other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bindu_pipelines", "bindu_runtime")

# Rules, statistics and simulation: importable without Dagster (the Dagster layer only wires them).
DAGSTER_FREE = [
    "bindu_pipelines.names",
    "bindu_pipelines.errors",
    "bindu_pipelines.lazy",
    "bindu_pipelines.golden_dataset",
    "bindu_pipelines.golden_dataset.feedback",
    "bindu_pipelines.golden_dataset.history",
    "bindu_pipelines.golden_dataset.extractor",
    "bindu_pipelines.golden_dataset.pii",
    "bindu_pipelines.golden_dataset.quality",
    "bindu_pipelines.golden_dataset.strategies",
    "bindu_pipelines.golden_dataset.dataset",
    "bindu_pipelines.golden_dataset.fetch",
    "bindu_pipelines.golden_dataset.stages",
    "bindu_pipelines.golden_dataset.workers",
    "bindu_pipelines.canary",
    "bindu_pipelines.canary.policy",
    "bindu_pipelines.canary.metrics",
    "bindu_pipelines.canary.simulate",
    "bindu_pipelines.canary.controller",
    "bindu_pipelines.optimization",
    "bindu_pipelines.optimization.gate",
    "bindu_pipelines.optimization.metric",
    "bindu_pipelines.optimization.examples",
    "bindu_pipelines.optimization.metering",
    "bindu_pipelines.optimization.training",
    "bindu_pipelines.optimization.estimate",
]


def _module_exists(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


@pytest.mark.parametrize("module", DAGSTER_FREE)
def test_core_module_loads_no_dagster(module):
    assert _module_exists(module), f"{module} is listed as Dagster-free but does not exist"
    probe = f"import sys, {module}\nprint('dagster' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", f"importing {module} loads dagster"


def test_importing_the_optimization_package_changes_no_environment():
    probe = (
        "import os\nbefore = dict(os.environ)\n"
        "import bindu_pipelines.optimization, bindu_pipelines.optimization.lm, bindu_pipelines.definitions\n"
        "print(sorted(set(os.environ.items()) ^ set(before.items())))"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its body (``TYPE_CHECKING`` blocks excluded)."""
    files = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        type_checking = {
            id(child)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for stmt in node.body
            for child in ast.walk(stmt)
        }
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in type_checking:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, path.name == "__init__.py", node)
                # "from package import submodule" imports the submodule.
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            else:
                continue
            for name in names:
                # The deepest project module the name denotes.
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if name and name != module:
                    targets.add(name)
        graph[module] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None.

    A package's ``__init__`` importing its own submodules is not a cycle by itself; importing a
    package means running its ``__init__``, so an edge to a package counts as an edge to it."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            # A submodule imported by its own package's __init__ runs after the package: no cycle.
            if node.startswith(target + "."):
                continue
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if state.get(target) is None and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None and (found := visit(node)):
            return found
    return None


def test_the_import_graph_is_read_with_function_level_imports():
    graph = import_graph()
    # launch.run_job_for_agent imports the definitions inside the function.
    assert "bindu_pipelines.definitions" in graph["bindu_pipelines.launch"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
