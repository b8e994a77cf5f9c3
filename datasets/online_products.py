"""Stanford Online Products (Oh Song et al. 2016) in the Roth suite layout.

``<source_path>/online_products/images/<category>_final/<image>`` and
``<source_path>/online_products/Info_Files/Ebay_{train,test}.txt``, whose rows are
``image_id class_id super_class_id path`` after a header line, ``path`` relative to
``images/`` (e.g. ``bicycle_final/111085122871_0.JPG``), as the Roth suite joins them.
Train: Ebay_train (11318 classes), test: Ebay_test (11316 classes); class ids are
``class_id - 1``. ``--split_protocol vmf`` holds out
``RandomState(1234).choice(11318, 1698, replace=False)`` for validation (vMF paper).
"""

from __future__ import annotations

import os

import numpy as np

from datasets import register
from datasets._base import check_image_file
from datasets._folders import image_maker
from datasets._splits import VMF_SEED, assemble
from utilities.errors import UserError

LAYOUT = ("<source_path>/online_products/images/<category>_final/<images> and "
          "<source_path>/online_products/Info_Files/Ebay_train.txt, Ebay_test.txt")  # fmt: skip
N_TRAIN_CLASSES, N_VMF_VAL = 11318, 1698


def read_info_file(path: str, images_root: str) -> tuple[np.ndarray, np.ndarray]:
    """(image paths, class ids - 1) of one Ebay_*.txt file."""
    if not os.path.isfile(path):
        raise UserError(f"SOP info file {path} not found; expected layout: {LAYOUT}")
    paths, ids = [], []
    with open(path) as f:
        header = f.readline().split()
        if header[:4] != ["image_id", "class_id", "super_class_id", "path"]:
            raise UserError(
                f"{path}: expected the header 'image_id class_id super_class_id path', got {' '.join(header)}"
            )
        for line_no, line in enumerate(f, start=2):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 4 or not parts[1].isdigit():
                raise UserError(
                    f"{path} line {line_no}: expected 'image_id class_id super_class_id path', got {line.strip()}"
                )
            image = os.path.join(images_root, " ".join(parts[3:]))
            try:
                check_image_file(image)
            except UserError as err:
                raise UserError(f"{path} line {line_no}: {err} (or remove the line)") from None
            ids.append(int(parts[1]) - 1)
            paths.append(image)
    if not paths:
        raise UserError(f"SOP info file {path} lists no images")
    return np.array(paths, dtype=object), np.array(ids, dtype=np.int64)


def class_names(paths: np.ndarray, ids: np.ndarray, n: int) -> list[str]:
    """``<category folder>/<product id>`` per class id (the image names start with the product id)."""
    names = [str(i) for i in range(n)]
    for p, c in zip(paths, ids):
        folder, file = os.path.split(p)
        names[c] = f"{os.path.basename(folder)}/{file.split('_')[0]}"
    return names


@register("online_products", paper="Oh Song et al. 2016, Deep Metric Learning via Lifted Structured Feature Embedding",
          defaults={})  # fmt: skip
def load(opt) -> dict:
    root = os.path.join(opt.source_path, "online_products")
    images_root = os.path.join(root, "images")
    if not os.path.isdir(images_root):
        raise UserError(f"dataset folder {images_root} not found; expected layout: {LAYOUT}")
    train_paths, train_ids = read_info_file(os.path.join(root, "Info_Files", "Ebay_train.txt"), images_root)
    test_paths, test_ids = read_info_file(os.path.join(root, "Info_Files", "Ebay_test.txt"), images_root)
    n = int(max(train_ids.max(), test_ids.max())) + 1
    names = class_names(np.concatenate([train_paths, test_paths]), np.concatenate([train_ids, test_ids]), n)
    exact = {N_TRAIN_CLASSES: np.random.RandomState(VMF_SEED).choice(N_TRAIN_CLASSES, N_VMF_VAL, replace=False)}
    return assemble(train_paths, train_ids, test_paths, test_ids, names, image_maker(opt), opt,
                    vmf_exact=exact, vmf_fraction=N_VMF_VAL / N_TRAIN_CLASSES)  # fmt: skip
