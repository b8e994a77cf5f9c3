"""EL-nivMF ProxyAnchor (Kirchhof et al. 2022): the paper's headline method (docs/methods.md)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from criteria import register
from criteria._nivmf import (
    NivmfProxyCriterion,
    add_proxyvmf_args,
    nivmf_offset,
    oproxy_loss,
    oproxy_options,
    stretched,
)
from utilities.errors import UserError
from utilities.vmf import sample_vmf

PAPER = "Kirchhof et al. 2022, A Non-isotropic Probabilistic Take on Proxy-based Deep Metric Learning"


def add_args(parser) -> None:
    add_proxyvmf_args(parser)


def nivmf_mc_similarities(samples: torch.Tensor, u: torch.Tensor, kappa: torch.Tensor, temp) -> torch.Tensor:
    """sim(i, c) = logsumexp_s(l_c(z_{s,i}) / T) - log S from samples [S, B, d]: ONE [S*B, d] x [d, C] matmul.

    l_c(z) = log C_d(r_c) + z^T m_c + sum_j log kappa_{c,j} - log r_c (nivMF log-density, m_c = kappa_c * u_c).
    Memory O(S*B*C) (the original loops over images and allocates S*C*d floats per image).
    """
    n_s, b, d = samples.shape
    m, r = stretched(u, kappa)
    a = nivmf_offset(kappa, r, d)  # [C]
    logl = torch.addmm(a[None, :], samples.reshape(n_s * b, d), m.T)  # [S*B, C]
    return torch.logsumexp(logl.reshape(n_s, b, -1) / temp, dim=0) - math.log(n_s)


@register("proxyvmf_panc", paper=PAPER,
          flags="--loss_proxyvmf_{guidance_w, proxylrmulti, conclrmulti, templrmulti, concentration, warmstart, "
                "temp, n_samples, init_norm_multiplier, subsample_p}, --loss_oproxy_{pos,neg}_{alpha,delta}, "
                "--loss_oproxy_mode")  # fmt: skip
class ProxyVmfPanc(NivmfProxyCriterion):
    """EL-nivMF + ProxyAnchor guidance.

    Image i -> vMF(mu_i = e_i/||e_i||, kappa_i = ||e_i||); class c -> nivMF(u_c, kappa_c in R^d) (``_nivmf``).
    S samples z_{s,i} ~ vMF(mu_i, kappa_i) (``utilities.vmf.sample_vmf``, pathwise gradients to mu_i and kappa_i);
    sim(i, c) = logsumexp_s(l_c(z_{s,i}) / T) - log S (Monte-Carlo tempered expected likelihood);
    L = mean_i[-sim(i, y_i) + logsumexp_c sim(i, c)] + w * oproxy(cos(e_i, u_c)), the guidance being the
    original's ProxyAnchor reduction (``_nivmf.oproxy_loss``: positives averaged over batch items, negatives over
    all C classes) with --loss_oproxy_* (alpha 32, delta +-0.1, mode anchor) on all proxies.
    ``forward(..., samples=[S, B, d])`` uses given unit samples instead of drawing (tests, benchmarks).
    """

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.n_samples = int(opt.loss_proxyvmf_n_samples)
        if self.n_samples < 1:
            raise UserError(f"--loss_proxyvmf_n_samples must be >= 1, got {self.n_samples}")
        self.guidance_w = float(opt.loss_proxyvmf_guidance_w)
        self.oproxy_kw = oproxy_options(opt)

    def draw_samples(self, embeddings: torch.Tensor) -> torch.Tensor:
        kappa_i = torch.linalg.vector_norm(embeddings, dim=1)
        return sample_vmf(F.normalize(embeddings, dim=1), kappa_i, self.n_samples)

    def similarities(self, embeddings, u, kappa, samples=None, **kwargs):
        if samples is None:
            samples = self.draw_samples(embeddings)
        return nivmf_mc_similarities(samples, u, kappa, self.temp)

    def forward(self, embeddings, labels, samples=None, **kwargs):
        labels = torch.as_tensor(labels, device=embeddings.device).long()
        loss = super().forward(embeddings, labels, samples=samples)
        if self.guidance_w:
            cos = F.normalize(embeddings, dim=1) @ self.directions().T
            loss = loss + self.guidance_w * oproxy_loss(cos, labels, **self.oproxy_kw)
        return loss
