"""Batch samplers: ``datasampler.select(name, opt, labels)`` builds one by name.

A sampler is a PyTorch batch sampler: iterating yields lists of dataset indices, one
list per batch, ``len()`` is the number of batches per epoch. Add one by writing a
module here with ``@register("name", paper=...)`` on the class.
"""

from __future__ import annotations

from utilities.registry import Registry, import_submodules

REGISTRY = Registry("data sampler", "--data_sampler")
register = REGISTRY.register


def names() -> list[str]:
    return REGISTRY.names()


def add_args(parser) -> None:
    REGISTRY.add_args(parser)


def select(name: str, opt, labels):
    return REGISTRY.get(name).obj(opt, labels)


import_submodules(__name__, __path__)
