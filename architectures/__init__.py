"""Backbones: ``architectures.select(name, opt, input_shape)`` builds an embedding network.

Names are ``<base>[_frozen][_normalize]``: ``_frozen`` freezes BatchNorm statistics
(and affine parameters), ``_normalize`` L2-normalises the output. ``timm_<model>``
builds any timm model. The network maps images ``[B, C, H, W]`` to embeddings
``[B, embed_dim]``; ``model(x, return_features=True)`` returns
``(embeddings, features)`` for losses that need backbone features. Add a backbone
by writing a builder ``def build(opt, input_shape) -> EmbeddingNet`` with ``@register("name")``;
``input_shape`` is (channels, height, width) of the training images.
"""

from __future__ import annotations

from utilities.registry import Registry, import_submodules

REGISTRY = Registry("architecture", "--arch", hint="or timm_<any timm model>; suffixes _frozen, _normalize")
register = REGISTRY.register
SUFFIXES = ("_frozen", "_normalize")


def names() -> list[str]:
    return REGISTRY.names()


def add_args(parser) -> None:
    REGISTRY.add_args(parser)


def parse_name(name: str) -> tuple[str, bool, bool]:
    """``resnet50_frozen_normalize`` -> (``resnet50``, frozen=True, normalize=True)."""
    frozen = normalize = False
    changed = True
    while changed:
        changed = False
        if name.endswith("_normalize"):
            name, normalize, changed = name[: -len("_normalize")], True, True
        if name.endswith("_frozen"):
            name, frozen, changed = name[: -len("_frozen")], True, True
    return name, frozen, normalize


import_submodules(__name__, __path__)

from architectures._base import BN_TYPES as BN_TYPES  # noqa: E402
from architectures._select import select as select  # noqa: E402
