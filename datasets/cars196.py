"""CARS196 (Krause et al. 2013) in the Roth suite layout: ``<source_path>/cars196/images/<class>/``.

The first 98 sorted class folders train, the last 98 test. ``--split_protocol vmf``
holds out the vMF paper's 15 validation classes (83 train classes). The paper numbers
them by official class id, so folders are matched to the official class names (case,
spaces and punctuation ignored: ``Ram C-V Cargo Van Minivan 2012`` matches ``Ram C/V ...``);
folders with other names fall back to positions in sorted order, with a warning.
"""

from __future__ import annotations

import os
import re
import warnings

from datasets import register
from datasets._base import class_folders
from datasets._cars196_classes import OFFICIAL_CLASS_NAMES
from datasets._folders import load_half_split

LAYOUT = "<source_path>/cars196/images/<196 class folders, e.g. AM General Hummer SUV 2000>/<images>"
# Official class ids (0-based) of the vMF paper's validation classes.
VMF_VAL_IDS = [29, 33, 36, 39, 40, 44, 54, 55, 57, 61, 62, 63, 78, 85, 92]


def _key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def vmf_validation_positions(folders: list[str]) -> list[int]:
    """Positions in the sorted ``folders`` of the vMF paper's validation classes."""
    official = {_key(n): i for i, n in enumerate(OFFICIAL_CLASS_NAMES)}
    ids = [official.get(_key(f)) for f in folders]
    if None in ids or len(set(ids)) != len(OFFICIAL_CLASS_NAMES):
        warnings.warn(
            "cars196 folder names are not the 196 official class names; the vMF validation classes are "
            "taken as positions in sorted folder order",
            stacklevel=2,
        )
        return list(VMF_VAL_IDS)
    return sorted(ids.index(i) for i in VMF_VAL_IDS)


@register("cars196", paper="Krause et al. 2013, 3D Object Representations for Fine-Grained Categorization",
          defaults={})  # fmt: skip
def load(opt) -> dict:
    root = os.path.join(opt.source_path, "cars196", "images")
    exact = None
    if opt.split_protocol == "vmf":
        exact = {98: vmf_validation_positions(class_folders(root, LAYOUT))}
    return load_half_split(opt, root, LAYOUT, exact, 15 / 98)
