"""Cosine softmax with a learned temperature, a baseline of Scott et al. 2021 (vMF loss paper)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from criteria import register
from criteria._classifier import LogitClassifier
from criteria.vmf_softmax import TemperatureMixin


@register(
    "cosine_softmax",
    paper="Scott et al. 2021 (baseline): normalised (cosine) softmax with a learned temperature",
    flags="--learn_temp (default on) / --no_learn_temp, --init_temp, --temp_lr (shared with vmf_softmax)",
)
class CosineSoftmax(TemperatureMixin, LogitClassifier):
    """L = mean_i CE(beta cos(z_i, w_c), y_i), beta = exp(-temp), init exp(-init_temp), learned at --temp_lr
    (no momentum, no decay); class weights W [C, d] init N(0, 1/d), trained at --lr without decay.

    The temperature is learned by default (``flag_defaults``): the original's ``NormalizedSoftmaxCE``
    requires the architecture's learned ``temp`` (it asserts it exists, which needs ``learn_temp=True``).
    ``--no_learn_temp`` keeps it fixed.
    """

    flag_defaults = LogitClassifier.flag_defaults | {"learn_temp": True}

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        d = int(opt.embed_dim)
        self.class_weights = nn.Parameter(torch.randn(self.classes(), d) / math.sqrt(d))
        self._init_temp(opt)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        w = F.normalize(self.class_weights.to(embeddings.dtype), dim=1)
        return self.beta.to(embeddings.dtype) * (F.normalize(embeddings, dim=1) @ w.T)

    def param_groups(self) -> list[dict]:
        groups = [{"params": [self.class_weights], "lr": self.lr, "weight_decay": 0.0, "name": "cosine_weights"}]
        return groups + self.temp_group()

    def export(self) -> dict[str, np.ndarray]:
        return {"class_weights": self.class_weights.detach().cpu().numpy(),
                "temperature": self.beta.detach().cpu().numpy()}  # fmt: skip
