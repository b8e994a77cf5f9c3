"""ResNet-18/34/50/101 (He et al. 2016) with a linear embedding head, as in the Roth suite.

Global average pooling of the last stage, then ``last_linear: 512|2048 -> embed_dim``
(Roth et al. 2020 use average pooling only for ResNet50). ImageNet weights are
torchvision's (or the identical pretrainedmodels file the Roth suite uses), read from
``torch.hub.get_dir()/checkpoints``; nothing is downloaded.
``--first_conv_3x3`` swaps the 7x7/2 stem conv for a 3x3/1 conv (the CIFAR stem of the vMF
paper, Scott et al. 2021, whose code keeps the max pool after it).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torchvision

from architectures import register
from architectures._base import EmbeddingNet, cached_checkpoint, load_checkpoint

# torchvision file first, then the pretrainedmodels copy of the original weights.
WEIGHT_URLS = {
    "resnet18": ["https://download.pytorch.org/models/resnet18-f37072fd.pth",
                 "https://download.pytorch.org/models/resnet18-5c106cde.pth"],
    "resnet34": ["https://download.pytorch.org/models/resnet34-b627a593.pth",
                 "https://download.pytorch.org/models/resnet34-333f7ec4.pth"],
    "resnet50": ["https://download.pytorch.org/models/resnet50-0676ba61.pth",
                 "https://download.pytorch.org/models/resnet50-19c8e357.pth"],
    "resnet101": ["https://download.pytorch.org/models/resnet101-63fe2227.pth",
                  "https://download.pytorch.org/models/resnet101-5d3b4d8f.pth"],
}  # fmt: skip


def add_args(parser) -> None:
    parser.add_argument(
        "--first_conv_3x3",
        action="store_true",
        help="ResNet: 3x3 stride-1 first conv, max pool kept (CIFAR stem of the vMF paper's code)",
    )
    parser.add_argument("--set_bn_eval", action="store_true",
                        help="keep every BatchNorm in eval mode (fixed statistics); same as the _frozen suffix")  # fmt: skip


def build_resnet(depth_name: str, opt, input_shape: tuple[int, ...]) -> EmbeddingNet:
    pretrained = not opt.not_pretrained
    path = cached_checkpoint(WEIGHT_URLS[depth_name], opt.arch) if pretrained else None  # fail before building
    net = getattr(torchvision.models, depth_name)(weights=None)
    n_features = net.fc.in_features
    net.fc = nn.Identity()
    in_channels = input_shape[0]
    if pretrained:
        state = load_checkpoint(path)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        net.load_state_dict(state)
    if opt.first_conv_3x3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    elif in_channels != 3:
        old = net.conv1
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if pretrained and in_channels == 1:  # grey input: summed RGB filters respond to grey as before
            with torch.no_grad():
                net.conv1.weight.copy_(old.weight.sum(1, keepdim=True))
    return EmbeddingNet(net, n_features, opt.embed_dim, name=depth_name)


@register("resnet18", paper="He et al. 2016, Deep Residual Learning for Image Recognition", flags="--first_conv_3x3")
def build_resnet18(opt, input_shape: tuple[int, ...]) -> EmbeddingNet:
    return build_resnet("resnet18", opt, input_shape)


@register("resnet34", paper="He et al. 2016, Deep Residual Learning for Image Recognition", flags="--first_conv_3x3")
def build_resnet34(opt, input_shape: tuple[int, ...]) -> EmbeddingNet:
    return build_resnet("resnet34", opt, input_shape)


@register("resnet50", paper="He et al. 2016, Deep Residual Learning for Image Recognition", flags="--first_conv_3x3")
def build_resnet50(opt, input_shape: tuple[int, ...]) -> EmbeddingNet:
    return build_resnet("resnet50", opt, input_shape)


@register("resnet101", paper="He et al. 2016, Deep Residual Learning for Image Recognition", flags="--first_conv_3x3")
def build_resnet101(opt, input_shape: tuple[int, ...]) -> EmbeddingNet:
    return build_resnet("resnet101", opt, input_shape)
