"""``architectures.select(name, opt)``: build a backbone by name and apply its suffixes."""

from __future__ import annotations

import torch
import torch.nn as nn

from architectures import REGISTRY, parse_name
from architectures._base import EmbeddingNet, compile_backbone, use_channels_last
from architectures._timm import PREFIX, build_timm


def select(name: str, opt, input_shape: tuple[int, ...]) -> nn.Module:
    """``<base>[_frozen][_normalize]`` or ``timm_<model>[_frozen][_normalize]`` -> ``EmbeddingNet``.

    ``input_shape``: (channels, height, width) of one training image (a fact of the dataset).
    ``_frozen`` (or ``--set_bn_eval``) fixes BatchNorm statistics; ``_normalize``
    L2-normalises the embeddings. The head is ``model.last_linear``. ``--channels_last`` converts the weights (and
    each input) to the channels-last memory format; ``--compile`` compiles the backbone (``compile_backbone``).
    """
    base, frozen, normalize = parse_name(name)
    input_shape = tuple(int(v) for v in input_shape)
    if base.startswith(PREFIX):
        model: EmbeddingNet = build_timm(base[len(PREFIX) :], opt, input_shape)
    else:
        model = REGISTRY.get(base).obj(opt, input_shape)
    model.normalize = normalize
    if frozen or opt.set_bn_eval:
        model.freeze_bn()
    model.arch = name
    if use_channels_last(opt):
        model.channels_last = True
        model.to(memory_format=torch.channels_last)
    if opt.compile:
        compile_backbone(model)
    return model
