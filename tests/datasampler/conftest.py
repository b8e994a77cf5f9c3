"""Fixtures of the sampler tests.

* ``build_sampler(name, opt, labels, dim=6, seed=0)``: ``datasampler.select``; a storage sampler (batch
  selection from train embeddings) first gets ``init_storage`` with seeded random ``[N, dim]`` embeddings.
* ``epoch_batches(sampler, epoch)``: the batches of one epoch (``set_epoch`` then one pass).
"""

from __future__ import annotations

import pytest
import torch

import datasampler


def _build(name: str, opt, labels, dim: int = 6, seed: int = 0):
    sampler = datasampler.select(name, opt, labels)
    if getattr(sampler, "requires_storage", False):
        sampler.init_storage(torch.randn(len(labels), dim, generator=torch.Generator().manual_seed(seed)))
    return sampler


def _epoch(sampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.fixture
def build_sampler():
    return _build


@pytest.fixture
def epoch_batches():
    return _epoch
