"""Closed-form PPK proxy loss (EL-vMF / B-vMF ablation of Kirchhof et al. 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from criteria import register
from criteria._nivmf import NivmfProxyCriterion, stretched
from criteria.proxyvmf_panc import PAPER
from utilities.vmf import log_ppk_vmf


@register("proxyvmf", paper=PAPER + " (ablation: closed-form log PPK)",
          flags="--loss_proxyvmf_rho and the proxyvmf_panc proxy flags")  # fmt: skip
class ProxyVmf(NivmfProxyCriterion):
    """sim(i, c) = log PPK_rho(vMF(mu_i, ||e_i||), vMF(m_c / r_c, r_c)) / T, closed form (``utilities.vmf``).

    rho = 1 (``--loss_proxyvmf_rho`` default here) is EL-vMF, rho = 0.5 B-vMF (the original code's default).
    The proxy is the isotropic vMF with natural parameter m_c = kappa_c * u_c. NCA loss over the sims.
    """

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.rho = float(opt.loss_proxyvmf_rho)

    def similarities(self, embeddings, u, kappa, **kwargs):
        m, r = stretched(u, kappa)
        k_i = torch.linalg.vector_norm(embeddings, dim=1)
        mu_i = F.normalize(embeddings, dim=1)
        ppk = log_ppk_vmf(mu_i[:, None, :], k_i[:, None], (m / r[:, None])[None], r[None, :],
                          self.rho)  # fmt: skip
        return ppk / self.temp
