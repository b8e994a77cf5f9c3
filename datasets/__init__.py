"""Datasets: ``datasets.select(name, opt)`` loads the splits of one dataset.

Returns a dict with the keys ``training`` (train transforms), ``evaluation`` (the
train images with test transforms), ``validation`` (None unless a validation split
is requested) and ``testing``; each is a ``torch.utils.data.Dataset`` yielding
``(image, label, index)`` with integer labels (``training`` labels are 0..C-1) and states
``closed_set``: whether its classes are the train classes (classification splits). ``image_encoder``
turns any image into the network's input as the dataset's test transform does.
A dataset registers ``defaults``: the values its unset flags take (for ``digits``:
the small CNN without pretrained weights). Add one by writing a module here with
``@register("name", defaults={...})`` on a loader ``def load(opt) -> dict``.
"""

from __future__ import annotations

from utilities.registry import Registry, import_submodules

REGISTRY = Registry("dataset", "--dataset")
register = REGISTRY.register


def names() -> list[str]:
    return REGISTRY.names()


def add_args(parser) -> None:
    REGISTRY.add_args(parser)


def defaults(name: str) -> dict:
    """Flag values that this dataset uses when they are not given explicitly."""
    return dict(REGISTRY.get(name).meta.get("defaults", {}))


def select(name: str, opt) -> dict:
    return REGISTRY.get(name).obj(opt)


def image_encoder(name: str, opt, input_shape: tuple[int, ...]):
    """``encode(pil_image) -> tensor``: the test-time input pipeline of dataset ``name`` for ANY image (used to
    embed a user's image folder). A dataset module may define ``image_encoder(opt, input_shape)``; the default is
    the photo datasets' test transform (``datasets._base.image_transforms(opt, train=False)``)."""
    import sys

    from datasets._base import image_transforms

    module = sys.modules[REGISTRY.get(name).module]
    own = getattr(module, "image_encoder", None)
    return own(opt, input_shape) if own is not None else image_transforms(opt, train=False)


import_submodules(__name__, __path__)

from datasets._base import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS  # noqa: E402
