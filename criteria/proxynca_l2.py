"""Euclidean point-to-point proxy loss (ablation of Kirchhof et al. 2022)."""

from __future__ import annotations

import torch

from criteria import register
from criteria._nivmf import NivmfProxyCriterion, stretched
from criteria.proxyvmf_panc import PAPER


@register("proxynca_l2", paper=PAPER + " (ablation: negative squared L2)", flags="the proxyvmf_panc proxy flags")
class ProxyNcaL2(NivmfProxyCriterion):
    """sim(i, c) = -||e_i - m_c||^2 / T with the raw embedding e_i and the stretched proxy m_c = kappa_c * u_c.

    The family's shared parametrisation (per-dimension kappa_c). The original ``proxynca_l2`` uses the scalar
    weight-norm length g_c instead: -||e_i - g_c u_c||^2 / T; the two agree while kappa_c is constant (its init).
    """

    def similarities(self, embeddings, u, kappa, **kwargs):
        m, _ = stretched(u, kappa)
        return -torch.cdist(embeddings, m).pow(2) / self.temp
