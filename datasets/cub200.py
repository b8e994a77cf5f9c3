"""CUB200-2011 (Wah et al. 2011) in the Roth suite layout: ``<source_path>/cub200/images/<class>/``.

The first 100 sorted class folders train, the last 100 test. ``--split_protocol vmf``
holds out the vMF paper's 15 validation classes (85 train classes).
"""

from __future__ import annotations

import os

from datasets import register
from datasets._folders import load_half_split

LAYOUT = "<source_path>/cub200/images/<200 class folders, e.g. 001.Black_footed_Albatross>/<images>"
VMF_VAL_CLASSES = {100: [27, 33, 35, 39, 40, 42, 56, 59, 61, 63, 68, 81, 85, 94, 98]}


@register("cub200", paper="Wah et al. 2011, The Caltech-UCSD Birds-200-2011 Dataset", defaults={})
def load(opt) -> dict:
    root = os.path.join(opt.source_path, "cub200", "images")
    return load_half_split(opt, root, LAYOUT, VMF_VAL_CLASSES, 15 / 100)
