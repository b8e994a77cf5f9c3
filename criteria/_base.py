"""Base class of every criterion: the loss, its own parameters, and what it offers the metrics."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Criterion(nn.Module):
    """A loss ``L(embeddings [B, D], labels [B]) -> scalar``.

    Options are read once, in ``__init__``; facts of the run (``n_classes``, the number of train
    classes) are passed explicitly. Class attributes a subclass sets:

    * ``accepts``: the miner outputs it consumes (keys of ``batch_mining.OUTPUTS``, e.g. ``"triplet"``);
      empty: it takes no miner. Which miners fit follows from each miner's declared ``output``.
    * ``default_miner``: miner used when ``--batch_mining`` is not given (None: none).
    * ``flag_defaults``: values of unset flags when this loss is chosen (the method's original code defaults,
      e.g. its default ``--evaluation_metrics``); the dataset's defaults and explicit flags win over these.
    * ``norm_is_certainty``: the embedding norm is a concentration (probabilistic methods: uncertainty plots).
    * ``global_batch``: under DDP the loss (and its miner) runs on the batch gathered from all ranks, so that N
      processes train as one on the global batch (see ``utilities.distributed``). Every loss that compares
      samples within the batch needs it; a loss that is a mean of independent per-sample terms with no random
      draws may set False to run on each rank's slice (averaging the gradients is then exact, and cheaper).

    Metrics may read "views" of a split that only the loss can give (``metrics.VIEWS``): override
    ``class_probabilities``, ``embedding_samples``, ``poincare_points`` or ``image_concentrations``.
    """

    accepts: tuple[str, ...] = ()
    default_miner: str | None = None
    flag_defaults: dict = {}
    norm_is_certainty = False
    global_batch = True  # the safe default: exact for every loss, at the cost of N copies of the loss's forward

    def __init__(self, opt, batchminer=None, n_classes: int | None = None):
        super().__init__()
        self.batchminer = batchminer
        self.n_classes = n_classes
        self.lr = float(opt.lr)

    def classes(self) -> int:
        """The number of train classes; an error when the criterion was built without it."""
        if self.n_classes is None:
            raise ValueError(f"{type(self).__name__} needs the number of train classes: "
                             "criteria.select(name, opt, n_classes=C)")  # fmt: skip
        return int(self.n_classes)

    @classmethod
    def miner_margin(cls, opt) -> float:
        """The margin a margin-based miner (``semihard``) uses when serving this loss: the loss's own margin
        where it has one (subclasses override), else the triplet margin ``--loss_triplet_margin``."""
        return float(opt.loss_triplet_margin)

    def param_groups(self) -> list[dict]:
        """Optimiser param-group dicts for the criterion's own trainable parameters.

        Default: all of them in one group at ``--lr`` without weight decay.
        Subclasses with several learning rates override this.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return []
        return [{"params": params, "lr": self.lr, "weight_decay": 0.0, "name": "criterion"}]

    # Set by losses that initialise parameters from the train embeddings: after ``prepare`` the loop embeds the
    # training split (eval mode, no augmentation) and calls ``warm_start(embeddings, labels)``.
    wants_warm_start = False

    def prepare(self, model: nn.Module, loader, device: torch.device) -> None:
        """Hook run once before training (data-dependent scales); ``loader`` yields the train images without
        augmentation, in order."""

    def warm_start(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Initialise from the train embeddings [N, D] and labels [N] (only called when ``wants_warm_start``)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Hook run at the start of every epoch (warm-up schedules)."""

    def diagnostics(self) -> dict[str, float]:
        """Numbers of the loss's own state (learned temperature, mean proxy concentration, ...), logged with the
        training row of every epoch."""
        return {}

    # ------------------------------------------------------------------ views for the metrics (metrics.VIEWS)
    def class_probabilities(self, embeddings: torch.Tensor, generator=None) -> torch.Tensor | None:
        """[N, C] class probabilities of raw embeddings ``[N, D]`` (classifier losses), else None."""
        return None

    def embedding_samples(self, embeddings: torch.Tensor, n_sets: int, generator=None) -> torch.Tensor | None:
        """[n_sets, N, d] sampled embedding sets (probabilistic losses), else None."""
        return None

    def poincare_points(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, float] | None:
        """(points [N, d] on the loss's Poincare ball, curvature c) (hyperbolic losses), else None."""
        return None

    def image_concentrations(self, embeddings: torch.Tensor) -> torch.Tensor | None:
        """[N] per-image concentrations kappa (probabilistic losses), else None."""
        return None

    VIEW_METHODS = {"probabilities": "class_probabilities", "samples": "embedding_samples",
                    "poincare": "poincare_points", "kappa": "image_concentrations"}  # fmt: skip

    @classmethod
    def provides(cls, view: str) -> bool:
        """Whether this loss gives the view ``view`` (a key of ``metrics.VIEWS``)."""
        method = cls.VIEW_METHODS[view]
        return getattr(cls, method) is not getattr(Criterion, method)

    # ------------------------------------------------------------------ outputs
    def export(self) -> dict[str, np.ndarray]:
        """Arrays saved next to the final embeddings (class weights, temperature...)."""
        return {}

    def export_embeddings(self, embeddings: torch.Tensor) -> dict[str, np.ndarray]:
        """Per-image arrays saved next to a split's embeddings: ``kappa``, the concentration, where the loss has
        one (``image_concentrations``)."""
        kappa = self.image_concentrations(embeddings)
        return {} if kappa is None else {"kappa": kappa.float().numpy()}
