"""The layering rules of design.md: d2ft is pure; only runtime imports torch."""

import subprocess
import sys

import pytest


def _imported_after(module: str) -> set[str]:
    code = f"import sys, {module}; print(','.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return {name.split(".")[0] for name in out.strip().split(",")}


@pytest.mark.parametrize("module", ["d2ft", "d2ft.app.cli", "simulator", "analysis"])
def test_no_torch(module):
    assert "torch" not in _imported_after(module)


def test_core_imports_no_pandas_or_matplotlib():
    mods = _imported_after("d2ft")
    assert not {"pandas", "matplotlib", "timm", "torch"} & mods


def test_simulator_and_runtime_do_not_import_each_other():
    assert "runtime" not in _imported_after("simulator")
    assert "simulator" not in _imported_after("runtime")


def test_the_command_line_parser_does_not_import_torch():
    """`d2ft --help` and the planning commands stay fast: the runtime's parsers import no torch."""
    code = "import sys, d2ft.app.cli; d2ft.app.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"
