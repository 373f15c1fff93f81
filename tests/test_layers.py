"""The package's layers only import downward, and no modules import each other in a cycle.

Every ``import`` / ``from ... import`` in every module counts, including those inside functions (a lazy
import that goes upward is still an upward dependency). The facade ``shrinkviz/__init__.py`` is the one
exception: it only names the public API, resolved lazily on first use.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "shrinkviz"

LAYERS = {
    "core": 0,
    "data": 1,
    "models": 1,
    "loop": 2,
    "techniques": 3,
    "deploy": 4,
    "metrics": 4,
    "experiments": 5,
    "viz": 6,
    "cli": 6,
    "sparse": 4,
}
"""Rank of each top-level folder (or module) of the package: a module may import only from its own folder
or from folders of a lower or equal rank."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    """Every module of the package; ``conftest.py`` (pytest's setup of the docstring examples) is not one."""
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "conftest.py"}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module an import names: itself, or the nearest enclosing package that exists."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` over shrinkviz's own modules."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names] if base else []
                targets = [t if _resolve(t, modules) == t else base for t in targets]
            for target in targets:
                if target.split(".")[0] != "shrinkviz":
                    continue
                resolved = _resolve(target, modules)
                if resolved and resolved != name:
                    graph[name].add(resolved)
    return graph


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_folder_has_a_layer():
    folders = {_layer(m) for m in _modules()} - {None}
    assert folders <= set(LAYERS), f"give these folders a rank in LAYERS: {sorted(folders - set(LAYERS))}"


def test_imports_only_look_down():
    upward = []
    for module, targets in import_graph().items():
        if module == "shrinkviz":
            continue  # the lazy facade
        for target in targets:
            if target == "shrinkviz":
                upward.append(f"{module} -> shrinkviz (the facade; import the defining module)")
            elif _layer(module) != _layer(target) and LAYERS[_layer(target)] > LAYERS[_layer(module)]:
                upward.append(f"{module} (layer {_layer(module)}) -> {target} (layer {_layer(target)})")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
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


def test_no_import_cycles():
    graph = {m: t for m, t in import_graph().items() if m != "shrinkviz"}
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_upward_import_is_reported(tmp_path, monkeypatch):
    fake = tmp_path / "shrinkviz"
    (fake / "core").mkdir(parents=True)
    (fake / "viz").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "core" / "__init__.py").write_text("from shrinkviz.viz import thing\n")
    (fake / "viz" / "__init__.py").write_text("thing = 1\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    with pytest.raises(AssertionError, match=r"shrinkviz.core \(layer core\) -> shrinkviz.viz"):
        test_imports_only_look_down()


@pytest.mark.parametrize(
    "module",
    [
        "shrinkviz.metrics.stats",
        "shrinkviz.experiments.sweep",
        "shrinkviz.experiments.runner",
        "shrinkviz.experiments.store",
    ],
)
def test_headless_modules_do_not_load_plotly(module):
    code = f"import sys, {module}; print(sorted(m for m in ('plotly', 'ipywidgets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_sweep_worker_runs_an_experiment_without_importing_pandas(tmp_path):
    # pandas is 33 MiB of every worker process; the runner hands rows (lists of dicts) back, the driver
    # process builds the tables (digits would not do: scikit-learn's loader imports pandas)
    code = (
        "import sys\n"
        "from shrinkviz.experiments.experiment import Experiment\n"
        "from shrinkviz.experiments.runner import execute\n"
        "exp = Experiment(model='mnistnet', data={'name': 'fashion_mnist', 'train': 128, 'val': 32, 'test': 64},\n"
        "                 baseline={'epochs': 1}, prune={'strategy': 'global_weight', 'compression': 4},\n"
        "                 finetune={'preset': 'adam_fast', 'epochs': 1},\n"
        "                 latency={'runtimes': ['eager'], 'rounds': 2, 'min_time_s': 0.01})\n"
        "out = execute(exp.to_json(), threads=1)\n"
        "print(out['row']['status'], len(out['layers']) > 0, 'pandas' in sys.modules, out['row']['error'])\n"
    )
    env = {**os.environ, "SHRINKVIZ_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split()[:3] == ["ok", "True", "False"], out.stdout + out.stderr[-2000:]
