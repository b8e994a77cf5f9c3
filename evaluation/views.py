"""The views a trained loss offers the metrics of one split (``metrics.VIEWS``).

A criterion gives them through small methods (``criteria._base.Criterion``):
``class_probabilities``, ``embedding_samples``, ``poincare_points`` and
``image_concentrations``; each returns None where the loss has no such view.
``loss_views`` turns them into the provider ``compute_metrics(..., views=)`` calls.
"""

from __future__ import annotations

import itertools

import torch

from metrics.vmf_sampled import SAMPLED_SETS


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module's parameters (or buffers) live; the CPU for a module without any."""
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


class LossViews:
    """Provider ``views(name) -> value | None`` of a criterion on one split's raw ``embeddings`` [N, D].

    ``closed_set``: whether the split's classes are the train classes (a fact of the dataset,
    ``split.closed_set``); only then are class probabilities given. ``seed`` seeds ONE generator
    on the criterion's device, shared by every sampled view in ``metrics.VIEWS`` order, so a
    split's sampled metrics are reproducible. ``available(name)`` says, without computing it,
    whether the view exists (what ``compute_metrics`` asks of a diverged run's embeddings).
    """

    def __init__(self, criterion, embeddings: torch.Tensor, closed_set: bool, seed: int):
        self.criterion, self.embeddings, self.closed_set = criterion, embeddings, closed_set
        self.generator = torch.Generator(device=module_device(criterion)).manual_seed(int(seed))

    def available(self, name: str) -> bool:
        return type(self.criterion).provides(name) and (name != "probabilities" or self.closed_set)

    @torch.no_grad()
    def __call__(self, name: str):
        criterion, emb = self.criterion, self.embeddings
        if not self.available(name):
            return None
        if name == "probabilities":
            return criterion.class_probabilities(emb, generator=self.generator)
        if name == "samples":
            return criterion.embedding_samples(emb, SAMPLED_SETS, generator=self.generator)
        if name == "poincare":
            return criterion.poincare_points(emb)
        return criterion.image_concentrations(emb)


def loss_views(criterion, embeddings: torch.Tensor, closed_set: bool, seed: int) -> LossViews:
    """The views ``criterion`` gives the metrics of one split (see ``LossViews``)."""
    return LossViews(criterion, embeddings, closed_set, seed)
