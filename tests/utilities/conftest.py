"""Fixtures of the utilities tests: ``oracle``, the mpmath reference module (``mpmath_oracle.py`` beside this
file; bench/vmf.py uses it too)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest


@pytest.fixture(scope="session")
def oracle():
    name = "mpmath_oracle"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, pathlib.Path(__file__).with_name(f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
