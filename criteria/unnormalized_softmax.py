"""Unnormalised softmax cross-entropy, a baseline of Scott et al. 2021 (vMF loss paper)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from criteria import register
from criteria._classifier import LogitClassifier


@register(
    "unnormalized_softmax",
    paper="Scott et al. 2021 (baseline): softmax cross-entropy with logits z W^T, no bias, no normalisation",
    flags="(uses --lr for the class weights)",
)
class UnnormalizedSoftmax(LogitClassifier):
    """L = mean_i CE(z_i W^T, y_i); W [C, d] bias-free, init N(0, 1/d), trained at --lr without decay."""

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        d = int(opt.embed_dim)
        self.class_weights = nn.Parameter(torch.randn(self.classes(), d) / math.sqrt(d))

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings @ self.class_weights.to(embeddings.dtype).T

    def export(self) -> dict[str, np.ndarray]:
        return {"class_weights": self.class_weights.detach().cpu().numpy()}
