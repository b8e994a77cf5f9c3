"""Cosine proxy loss with learned temperature (ablation of Kirchhof et al. 2022)."""

from __future__ import annotations

import torch.nn.functional as F

from criteria import register
from criteria._nivmf import NivmfProxyCriterion
from criteria.proxyvmf_panc import PAPER


@register("proxynca_cos", paper=PAPER + " (ablation: cosine)", flags="the proxyvmf_panc proxy flags")
class ProxyNcaCos(NivmfProxyCriterion):
    """sim(i, c) = cos(e_i, u_c) / T (kappa_c unused); NCA loss over the sims."""

    def similarities(self, embeddings, u, kappa, **kwargs):
        return F.normalize(embeddings, dim=1) @ u.T / self.temp
