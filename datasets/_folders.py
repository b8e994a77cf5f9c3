"""Loaders for class-per-folder photo datasets (CUB200, CARS196, the generic ``folder``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from datasets._base import ImageFileDataset, class_folders, image_transforms, list_images
from datasets._cache import cache_root, cached_dataset
from datasets._splits import assemble
from utilities.errors import UserError


def image_maker(opt):
    """``make`` for ``assemble``: file datasets with the Roth transforms, read through the decode cache with
    ``--decode_cache`` (``datasets._cache``: same images and augmentation, uint8 training batches)."""
    root = cache_root(opt)

    def make(items, labels, train: bool, names):
        if root is not None:
            return cached_dataset(list(items), labels, opt, train, names, root)
        return ImageFileDataset(list(items), labels, image_transforms(opt, train), names)

    return make


def collect(root: str, classes: Sequence[str], first_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """All images of ``root/<class>/`` for ``classes``; class ids count from ``first_id``. A class folder without
    an image is a one-line error (it would silently shift the class split)."""
    paths, ids = [], []
    for i, name in enumerate(classes):
        files = list_images(os.path.join(root, name))
        if not files:
            raise UserError(f"class folder {os.path.join(root, name)} holds no image; add its images or remove it")
        paths += files
        ids += [first_id + i] * len(files)
    return np.array(paths, dtype=object), np.array(ids, dtype=np.int64)


def load_half_split(
    opt, images_root: str, layout: str, vmf_exact: dict | None = None, vmf_fraction: float = 0.15
) -> dict:
    """Sorted class folders of ``images_root``: the first half trains, the second half tests (Roth suite)."""
    classes = class_folders(images_root, layout)
    paths, ids = collect(images_root, classes)
    n_train = len(classes) // 2
    is_train = ids < n_train
    return assemble(paths[is_train], ids[is_train], paths[~is_train], ids[~is_train], classes, image_maker(opt), opt,
                    vmf_exact=vmf_exact, vmf_fraction=vmf_fraction)  # fmt: skip
