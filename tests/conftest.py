"""Test set-up: the suite runs from its checkout, so put the repo root on sys.path."""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, excluded from the default run (-m 'not slow')")


# Tiny CPU ops are dominated by intra-op thread hand-offs on a 2-core machine.
import torch  # noqa: E402

torch.set_num_threads(1)
