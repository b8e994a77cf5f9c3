"""Shared pieces of every backbone: the embedding wrapper and local-only weight loading.

Every architecture is an ``EmbeddingNet``: a ``backbone`` mapping images to pooled
features ``[B, F]`` and a linear head ``last_linear: F -> embed_dim`` (the Roth suite's
name; losses that rescale the head's initial weights use it). ``_frozen`` keeps all
BatchNorm layers in eval mode (running statistics fixed) even under ``model.train()``;
as in the Roth suite their affine parameters still train. ``_normalize`` L2-normalises
the output.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from utilities.errors import UserError

BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


class EmbeddingNet(nn.Module):
    """``f(x) = last_linear(backbone(x))``, optionally L2-normalised.

    ``forward(x)`` returns embeddings ``[B, embed_dim]``; ``forward(x, return_features=True)``
    returns ``(embeddings, features)`` with the pooled backbone features ``[B, F]``.
    """

    def __init__(self, backbone: nn.Module, n_features: int, embed_dim: int, name: str = ""):
        super().__init__()
        self.backbone = backbone
        self.last_linear = nn.Linear(n_features, embed_dim)
        self.n_features = n_features
        self.embed_dim = embed_dim
        self.name = name
        self.normalize = False
        self.frozen_bn = False

    channels_last = False  # set by ``architectures.select`` (--channels_last): the input is converted to match

    def forward(self, x: torch.Tensor, return_features: bool = False):
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.backbone(x)
        z = self.last_linear(features)
        if self.normalize:
            z = F.normalize(z, dim=-1)
        return (z, features) if return_features else z

    def freeze_bn(self) -> None:
        """Fix BatchNorm running statistics (eval mode survives ``model.train()``)."""
        self.frozen_bn = True
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_bn:
            for module in self.modules():
                if isinstance(module, BN_TYPES):
                    module.eval()
        return self

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the embedding head (``--fc_lr``; trained during ``--warmup``)."""
        return list(self.last_linear.parameters())

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Everything but the head (frozen during ``--warmup``)."""
        head = {id(p) for p in self.head_parameters()}
        return [p for p in self.parameters() if id(p) not in head]


def use_channels_last(opt) -> bool:
    """``--channels_last``: on, off, or auto (on when CUDA is present, where training runs then)."""
    mode = opt.channels_last
    return mode == "on" or (mode == "auto" and torch.cuda.is_available())


def compile_backbone(model: EmbeddingNet, **options) -> EmbeddingNet:
    """``--compile``: ``torch.compile`` the backbone in place (``nn.Module.compile``: parameter names, checkpoints
    and ``model.backbone`` stay as they are); the head, miners and losses stay eager. Compilation happens at the
    first forward pass (and again when train/eval mode or the input shape changes)."""
    model.backbone.compile(**options)
    return model


class GreyToRGB(nn.Module):
    """Repeat a single input channel three times (grey datasets on RGB-only backbones); else a no-op."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def cached_checkpoint(urls: list[str], arch: str) -> str:
    """Path of the first of ``urls`` already in ``torch.hub.get_dir()/checkpoints``; never downloads.

    Raises ``UserError`` naming the file and folder when none is present.
    """
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    names = [os.path.basename(u) for u in urls]
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise UserError(
        f"pretrained weights for --arch {arch} not found: put {names[0]} (from {urls[0]}) into {folder} "
        f"(or set TORCH_HOME), or pass --not_pretrained for random init"
    )


def load_checkpoint(path: str) -> dict:
    """Load a state dict from a local file, with a one-line error if it is unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated download or a wrong file
        first_line = (str(err).splitlines() or [""])[0]
        raise UserError(
            f"cannot load pretrained weights {path} ({type(err).__name__}: {first_line}); "
            f"delete it and download it again, or pass --not_pretrained"
        ) from err
