"""GoogLeNet (Szegedy et al. 2015; torchvision) with a linear embedding head.

Auxiliary classifiers off; the 1024-d pooled features (after torchvision's dropout, as in
the Roth suite where ``fc`` is replaced by the embedding layer) feed ``last_linear``.
ImageNet weights come from ``torch.hub.get_dir()/checkpoints`` only; with them the
network rescales its ImageNet-normalised input as torchvision's pretrained model does.
"""

from __future__ import annotations

import torch.nn as nn
import torchvision

from architectures import register
from architectures._base import EmbeddingNet, GreyToRGB, cached_checkpoint, load_checkpoint

WEIGHT_URLS = ["https://download.pytorch.org/models/googlenet-1378be20.pth"]


@register("googlenet", paper="Szegedy et al. 2015, Going Deeper with Convolutions")
def build_googlenet(opt, input_shape: tuple[int, ...]) -> EmbeddingNet:
    pretrained = not opt.not_pretrained
    path = cached_checkpoint(WEIGHT_URLS, opt.arch) if pretrained else None
    net = torchvision.models.googlenet(weights=None, aux_logits=pretrained, transform_input=pretrained,
                                       init_weights=not pretrained)  # fmt: skip
    if pretrained:
        net.load_state_dict(load_checkpoint(path))
        net.aux_logits, net.aux1, net.aux2 = False, None, None
    n_features = net.fc.in_features
    net.fc = nn.Identity()
    return EmbeddingNet(nn.Sequential(GreyToRGB(), net), n_features, opt.embed_dim, name="googlenet")
