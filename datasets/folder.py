"""A generic class-per-folder image dataset: ``--dataset folder --folder_root <dir>``.

``--folder_root`` is absolute or relative to ``--source_path`` (default ``folder``). Two layouts:

* ``<root>/train/<class>/<images>`` and ``<root>/test/<class>/<images>``: those splits as
  they are (the same classes in both gives a classification split with shared labels);
* ``<root>/<class>/<images>``: the first half of the sorted classes trains and the second
  half tests (class-disjoint, like CUB200 / CARS196).
"""

from __future__ import annotations

import os

import numpy as np

from datasets import register
from datasets._base import class_folders
from datasets._folders import collect, image_maker, load_half_split
from datasets._splits import assemble

LAYOUT = "<root>/train/<class>/<images> and <root>/test/<class>/<images>, or <root>/<class>/<images> (half/half)"


def add_args(parser) -> None:
    parser.add_argument("--folder_root", default="folder", type=str,
                        help="--dataset folder: image root, absolute or relative to --source_path")  # fmt: skip


@register("folder", paper="generic class-folder images", flags="--folder_root", defaults={})
def load(opt) -> dict:
    root = os.path.join(opt.source_path, opt.folder_root)
    train_dir, test_dir = os.path.join(root, "train"), os.path.join(root, "test")
    if not (os.path.isdir(train_dir) and os.path.isdir(test_dir)):
        return load_half_split(opt, root, LAYOUT)
    train_classes, test_classes = class_folders(train_dir, LAYOUT), class_folders(test_dir, LAYOUT)
    names = sorted(set(train_classes) | set(test_classes))
    ids = {n: i for i, n in enumerate(names)}
    train_paths, train_ids = _collect_named(train_dir, train_classes, ids)
    test_paths, test_ids = _collect_named(test_dir, test_classes, ids)
    classification = set(test_classes) <= set(train_classes)
    return assemble(train_paths, train_ids, test_paths, test_ids, names, image_maker(opt), opt,
                    classification=classification)  # fmt: skip


def _collect_named(root: str, classes: list[str], ids: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    paths, local = collect(root, classes)
    return paths, np.array([ids[classes[i]] for i in local], dtype=np.int64)
