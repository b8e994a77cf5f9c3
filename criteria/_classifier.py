"""Base of the softmax classifiers (the vMF paper's baselines): CE over ``logits``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import metrics
from criteria._base import Criterion

# Every classifier reports its accuracy and calibration on closed-set splits by default (the vMF paper's protocol).
CLASSIFIER_METRICS = ("accuracy", "ece", "ece_rms")


def with_default_metrics(*extra: str) -> list[str]:
    """The suite's default ``--evaluation_metrics`` followed by a loss's own."""
    return list(metrics.DEFAULT_EVALUATION_METRICS) + list(extra)


class LogitClassifier(Criterion):
    """L = mean_i CE(logits(z_i), y_i); the class probabilities softmax(logits) feed ``accuracy`` / ECE.

    Subclasses implement ``logits(embeddings) -> [B, C]`` (the prediction logits) and may
    override ``forward`` when training logits differ (ArcFace's margin).
    """

    flag_defaults = {"evaluation_metrics": with_default_metrics(*CLASSIFIER_METRICS)}

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=embeddings.device).long()
        return F.cross_entropy(self.logits(embeddings), labels)

    @torch.no_grad()
    def class_probabilities(self, embeddings: torch.Tensor, generator=None) -> torch.Tensor:
        """softmax(logits) in float64, computed where the class parameters live."""
        dev = next(iter(self.parameters())).device
        return torch.softmax(self.logits(embeddings.to(dev).float()).double(), dim=1)
