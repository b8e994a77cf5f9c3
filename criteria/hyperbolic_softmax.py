"""Hyperbolic softmax (Poincare ball MLR, Ganea et al. 2018), a baseline of Scott et al. 2021."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from criteria import register
from criteria._classifier import CLASSIFIER_METRICS, LogitClassifier, with_default_metrics
from utilities.errors import UserError
from utilities.flag_types import positive_float

_MIN_NORM = 1e-15


def add_args(parser) -> None:
    parser.add_argument("--loss_hyperbolic_softmax_c", default=1e-5, type=positive_float(),
                        help="hyperbolic_softmax: Poincare ball curvature c (vMF paper: 1e-5)")  # fmt: skip
    parser.add_argument("--loss_hyperbolic_softmax_euclidean_grad", action="store_true",
                        help="hyperbolic_softmax: plain gradient at the ball point instead of the original's "
                             "Riemannian rescaling by (1 - c||x||^2)^2 / 4")  # fmt: skip


def project(x: torch.Tensor, c: float) -> torch.Tensor:
    """Keep points strictly inside the ball: norm <= (1 - eps) / sqrt(c), eps 4e-3 (float32) / 1e-5 (float64),
    as hyptorch (otherwise tanh saturates to the boundary, where 1 - c ||x||^2 = 0)."""
    eps = 1e-5 if x.dtype == torch.float64 else 4e-3
    max_norm = (1 - eps) / math.sqrt(c)
    norm = x.norm(dim=-1, keepdim=True).clamp_min(_MIN_NORM)
    return torch.where(norm > max_norm, x / norm * max_norm, x)


def expmap0(u: torch.Tensor, c: float) -> torch.Tensor:
    """exp_0^c(u) = tanh(sqrt(c) ||u||) u / (sqrt(c) ||u||), projected inside the ball."""
    sc = math.sqrt(c)
    norm = u.norm(dim=-1, keepdim=True).clamp_min(_MIN_NORM)
    return project(torch.tanh(sc * norm) * u / (sc * norm), c)


class RiemannianGradient(torch.autograd.Function):
    """Identity forward; backward rescales the gradient at the ball point x by (1 - c ||x||^2)^2 / 4,
    the inverse squared conformal factor 1 / lambda_x^2 (hyptorch's ``RiemannianGradient``, applied by
    the vMF paper's ``ToPoincare(c)``, whose ``riemannian`` defaults to True)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, c: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.c = c
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * (1 - ctx.c * x.pow(2).sum(-1, keepdim=True)).pow(2) / 4, None


def to_poincare(z: torch.Tensor, c: float, riemannian: bool = True) -> torch.Tensor:
    """Ball point x = project(exp_0^c(z)); with ``riemannian`` the backward pass rescales as ``RiemannianGradient``."""
    x = expmap0(z, c)
    return RiemannianGradient.apply(x, c) if riemannian else x


def mobius_add(u: torch.Tensor, v: torch.Tensor, c: float) -> torch.Tensor:
    """u (+)_c v = ((1 + 2c<u,v> + c||v||^2) u + (1 - c||u||^2) v) / (1 + 2c<u,v> + c^2 ||u||^2 ||v||^2)."""
    uv = (u * v).sum(-1, keepdim=True)
    u2 = (u * u).sum(-1, keepdim=True)
    v2 = (v * v).sum(-1, keepdim=True)
    num = (1 + 2 * c * uv + c * v2) * u + (1 - c * u2) * v
    return num / (1 + 2 * c * uv + c * c * u2 * v2).clamp_min(_MIN_NORM)


def hyperbolic_mlr_logits(x: torch.Tensor, p: torch.Tensor, a: torch.Tensor, c: float) -> torch.Tensor:
    """Ganea et al. 2018, eq. 25: for x [N, d] in the ball, p [C, d] in the ball, a [C, d] tangent at p,

    logit_k(x) = lambda_{p_k} ||a_k|| / sqrt(c) * asinh( 2 sqrt(c) <m_k, a_k> / ((1 - c ||m_k||^2) ||a_k||) ),
    m_k = (-p_k) (+)_c x, lambda_p = 2 / (1 - c ||p||^2).
    """
    sc = math.sqrt(c)
    m = mobius_add(-p[None, :, :], x[:, None, :], c)  # [N, C, d]
    a_norm = a.norm(dim=-1).clamp_min(_MIN_NORM)  # [C]
    lam = 2.0 / (1 - c * (p * p).sum(-1))  # [C]
    inner = (m * a[None]).sum(-1)  # [N, C]
    m2 = (m * m).sum(-1)
    arg = 2 * sc * inner / ((1 - c * m2) * a_norm[None])
    return lam[None] * a_norm[None] / sc * torch.asinh(arg)


@register(
    "hyperbolic_softmax",
    paper="Scott et al. 2021 (baseline): hyperbolic multinomial logistic regression (Ganea et al. 2018)",
    flags="--loss_hyperbolic_softmax_c, --loss_hyperbolic_softmax_euclidean_grad",
)
class HyperbolicSoftmax(LogitClassifier):
    """CE over hyperbolic MLR logits on the Poincare ball of curvature c (``--loss_hyperbolic_softmax_c``).

    The embedding is mapped into the ball by x = exp_0^c(z), with the original's Riemannian gradient
    (``RiemannianGradient``: the gradient reaching x is scaled by (1 - c||x||^2)^2 / 4, about 1/4 at
    c = 1e-5; ``--loss_hyperbolic_softmax_euclidean_grad`` turns it off). Class k has a Euclidean parameter
    p'_k with p_k = exp_0^c(p'_k) and a tangent vector a'_k at the origin, transported to p_k as
    a_k = (1 - c ||p_k||^2) a'_k (the hyptorch ``HyperbolicMLR`` used by the vMF paper's code);
    logits follow ``hyperbolic_mlr_logits``. Parameters init N(0, 1/d)-ish (a) and zero-mean small (p),
    trained at --lr without weight decay.

    Metrics: accuracy / ECE on closed-set splits (``class_probabilities``) and, by default, the original's
    retrieval in the Poincare distance on the ball points x = exp_0^c(z) (``poincare_points``):
    ``poincare_recall@1`` / ``poincare_map_at_r`` (the original selects on validation Recall@1 in that distance).
    """

    flag_defaults = {
        "evaluation_metrics": with_default_metrics(*CLASSIFIER_METRICS, "poincare_recall@1", "poincare_map_at_r")
    }

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        d, n = int(opt.embed_dim), self.classes()
        self.c = float(opt.loss_hyperbolic_softmax_c)
        self.riemannian = not opt.loss_hyperbolic_softmax_euclidean_grad
        if not self.c > 0:
            raise UserError(f"--loss_hyperbolic_softmax_c must be > 0, got {self.c}")
        bound = 1 / math.sqrt(d)
        self.a_vals = nn.Parameter(torch.empty(n, d).uniform_(-bound, bound))
        self.p_vals = nn.Parameter(torch.empty(n, d).uniform_(-bound, bound))

    def class_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        p = expmap0(self.p_vals, self.c)
        a = self.a_vals * (1 - self.c * (p * p).sum(-1, keepdim=True))
        return p, a

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        p, a = self.class_params()
        x = to_poincare(embeddings, self.c, self.riemannian)
        return hyperbolic_mlr_logits(x, p.to(embeddings.dtype), a.to(embeddings.dtype), self.c)

    def poincare_points(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Ball points exp_0^c(z) in float64 (the original evaluates its hyperbolic retrieval on them)."""
        return expmap0(embeddings.detach().cpu().double(), self.c), self.c

    def export(self) -> dict[str, np.ndarray]:
        p, a = self.class_params()
        return {"class_p": p.detach().cpu().numpy(), "class_a": a.detach().cpu().numpy()}
