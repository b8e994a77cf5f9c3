"""Backbones: every registered name builds offline and maps images to embeddings; suffixes,
feature outputs, BatchNorm freezing and local-only pretrained weights."""

from __future__ import annotations

import argparse
import os

import pytest
import timm
import torch
import torch.nn as nn
import torchvision

import architectures
from architectures._base import EmbeddingNet
from utilities.errors import UserError

BN = nn.modules.batchnorm._BatchNorm


def make_opt(arch: str, **kw) -> argparse.Namespace:
    base = dict(arch=arch, embed_dim=8, not_pretrained=True, first_conv_3x3=False, set_bn_eval=False)
    base.update(kw)
    return argparse.Namespace(**base)


def input_shape(name: str) -> tuple[int, int, int]:
    return (1, 8, 8) if name.startswith("mnist_cnn") else (3, 32, 32)


# Backward passes through the big backbones cost seconds on 2 shared cores; gradients are checked on these.
BACKWARD_CHECKED = {"mnist_cnn", "resnet18", "googlenet"}


def build(name: str, **kw) -> EmbeddingNet:
    torch.manual_seed(0)
    opt = make_opt(name, input_shape=input_shape(name), **kw)
    return architectures.select(name, opt)


@pytest.mark.parametrize("name", architectures.names())
def test_every_architecture_embeds_and_trains(name):
    model = build(name).train()
    x = torch.randn(2, *input_shape(name))
    with torch.set_grad_enabled(name in BACKWARD_CHECKED):
        z, feats = model(x, return_features=True)
    assert z.shape == (2, 8) and torch.isfinite(z).all()
    assert feats.shape == (2, model.n_features)
    # The embedding is the head applied to the returned features.
    torch.testing.assert_close(z, model.last_linear(feats))
    if name in BACKWARD_CHECKED:
        z.sum().backward()
        assert model.last_linear.weight.grad is not None
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone_parameters())
    head, backbone = model.head_parameters(), model.backbone_parameters()
    assert {id(p) for p in head} | {id(p) for p in backbone} == {id(p) for p in model.parameters()}
    assert not {id(p) for p in head} & {id(p) for p in backbone}


@pytest.mark.parametrize("name", ["mnist_cnn", "timm_resnet18"])
def test_normalize_suffix_gives_unit_norms(name):
    x = torch.randn(2, *input_shape(name)) * 3
    with torch.no_grad():
        torch.testing.assert_close(build(name + "_normalize").eval()(x).norm(dim=1), torch.ones(2))
        assert not torch.allclose(build(name).eval()(x).norm(dim=1), torch.ones(2))


def bn_state(model: nn.Module) -> list[torch.Tensor]:
    return [t.clone() for m in model.modules() if isinstance(m, BN) for t in (m.running_mean, m.running_var)]


@pytest.mark.parametrize("name", ["mnist_cnn", "resnet18"])
def test_frozen_keeps_batchnorm_statistics(name):
    x = torch.randn(2, *input_shape(name)) * 2 + 1
    for model in (build(name + "_frozen_normalize"), build(name, set_bn_eval=True)):
        model.train()
        assert model.training and all(not m.training for m in model.modules() if isinstance(m, BN))
        before = bn_state(model)
        with torch.no_grad():
            model(x)
        assert all(torch.equal(a, b) for a, b in zip(before, bn_state(model)))
    # Control: without the suffix the same forward pass moves the statistics.
    free = build(name).train()
    before = bn_state(free)
    with torch.no_grad():
        free(x)
    assert not all(torch.equal(a, b) for a, b in zip(before, bn_state(free)))


