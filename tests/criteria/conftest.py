"""Fixtures of the criteria tests.

* ``build_criterion(name, opt, n_classes=4, seed=0)``: criterion ``name`` as a run builds it from ``opt``
  (``training.build.build_run``): its miner (``opt.batch_mining``, the loss's default unless given) with the loss's
  ``miner_margin``, then ``criteria.select(name, opt, miner, n_classes=...)``; ``torch.manual_seed(seed)`` right
  before the criterion is built (so its initial parameters are fixed; ``seed=None``: no seeding).
* ``make_criterion(name, *argv, n_classes=4, seed=0, **flags)``: the same from
  ``make_opt("--loss", name, *argv, **flags)``.
"""

from __future__ import annotations

import pytest
import torch

import batch_mining
import criteria


def _build(name: str, opt, n_classes: int | None = 4, seed: int | None = 0):
    miner = None
    if opt.batch_mining is not None:
        miner = batch_mining.select(opt.batch_mining, opt, margin=criteria.get_class(name).miner_margin(opt))
    if seed is not None:
        torch.manual_seed(seed)
    return criteria.select(name, opt, miner, n_classes=n_classes)


@pytest.fixture
def build_criterion():
    return _build


@pytest.fixture
def make_criterion(make_opt):
    def make(name: str, *argv: str, n_classes: int | None = 4, seed: int | None = 0, **flags):
        return _build(name, make_opt("--loss", name, *argv, **flags), n_classes=n_classes, seed=seed)

    return make
