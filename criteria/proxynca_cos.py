"""Cosine proxy loss with learned temperature (ablation of Kirchhof et al. 2022)."""

from __future__ import annotations

import torch.nn.functional as F

from criteria import register
from criteria._nivmf import NivmfProxyCriterion
from criteria.proxyvmf_panc import PAPER


@register("proxynca_cos", paper=PAPER + " (ablation: cosine)", flags="the proxyvmf_panc proxy flags")
class ProxyNcaCos(NivmfProxyCriterion):
    """sim(i, c) = cos(e_i, u_c) / T; NCA loss over the sims. kappa_c is unused, so it is frozen (no param group)."""

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.kappa.requires_grad_(False)

    def similarities(self, embeddings, u, kappa, **kwargs):
        return F.normalize(embeddings, dim=1) @ u.T / self.temp
