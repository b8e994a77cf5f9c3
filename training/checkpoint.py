"""Checkpoints: best per storage metric and the last one (for ``--resume``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

LAST = "checkpoint_last.pth"


def metric_filename(metric: str) -> str:
    """``e_recall@1`` -> ``checkpoint_best_e_recall_at_1.pth``."""
    return "checkpoint_best_" + metric.replace("@", "_at_").replace("/", "_") + ".pth"


def save(state: dict, path: str | Path) -> None:
    """Write atomically, so an interrupted save never corrupts an earlier checkpoint."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """A checkpoint of this suite (tensors and plain values only: loaded with ``weights_only=True``)."""
    return torch.load(path, map_location=device, weights_only=True)
