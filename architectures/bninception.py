"""BN-Inception (Ioffe & Szegedy 2015; pretrainedmodels' ``bninception``) with a linear head.

As in the Roth suite: the convolutional features, global average pooling to 1024-d, then
``last_linear``. The ImageNet weights expect BGR input in 0-255 minus the mean
(104, 117, 128); the image datasets apply that convention when ``--arch`` contains
``bninception``. Weights come from ``torch.hub.get_dir()/checkpoints`` only.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from architectures import register
from architectures._base import EmbeddingNet, GreyToRGB, cached_checkpoint, load_checkpoint

WEIGHT_URLS = ["http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth"]


class BNInceptionFeatures(nn.Module):
    """pretrainedmodels' BN-Inception trunk with adaptive average pooling (any input size)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.grey = GreyToRGB()
        self.net = net
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.net.features(self.grey(x))).flatten(1)


@register("bninception", paper="Ioffe & Szegedy 2015, Batch Normalization (BN-Inception)")
def build_bninception(opt, input_shape: tuple[int, ...]) -> EmbeddingNet:
    from pretrainedmodels.models.bninception import BNInception

    path = None if opt.not_pretrained else cached_checkpoint(WEIGHT_URLS, opt.arch)
    net = BNInception(num_classes=1000)
    if path is not None:
        net.load_state_dict(load_checkpoint(path))
    n_features = net.last_linear.in_features
    # The classifier and its fixed-size pool are unused; dropping them keeps them out of the optimiser.
    net.last_linear, net.global_pool = nn.Identity(), nn.Identity()
    return EmbeddingNet(BNInceptionFeatures(net), n_features, opt.embed_dim, name="bninception")
