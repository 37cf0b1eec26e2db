"""Every subpackage declares ``__all__`` and every exported name imports."""

import importlib
import pkgutil

import pytest

import caloforge

SUBPACKAGES = sorted(
    m.name for m in pkgutil.iter_modules(caloforge.__path__, "caloforge.") if m.ispkg
)


def test_subpackages_found():
    assert {"caloforge.geometry", "caloforge.io", "caloforge.cli"} <= set(SUBPACKAGES)


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_exports_import(name):
    module = importlib.import_module(name)
    if not hasattr(module, "__all__"):
        pytest.fail(f"{name} has no __all__")
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name} exports missing names {missing}"
