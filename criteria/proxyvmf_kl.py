"""KL proxy loss (ablation of Kirchhof et al. 2022), with the sign that makes the true class closest."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from criteria import register
from criteria._nivmf import NivmfProxyCriterion, stretched
from criteria.proxyvmf_panc import PAPER
from utilities.vmf import log_vmf_norm, vmf_mean_resultant


def kl_vmf(mu1, k1, mu2, k2) -> torch.Tensor:
    """KL(vMF(mu1, k1) || vMF(mu2, k2)) = log C(k1) - log C(k2) + A(k1) (k1 - k2 mu1^T mu2) (exact A_d, C_d)."""
    d = mu1.shape[-1]
    a1 = vmf_mean_resultant(k1, d)
    return log_vmf_norm(k1, d) - log_vmf_norm(k2, d) + a1 * (k1 - k2 * (mu1 * mu2).sum(-1))


@register("proxyvmf_kl", paper=PAPER + " (ablation: KL divergence)", flags="the proxyvmf_panc proxy flags")
class ProxyVmfKL(NivmfProxyCriterion):
    """sim(i, c) = -KL(vMF(mu_i, ||e_i||) || vMF(m_c / r_c, r_c)) / T; NCA loss over the sims.

    The original code uses +KL / T (so the loss pulls images AWAY from their own proxy) and approximates
    A(k1) k1 by k1 and log C_d by a quadratic fit; here the sign is fixed and both are exact.
    """

    def similarities(self, embeddings, u, kappa, **kwargs):
        m, r = stretched(u, kappa)
        k_i = torch.linalg.vector_norm(embeddings, dim=1)
        mu_i = F.normalize(embeddings, dim=1)
        kl = kl_vmf(mu_i[:, None, :], k_i[:, None], (m / r[:, None])[None], r[None, :])
        return -kl / self.temp