def test_mnist_cnn_layout_matches_the_paper():
    """conv5x5(6)-BN-ReLU-pool, conv5x5(16)-BN-ReLU-pool, FC120-BN-ReLU, FC d: count the parameters."""
    for shape in ((1, 8, 8), (1, 28, 28), (3, 32, 32)):
        c, h, w = shape
        model = architectures.select("mnist_cnn", make_opt("mnist_cnn", input_shape=shape, embed_dim=5))
        flat = 16 * (h // 4) * (w // 4)
        expected = (c * 6 * 25 + 6) + 2 * 6 + (6 * 16 * 25 + 16) + 2 * 16 + (flat * 120 + 120) + 2 * 120 + (120 * 5 + 5)
        assert sum(p.numel() for p in model.parameters()) == expected
        assert model.eval()(torch.randn(2, *shape)).shape == (2, 5)


def test_first_conv_3x3_and_grey_input():
    model = architectures.select("resnet18", make_opt("resnet18", first_conv_3x3=True, input_shape=(3, 32, 32)))
    assert model.backbone.conv1.kernel_size == (3, 3) and model.backbone.conv1.stride == (1, 1)
    # The vMF paper's code keeps the 3x3/2 max pool after the 3x3 stem: 32x32 input -> 16x16 into layer1.
    assert isinstance(model.backbone.maxpool, nn.MaxPool2d) and model.backbone.maxpool.stride == 2
    feats = {}
    model.backbone.layer1.register_forward_hook(lambda m, i, o: feats.update(layer1=o.shape))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 32, 32))
    assert feats["layer1"][-2:] == (16, 16)
    for name in ("resnet18", "googlenet"):  # grey (MNIST-like) input on ImageNet backbones
        grey = architectures.select(name, make_opt(name, input_shape=(1, 28, 28)))
        with torch.no_grad():
            assert grey.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 8)


@pytest.mark.parametrize("name,file", [("resnet50_frozen_normalize", "resnet50-0676ba61.pth"),
                                       ("resnet18", "resnet18-f37072fd.pth"),
                                       ("googlenet", "googlenet-1378be20.pth"),
                                       ("bninception", "bn_inception-52deb4733.pth")])  # fmt: skip
def test_missing_pretrained_weights_name_the_file(name, file, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError) as err:
        architectures.select(name, make_opt(name, not_pretrained=False))
    message = str(err.value)
    assert file in message and os.path.join(str(tmp_path), "hub", "checkpoints") in message
    assert "--not_pretrained" in message and "\n" not in message


def test_pretrained_weights_are_loaded_from_the_hub_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(reference, folder / "resnet18-5c106cde.pth")  # the pretrainedmodels file name also works
    model = architectures.select("resnet18", make_opt("resnet18", not_pretrained=False))
    loaded = model.backbone.state_dict()
    for key in ("conv1.weight", "layer4.1.bn2.running_var", "layer2.0.downsample.0.weight"):
        assert torch.equal(loaded[key], reference[key])


def test_timm_models(tmp_path, monkeypatch):
    model = build("timm_resnet18_frozen")
    assert model.frozen_bn and model(torch.randn(2, 3, 32, 32)).shape == (2, 8)
    with pytest.raises(UserError, match="unknown timm model"):
        build("timm_not_a_model_xyz")
    # Pretrained: never downloaded; found in the torch hub folder (by URL file name) or the HF cache.
    import huggingface_hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(UserError, match="--not_pretrained") as err:
        architectures.select("timm_resnet18", make_opt("timm_resnet18", not_pretrained=False))
    assert "timm/resnet18.a1_in1k" in str(err.value)
    url = timm.models.get_pretrained_cfg("resnet18").url
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(2)
    reference = timm.create_model("resnet18", pretrained=False).state_dict()
    torch.save(reference, folder / os.path.basename(url))
    model = architectures.select("timm_resnet18", make_opt("timm_resnet18", not_pretrained=False))
    assert torch.equal(model.backbone.state_dict()["conv1.weight"], reference["conv1.weight"])


def test_unknown_architecture_is_user_error():
    with pytest.raises(UserError, match="unknown architecture"):
        architectures.select("resnet9000", make_opt("resnet9000"))
