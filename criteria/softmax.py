"""Normalised softmax / NormFace (Wang et al. 2017; Zhai & Wu 2019 for DML)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from criteria import register
from criteria._base import Criterion
from utilities.flag_types import positive_float


def add_args(parser) -> None:
    parser.add_argument("--loss_softmax_lr", default=0.00001, type=positive_float(), help="learning rate of the class weights")
    parser.add_argument("--loss_softmax_temperature", default=0.05, type=positive_float(), help="softmax temperature T")


@register(
    "softmax",
    paper="Wang et al. 2017, NormFace; Zhai & Wu 2019, Classification is a Strong Baseline for Deep Metric Learning",
    flags="--loss_softmax_lr, --loss_softmax_temperature",
)
class Softmax(Criterion):
    """L = mean_i CE(cos(x_i, w_c) / T, y_i): cross-entropy over cosine logits.

    Embeddings and class weights are L2-normalised inside (the Roth suite normalises only
    the weights and relies on a ``_normalize`` architecture; the two agree there). Class
    weights ``[n_classes, embed_dim]`` start uniform in +-1/sqrt(embed_dim), as in the
    Roth suite, and train at ``--loss_softmax_lr`` without weight decay. Takes no miner.
    """

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.temperature = float(opt.loss_softmax_temperature)
        self.class_lr = float(opt.loss_softmax_lr)
        dim = int(opt.embed_dim)
        self.class_map = nn.Parameter(
            torch.empty(self.classes(), dim).uniform_(-1 / math.sqrt(dim), 1 / math.sqrt(dim))
        )

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        w = F.normalize(self.class_map.to(embeddings.dtype), dim=1)
        return F.normalize(embeddings, dim=1) @ w.T / self.temperature

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=embeddings.device).long()
        return F.cross_entropy(self.logits(embeddings), labels)

    def param_groups(self) -> list[dict]:
        return [{"params": [self.class_map], "lr": self.class_lr, "weight_decay": 0.0, "name": "softmax_class_map"}]

    def export(self) -> dict[str, np.ndarray]:
        return {"class_weights": self.class_map.detach().cpu().numpy()}
