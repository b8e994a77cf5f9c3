"""Batch miners: ``batch_mining.select(name, opt)`` builds one by name.

A miner is a callable ``(embeddings [B, D], labels [B]) -> LongTensor [T, 3]`` of
(anchor, positive, negative) batch indices, with a ``name`` attribute. Miners that
return another structure (npair, lifted) document it. Add one by writing a module
here with ``@register("name", paper=...)`` on the class.
"""

from __future__ import annotations

from utilities.registry import Registry, import_submodules

REGISTRY = Registry("batch miner", "--batch_mining")
register = REGISTRY.register


def names() -> list[str]:
    return REGISTRY.names()


def add_args(parser) -> None:
    REGISTRY.add_args(parser)


def select(name: str, opt):
    miner = REGISTRY.get(name).obj(opt)
    miner.name = name
    return miner


import_submodules(__name__, __path__)
