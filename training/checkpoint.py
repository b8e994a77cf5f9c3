"""Checkpoints: best per storage metric and the last one (for ``--resume``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from utilities.errors import UserError

LAST = "checkpoint_last.pth"


def metric_filename(metric: str) -> str:
    """``e_recall@1`` -> ``checkpoint_best_e_recall_at_1.pth``."""
    return "checkpoint_best_" + metric.replace("@", "_at_").replace("/", "_") + ".pth"


def save(state: dict, path: str | Path) -> None:
    """Write atomically, so an interrupted or failed save (a full disk) never corrupts an earlier checkpoint."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """A checkpoint of this suite (tensors and plain values only: loaded with ``weights_only=True``); a file that
    is not one (truncated, another format, another program's pickle) is a one-line error naming it."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises several types for a file that is not a checkpoint
        raise UserError(f"cannot read checkpoint {path} ({type(err).__name__}); is it a checkpoint of this suite, "
                        "complete (not truncated)?") from None  # fmt: skip
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"{path} is not a checkpoint of this suite (no model state in it)")
    return state
