"""CARS196 (Krause et al. 2013) in the Roth suite layout: ``<source_path>/cars196/images/<class>/``.

The first 98 sorted class folders train, the last 98 test. ``--split_protocol vmf``
holds out the vMF paper's 15 validation classes (83 train classes).
"""

from __future__ import annotations

import os

from datasets import register
from datasets._folders import load_half_split

LAYOUT = "<source_path>/cars196/images/<196 class folders, e.g. AM General Hummer SUV 2000>/<images>"
VMF_VAL_CLASSES = {98: [29, 33, 36, 39, 40, 44, 54, 55, 57, 61, 62, 63, 78, 85, 92]}


@register("cars196", paper="Krause et al. 2013, 3D Object Representations for Fine-Grained Categorization",
          defaults={})  # fmt: skip
def load(opt) -> dict:
    root = os.path.join(opt.source_path, "cars196", "images")
    return load_half_split(opt, root, LAYOUT, VMF_VAL_CLASSES, 15 / 98)
