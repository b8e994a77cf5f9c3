"""Fixtures of the architecture tests.

* ``arch_input_shape(name)``: the (C, H, W) a test feeds ``name``: 8x8 grey digits for ``mnist_cnn``, else
  32x32 RGB (small, so the big backbones stay fast on 2 cores).
* ``build_arch(name, *argv, input_shape=None, **flags)``: ``architectures.select`` on options from ``make_opt``
  (``--arch name --embed_dim 8 --not_pretrained`` plus ``argv`` / ``flags``), torch seeded with 0.
* ``bn_state(model)``: copies of every BatchNorm layer's running mean and variance.
"""

from __future__ import annotations

import pytest
import torch

import architectures

EMBED_DIM = 8


def input_shape_of(name: str) -> tuple[int, int, int]:
    return (1, 8, 8) if name.startswith("mnist_cnn") else (3, 32, 32)


@pytest.fixture
def arch_input_shape():
    return input_shape_of


@pytest.fixture
def build_arch(make_opt):
    def build(name: str, *argv: str, input_shape: tuple[int, ...] | None = None, **flags):
        torch.manual_seed(0)
        opt = make_opt("--arch", name, "--embed_dim", str(EMBED_DIM), "--not_pretrained", *argv, **flags)
        return architectures.select(name, opt, input_shape or input_shape_of(name))

    return build


def _bn_state(model: torch.nn.Module) -> list[torch.Tensor]:
    return [
        t.clone()
        for m in model.modules()
        if isinstance(m, architectures.BN_TYPES)
        for t in (m.running_mean, m.running_var)
    ]


@pytest.fixture
def bn_state():
    return _bn_state
