"""In-Shop Clothes Retrieval (Liu et al. 2016, DeepFashion) in its official layout, evaluated query -> gallery.

``<source_path>/in_shop/Eval/list_eval_partition.txt`` (first line: the number of images; second:
``image_name item_id evaluation_status``; then one image per line, ``img/<...>/<item id>/<image>.jpg`` with status
``train``, ``query`` or ``gallery``) and the images at those paths under ``<source_path>/in_shop/`` (or under its
``Img/`` folder, as the download unpacks). The folder may also be named ``in-shop`` (the Roth et al. DML baselines)
or ``Inshop_Clothes`` (the Proxy Anchor code). The ``train`` images train (3,997 items in the official file); the
test split holds the query images followed by the gallery images, with ``split.query`` / ``split.gallery`` saying
which: queries are searched against the gallery only, never among themselves. By default the papers'
Recall@1/10/20/30/40/50 in cosine similarity (the Proxy Anchor code's evaluation), Euclidean Recall@1 and MAP@R.
"""

from __future__ import annotations

import os

import numpy as np

from datasets import register
from datasets._base import check_image_file
from datasets._folders import image_maker
from datasets._splits import assemble
from utilities.errors import UserError

LAYOUT = ("<source_path>/in_shop/Eval/list_eval_partition.txt (image_name item_id evaluation_status) and the images "
          "img/<...>/<item id>/<image>.jpg it names, under <source_path>/in_shop/ or <source_path>/in_shop/Img/")  # fmt: skip
FOLDERS = ("in_shop", "in-shop", "Inshop_Clothes")  # this suite, the Roth et al. DML baselines, the Proxy Anchor code
STATUSES = ("train", "query", "gallery")
RECALLS = [f"c_recall@{k}" for k in (1, 10, 20, 30, 40, 50)]


def image_root(folder: str, first_image: str) -> str:
    """Where the partition file's paths start: ``folder`` itself, or its ``Img/`` (the unpacked download)."""
    for root in (folder, os.path.join(folder, "Img")):
        if os.path.exists(os.path.join(root, first_image)):
            return root
    return folder  # the missing image is then reported by name


def read_partition(path: str, folder: str) -> dict[str, tuple[list[str], list[str]]]:
    """status -> (image paths, item ids) of the partition file; a missing image or a malformed line is one line."""
    if not os.path.isfile(path):
        raise UserError(f"In-Shop partition file {path} not found; expected layout: {LAYOUT}")
    out = {s: ([], []) for s in STATUSES}
    with open(path) as f:
        lines = f.read().splitlines()
    if len(lines) < 3 or lines[1].split()[:3] != ["image_name", "item_id", "evaluation_status"]:
        raise UserError(f"{path}: expected a count, the header 'image_name item_id evaluation_status' and image lines")
    root = image_root(folder, (lines[2].split() or [""])[0])
    for line_no, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or parts[2] not in STATUSES:
            raise UserError(f"{path} line {line_no}: expected 'image_name item_id train|query|gallery', got {line}")
        image = os.path.join(root, parts[0])
        try:
            check_image_file(image)
        except UserError as err:
            raise UserError(f"{path} line {line_no}: {err} (or remove the line)") from None
        out[parts[2]][0].append(image)
        out[parts[2]][1].append(parts[1])
    for status in STATUSES:
        if not out[status][0]:
            raise UserError(f"{path} names no {status} image; expected layout: {LAYOUT}")
    return out


@register("in_shop", paper="Liu et al. 2016, DeepFashion: Powering Robust Clothes Recognition and Retrieval "
          "(In-Shop Clothes Retrieval benchmark)", defaults={"evaluation_metrics": [*RECALLS, "e_recall@1", "map_at_r"]})  # fmt: skip
def load(opt) -> dict:
    found = [os.path.join(opt.source_path, f) for f in FOLDERS if os.path.isdir(os.path.join(opt.source_path, f))]
    if not found:
        raise UserError(f"dataset folder {os.path.join(opt.source_path, FOLDERS[0])} not found (nor "
                        f"{' or '.join(FOLDERS[1:])}); expected layout: {LAYOUT}")  # fmt: skip
    parts = read_partition(os.path.join(found[0], "Eval", "list_eval_partition.txt"), found[0])
    items = sorted({i for _, ids in parts.values() for i in ids})
    index = {item: n for n, item in enumerate(items)}
    paths = {s: np.array(parts[s][0], dtype=object) for s in STATUSES}
    classes = {s: np.array([index[i] for i in parts[s][1]], dtype=np.int64) for s in STATUSES}
    test_paths = np.concatenate([paths["query"], paths["gallery"]])
    test_classes = np.concatenate([classes["query"], classes["gallery"]])
    out = assemble(paths["train"], classes["train"], test_paths, test_classes, items, image_maker(opt), opt)
    n_query = len(paths["query"])
    out["testing"].query = np.arange(len(test_paths)) < n_query
    out["testing"].gallery = ~out["testing"].query
    return out
