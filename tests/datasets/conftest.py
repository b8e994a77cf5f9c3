"""Fixtures of the dataset tests.

* ``dataset_opt(name, root, *argv, **flags)``: ``make_opt("--dataset", name, "--source_path", root, "--seed",
  "0", "--image_size", "16", *argv, **flags)`` (the dataset's defaults apply; explicit flags win).
* ``cifar_unchecked``: torchvision's md5 check of the CIFAR files is off (``datasets.synthetic`` writes
  stand-ins, not the originals).
"""

from __future__ import annotations

import pytest


@pytest.fixture
def dataset_opt(make_opt):
    def build(name: str, root, *argv: str, **flags):
        return make_opt("--dataset", name, "--source_path", str(root), "--seed", "0", "--image_size", "16", *argv,
                        **flags)  # fmt: skip

    return build


@pytest.fixture
def cifar_unchecked(monkeypatch) -> None:
    import torchvision.datasets.cifar

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
