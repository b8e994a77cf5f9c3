"""The small CNN of the vMF paper (Scott et al. 2021) for MNIST-like images.

conv5x5(6)-BN-ReLU-maxpool2, conv5x5(16)-BN-ReLU-maxpool2, FC 120-BN-ReLU (the 120-d
``features``), then ``last_linear``: FC embed_dim. Convolutions are zero-padded ("same")
so 8x8 digits shrink to 2x2 and 28x28 MNIST to 7x7; the input shape (and channel count)
comes from ``input_shape`` (the shape of the first training sample, passed by the training loop).
"""

from __future__ import annotations

import torch.nn as nn

from architectures import register
from architectures._base import EmbeddingNet
from utilities.errors import UserError


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 5, padding=2), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2))  # fmt: skip


class MnistCNNFeatures(nn.Sequential):
    """Image ``[B, C, H, W]`` -> 120-d features."""

    def __init__(self, input_shape: tuple[int, int, int]):
        c, h, w = input_shape
        if h < 4 or w < 4:
            raise UserError(f"mnist_cnn needs images of at least 4x4 pixels, got {h}x{w}; use another --arch")
        n_flat = 16 * (h // 2 // 2) * (w // 2 // 2)
        super().__init__(conv_block(c, 6), conv_block(6, 16), nn.Flatten(), nn.Linear(n_flat, 120),
                         nn.BatchNorm1d(120), nn.ReLU(inplace=True))  # fmt: skip


@register("mnist_cnn", paper="Scott et al. 2021, von Mises-Fisher Loss (small MNIST CNN)")
def build_mnist_cnn(opt, input_shape: tuple[int, ...]) -> EmbeddingNet:
    shape = tuple(input_shape)
    if len(shape) != 3:
        shape = (1, *shape[-2:])
    return EmbeddingNet(MnistCNNFeatures(shape), 120, opt.embed_dim, name="mnist_cnn")
