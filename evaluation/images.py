"""Image tiles and the matplotlib entry point shared by the figures of a run (certainty grid, retrievals)."""

from __future__ import annotations

import numpy as np

TILE_PX = 64  # each image is fitted into a TILE_PX x TILE_PX tile (aspect kept)
DPI = 100


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tile(image, border: tuple[int, int, int] | None = None) -> np.ndarray:
    """[TILE_PX, TILE_PX, 3] uint8: the image fitted into TILE_PX - 4 (aspect kept, nearest for tiny images) and
    centred on white, so neighbouring tiles keep a gutter; ``border`` (RGB) paints that 2-px gutter instead."""
    from PIL import Image

    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    img = img.convert("RGB")
    scale = (TILE_PX - 4) / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    img = img.resize(size, Image.NEAREST if scale >= 2 else Image.BILINEAR)
    out = np.full((TILE_PX, TILE_PX, 3), 255, dtype=np.uint8)
    if border is not None:
        out[:] = border
        out[2:-2, 2:-2] = 255
    top, left = (TILE_PX - size[1]) // 2, (TILE_PX - size[0]) // 2
    out[top : top + size[1], left : left + size[0]] = np.asarray(img)
    return out
