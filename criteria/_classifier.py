"""Base of the softmax classifiers (the vMF paper's baselines): CE over ``logits``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from criteria._base import Criterion
from criteria._vmf_eval import closed_set_eval


class LogitClassifier(Criterion):
    """L = mean_i CE(logits(z_i), y_i); ``evaluate`` gives accuracy / ECE on closed-set splits.

    Subclasses implement ``logits(embeddings) -> [B, C]`` (the prediction logits) and may
    override ``forward`` when training logits differ (ArcFace's margin).
    """

    selectable_metrics = ("accuracy",)
    allowed_miners = ()
    default_miner = None

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=embeddings.device).long()
        return F.cross_entropy(self.logits(embeddings), labels)

    def evaluate(self, embeddings: torch.Tensor, labels: torch.Tensor, split: str) -> dict[str, float]:
        return closed_set_eval(self, self.logits, embeddings, labels, split)
