"""The layering rules of design.md, read from the source: every import of every module, function-level
imports included, against what its package may import; and no import circles."""

import ast
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("d2ft", "simulator", "runtime", "analysis")
THIRD_PARTY = {
    "d2ft": {"numpy", "networkx", "mip", "tomli"},  # tomli: the TOML reader on Python 3.10
    "d2ft.app": None,  # the app wing may import anything
    "simulator": {"numpy", "networkx"},
    "runtime": {"numpy", "torch", "torchvision", "timm", "safetensors", "tqdm", "PIL"},
    "analysis": {"numpy", "pandas", "matplotlib"},
}
"""Third-party top-level packages each layer may import (the standard library is always allowed)."""
PROJECT = {
    "d2ft": {"d2ft"},
    "d2ft.app": None,
    "simulator": {"d2ft", "simulator"},
    "runtime": {"d2ft", "runtime"},
    "analysis": {"d2ft", "analysis"},
}
"""Project packages each layer may import; importing ``d2ft.app`` is allowed only to the app itself."""


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _layer(module: str) -> str:
    return "d2ft.app" if module == "d2ft.app" or module.startswith("d2ft.app.") else module.split(".")[0]


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement in the file, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            names = [f"{prefix}.{a.name}" for a in node.names]
            submodules = [n for n in names if n in MODULES]
            out += [(n, node.lineno) for n in submodules]
            if len(submodules) < len(names):
                out.append((prefix, node.lineno))
    return out


def _where(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def _violations(modules: dict[str, Path]) -> list[str]:
    bad = []
    for module, path in modules.items():
        layer = _layer(module)
        for name, line in _imports(module, path):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            if top in PACKAGES:
                allowed = PROJECT[layer]
                if allowed is not None and (top not in allowed or (_layer(name) == "d2ft.app" and layer != "d2ft.app")):
                    bad.append(f"{_where(path)}:{line} ({layer}) imports {name}")
            elif THIRD_PARTY[layer] is not None and top not in THIRD_PARTY[layer]:
                bad.append(f"{_where(path)}:{line} ({layer}) imports {name}")
    return bad


def test_every_module_imports_only_what_its_layer_may():
    assert _violations(MODULES) == []


def test_the_check_catches_a_function_level_import(tmp_path):
    """A core module importing the simulator inside a function (what d2ft/cli.py once did) is caught."""
    path = tmp_path / "leaky.py"
    path.write_text("def f():\n    from simulator import simulate\n    import torch\n    return simulate, torch\n")
    bad = _violations({"d2ft.leaky": path})
    assert len(bad) == 2 and "imports simulator" in bad[0] and "imports torch" in bad[1]


def test_simulator_and_runtime_never_import_each_other():
    for module, path in MODULES.items():
        names = {n.split(".")[0] for n, _ in _imports(module, path)}
        if _layer(module) == "simulator":
            assert "runtime" not in names, module
        if _layer(module) == "runtime":
            assert "simulator" not in names, module


def test_no_import_circles():
    graph = nx.DiGraph()
    for module, path in MODULES.items():
        graph.add_node(module)
        for name, _ in _imports(module, path):
            if name in MODULES and name != module:
                graph.add_edge(module, name)
    cycles = list(nx.simple_cycles(graph))
    assert cycles == [], [" -> ".join(c) for c in cycles]


@pytest.mark.parametrize("limit", [400])
def test_no_module_over_the_limit(limit):
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > limit}
    assert long == {}
