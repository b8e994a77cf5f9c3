"""Contract of every registered backbone (``architectures.names()``), so a new entry is tested automatically.

Each name builds offline (``--not_pretrained``), maps ``[B, C, H, W]`` images to ``[B, embed_dim]``
embeddings equal to ``model.last_linear`` applied to the returned features, splits its parameters into head
and backbone, ``_normalize`` gives unit norms, ``_frozen`` (and ``--set_bn_eval``) keep every BatchNorm layer
in eval mode with fixed running statistics under ``.train()``, and the entry names its paper.
"""

from __future__ import annotations

import pytest
import torch

import architectures

NAMES = architectures.names()
# Backward passes through the big backbones cost seconds on 2 shared cores; gradients are checked on these.
BACKWARD_CHECKED = {"mnist_cnn", "resnet18", "googlenet"}


def test_registry_is_not_empty():
    assert {"mnist_cnn", "resnet18", "resnet50"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_embeds_to_embed_dim_through_last_linear(name, build_arch, arch_input_shape):
    model = build_arch(name, embed_dim=6).train()  # overrides the fixture's --embed_dim 8
    assert isinstance(model.last_linear, torch.nn.Linear) and model.last_linear.out_features == 6
    x = torch.randn(2, *arch_input_shape(name))
    with torch.set_grad_enabled(name in BACKWARD_CHECKED):
        z, feats = model(x, return_features=True)
    assert z.shape == (2, 6) and torch.isfinite(z).all()
    assert feats.shape == (2, model.n_features) == (2, model.last_linear.in_features)
    # The embedding is the head applied to the returned features.
    torch.testing.assert_close(z, model.last_linear(feats))
    if name in BACKWARD_CHECKED:
        z.sum().backward()
        assert model.last_linear.weight.grad is not None
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone_parameters())
    head, backbone = model.head_parameters(), model.backbone_parameters()
    assert {id(p) for p in head} == {id(p) for p in model.last_linear.parameters()}
    assert {id(p) for p in head} | {id(p) for p in backbone} == {id(p) for p in model.parameters()}
    assert not {id(p) for p in head} & {id(p) for p in backbone}


@pytest.mark.parametrize("name", NAMES)
def test_normalize_suffix_gives_unit_norms(name, build_arch, arch_input_shape):
    x = torch.randn(2, *arch_input_shape(name)) * 3
    with torch.no_grad():
        z = build_arch(name + "_normalize").eval()(x)
        raw = build_arch(name).eval()(x)  # same seed: same weights, only the suffix differs
    assert z.shape == raw.shape == (2, 8)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))
    assert not torch.allclose(raw.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(z, torch.nn.functional.normalize(raw, dim=1))


@pytest.mark.parametrize("name", NAMES)
def test_frozen_keeps_batchnorm_in_eval_mode_and_statistics(name, build_arch, arch_input_shape, bn_state):
    x = torch.randn(2, *arch_input_shape(name)) * 2 + 1
    for model in (build_arch(name + "_frozen"), build_arch(name, set_bn_eval=True)):
        model.train()
        bns = [m for m in model.modules() if isinstance(m, architectures.BN_TYPES)]
        assert bns and model.training and all(not m.training for m in bns)
        before = bn_state(model)
        with torch.no_grad():
            model(x)
        assert all(torch.equal(a, b) for a, b in zip(before, bn_state(model)))
    # Control: without the suffix the same forward pass moves the statistics.
    free = build_arch(name).train()
    assert all(m.training for m in free.modules() if isinstance(m, architectures.BN_TYPES))
    before = bn_state(free)
    with torch.no_grad():
        free(x)
    assert not all(torch.equal(a, b) for a, b in zip(before, bn_state(free)))


@pytest.mark.parametrize("name", NAMES)
def test_entry_names_its_paper(name):
    assert architectures.REGISTRY.get(name).paper.strip()
