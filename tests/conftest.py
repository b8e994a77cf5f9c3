"""Test set-up: the suite runs from its checkout, so put the repo root on sys.path."""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, excluded from the default run (-m 'not slow')")
