"""Euclidean point-to-point proxy loss (ablation of Kirchhof et al. 2022)."""

from __future__ import annotations

import torch

from criteria import register
from criteria._nivmf import NivmfProxyCriterion, stretched
from criteria.proxyvmf_panc import PAPER


@register("proxynca_l2", paper=PAPER + " (ablation: negative squared L2)", flags="the proxyvmf_panc proxy flags")
class ProxyNcaL2(NivmfProxyCriterion):
    """sim(i, c) = -||e_i - m_c||^2 / T with the raw embedding e_i and the stretched proxy m_c = kappa_c * u_c."""

    def similarities(self, embeddings, u, kappa, **kwargs):
        m, _ = stretched(u, kappa)
        return -torch.cdist(embeddings, m).pow(2) / self.temp
