"""The type stubs of the Cython kernels declare everything the built extensions export."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import hydra_tasks

PACKAGE = Path(hydra_tasks.__file__).parent


def _declared(stub: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(stub.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


@pytest.mark.parametrize("module", ["_pi", "_mandelbrot"])
def test_each_kernel_stub_declares_every_public_name_of_its_extension(module: str) -> None:
    built = importlib.import_module(f"hydra_tasks.{module}")
    exported = {name for name in dir(built) if not name.startswith("_")}
    assert exported == _declared(PACKAGE / f"{module}.pyi")
