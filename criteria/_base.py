"""Base class of every criterion."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Criterion(nn.Module):
    """A loss ``L(embeddings [B, D], labels [B]) -> scalar``.

    Class attributes a subclass sets:

    * ``allowed_miners``: miner names it accepts (empty: it takes no miner).
    * ``selectable_metrics``: its own ``evaluate`` metrics usable in ``--storage_metrics``.
    * ``default_miner``: miner used when ``--batch_mining`` is not given (None: none).
    * ``lr_flag``: name of the ``opt`` attribute holding the learning rate of the
      criterion's own parameters (None: the backbone ``--lr``).
    """

    allowed_miners: tuple[str, ...] = ()
    default_miner: str | None = None
    # Names returned by ``evaluate`` that may drive checkpoints, ReduceLROnPlateau and early
    # stopping (``--storage_metrics``); higher must be better.
    selectable_metrics: tuple[str, ...] = ()
    # Values of unset flags when this loss is chosen (the method's original code defaults);
    # the dataset's defaults and explicit flags win over these.
    flag_defaults: dict = {}
    norm_is_certainty = False  # the embedding norm is a concentration (probabilistic methods)

    def __init__(self, opt, batchminer=None):
        super().__init__()
        self.opt = opt
        self.batchminer = batchminer

    def param_groups(self) -> list[dict]:
        """Optimiser param-group dicts for the criterion's own trainable parameters.

        Default: all of them in one group at ``--lr`` without weight decay.
        Subclasses with several learning rates override this.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return []
        return [{"params": params, "lr": self.opt.lr, "weight_decay": 0.0, "name": "criterion"}]

    def prepare(self, model: nn.Module, loader, device: torch.device) -> None:
        """Hook run once before training (warm starts, data-dependent scales)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Hook run at the start of every epoch (warm-up schedules)."""

    def evaluate(self, embeddings: torch.Tensor, labels: torch.Tensor, split: str) -> dict[str, float]:
        """Method-specific metrics of one evaluated split (sampled retrieval, accuracy, ECE, ...).

        ``embeddings`` are the raw network outputs ``[N, D]`` (float32, CPU); the
        trainer merges the returned values with ``evaluation.compute_metrics``'s.
        """
        return {}

    def export(self) -> dict[str, np.ndarray]:
        """Arrays saved next to the final embeddings (class weights, temperature...)."""
        return {}
