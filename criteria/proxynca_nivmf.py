"""Distribution-to-point nivMF proxy loss (ablation of Kirchhof et al. 2022)."""

from __future__ import annotations

import torch.nn.functional as F

from criteria import register
from criteria._nivmf import NivmfProxyCriterion, nivmf_offset, stretched
from criteria.proxyvmf_panc import PAPER


@register("proxynca_nivmf", paper=PAPER + " (ablation: nivMF density at the image direction)",
          flags="the proxyvmf_panc proxy flags")  # fmt: skip
class ProxyNcaNivmf(NivmfProxyCriterion):
    """sim(i, c) = l_c(mu_i) / T: the nivMF proxy log-density at the image's direction (no image uncertainty),
    l_c(z) = log C_d(r_c) + z^T m_c + sum_j log kappa_{c,j} - log r_c; NCA loss over the sims.

    This is the paper's nivMF density (docs/methods.md), the one ``proxyvmf_panc`` integrates. (The original ``proxynca_nivmf`` evaluates
    normalise(kappa_c * mu_i)^T m_c instead of mu_i^T m_c, unlike its own ``proxyvmf_panc``.)
    """

    def similarities(self, embeddings, u, kappa, **kwargs):
        m, r = stretched(u, kappa)
        a = nivmf_offset(kappa, r, u.shape[1])
        return (a[None, :] + F.normalize(embeddings, dim=1) @ m.T) / self.temp
