"""Backbones beyond the registry contract (tests/architectures/test_contract.py): the small CNN's layout, the
3x3 stem and grey input, local-only pretrained weights, timm models and their suffixes, unknown names."""

from __future__ import annotations

import os

import pytest
import timm
import torch
import torch.nn as nn
import torchvision

import architectures
from utilities.errors import UserError


def test_mnist_cnn_layout_matches_the_paper(build_arch):
    """conv5x5(6)-BN-ReLU-pool, conv5x5(16)-BN-ReLU-pool, FC120-BN-ReLU, FC d: count the parameters."""
    for shape in ((1, 8, 8), (1, 28, 28), (3, 32, 32)):
        c, h, w = shape
        model = build_arch("mnist_cnn", embed_dim=5, input_shape=shape)
        flat = 16 * (h // 4) * (w // 4)
        expected = (c * 6 * 25 + 6) + 2 * 6 + (6 * 16 * 25 + 16) + 2 * 16 + (flat * 120 + 120) + 2 * 120 + (120 * 5 + 5)
        assert sum(p.numel() for p in model.parameters()) == expected
        assert model.eval()(torch.randn(2, *shape)).shape == (2, 5)


def test_first_conv_3x3_and_grey_input(build_arch):
    model = build_arch("resnet18", first_conv_3x3=True, input_shape=(3, 32, 32))
    assert model.backbone.conv1.kernel_size == (3, 3) and model.backbone.conv1.stride == (1, 1)
    # The vMF paper's code keeps the 3x3/2 max pool after the 3x3 stem: 32x32 input -> 16x16 into layer1.
    assert isinstance(model.backbone.maxpool, nn.MaxPool2d) and model.backbone.maxpool.stride == 2
    feats = {}
    model.backbone.layer1.register_forward_hook(lambda m, i, o: feats.update(layer1=o.shape))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 32, 32))
    assert feats["layer1"][-2:] == (16, 16)
    assert build_arch("resnet18").backbone.conv1.kernel_size == (7, 7)  # control: the flag makes the difference
    for name in ("resnet18", "googlenet"):  # grey (MNIST-like) input on ImageNet backbones
        grey = build_arch(name, input_shape=(1, 28, 28))
        with torch.no_grad():
            assert grey.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 8)


def pretrained_opt(make_opt, name: str):
    """Options that want pretrained weights (cub200 has no --not_pretrained default, unlike digits)."""
    opt = make_opt("--dataset", "cub200", "--arch", name, "--embed_dim", "8")
    assert not opt.not_pretrained
    return opt


@pytest.mark.parametrize("name,file", [("resnet50_frozen_normalize", "resnet50-0676ba61.pth"),
                                       ("resnet18", "resnet18-f37072fd.pth"),
                                       ("googlenet", "googlenet-1378be20.pth"),
                                       ("bninception", "bn_inception-52deb4733.pth")])  # fmt: skip
def test_missing_pretrained_weights_name_the_file(name, file, tmp_path, monkeypatch, make_opt):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError) as err:
        architectures.select(name, pretrained_opt(make_opt, name), (3, 32, 32))
    message = str(err.value)
    assert file in message and os.path.join(str(tmp_path), "hub", "checkpoints") in message
    assert "--not_pretrained" in message and "\n" not in message


def test_pretrained_weights_are_loaded_from_the_hub_folder(tmp_path, monkeypatch, make_opt):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(reference, folder / "resnet18-5c106cde.pth")  # the pretrainedmodels file name also works
    model = architectures.select("resnet18", pretrained_opt(make_opt, "resnet18"), (3, 32, 32))
    loaded = model.backbone.state_dict()
    for key in ("conv1.weight", "layer4.1.bn2.running_var", "layer2.0.downsample.0.weight"):
        assert torch.equal(loaded[key], reference[key])


def test_timm_models(tmp_path, monkeypatch, build_arch, make_opt):
    model = build_arch("timm_resnet18_frozen")
    assert model.frozen_bn and model(torch.randn(2, 3, 32, 32)).shape == (2, 8)
    with pytest.raises(UserError, match="unknown timm model"):
        build_arch("timm_not_a_model_xyz")
    # Pretrained: never downloaded; found in the torch hub folder (by URL file name) or the HF cache.
    import huggingface_hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(UserError, match="--not_pretrained") as err:
        architectures.select("timm_resnet18", pretrained_opt(make_opt, "timm_resnet18"), (3, 32, 32))
    assert "timm/resnet18.a1_in1k" in str(err.value)
    url = timm.models.get_pretrained_cfg("resnet18").url
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(2)
    reference = timm.create_model("resnet18", pretrained=False).state_dict()
    torch.save(reference, folder / os.path.basename(url))
    model = architectures.select("timm_resnet18", pretrained_opt(make_opt, "timm_resnet18"), (3, 32, 32))
    assert torch.equal(model.backbone.state_dict()["conv1.weight"], reference["conv1.weight"])


def test_timm_suffixes_normalize_and_freeze(build_arch, bn_state):
    """timm_<model> is not a registry entry (the contract does not cover it): its suffixes work the same way."""
    x = torch.randn(2, 3, 32, 32) * 2 + 1
    with torch.no_grad():
        torch.testing.assert_close(build_arch("timm_resnet18_normalize").eval()(x).norm(dim=1), torch.ones(2))
        assert not torch.allclose(build_arch("timm_resnet18").eval()(x).norm(dim=1), torch.ones(2))
    for model, moves in ((build_arch("timm_resnet18_frozen"), False), (build_arch("timm_resnet18"), True)):
        model.train()
        before = bn_state(model)
        with torch.no_grad():
            model(x)
        assert all(torch.equal(a, b) for a, b in zip(before, bn_state(model))) != moves


def test_unknown_architecture_is_user_error(make_opt):
    with pytest.raises(UserError, match="unknown architecture"):
        architectures.select("resnet9000", make_opt(), (3, 32, 32))
    with pytest.raises(UserError, match="unknown architecture"):  # caught when the options are parsed
        make_opt("--arch", "resnet9000")
