"""Hyperbolic softmax (Poincare ball MLR, Ganea et al. 2018), a baseline of Scott et al. 2021."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from criteria import register
from criteria._classifier import LogitClassifier
from criteria._vmf_eval import closed_set_eval, is_closed_set
from metrics._base import Context
from metrics.map_at_r import MAPatR
from metrics.recall import Recall
from utilities.errors import UserError

_MIN_NORM = 1e-15


def add_args(parser) -> None:
    parser.add_argument("--loss_hyperbolic_softmax_c", default=1e-5, type=float,
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


def poincare_neighbours(x: torch.Tensor, k: int, c: float, chunk: int | None = None) -> np.ndarray:
    """[N, k] indices of each ball point's k nearest others (self excluded) in the Poincare distance
    d(x, y) = 2/sqrt(c) artanh(sqrt(c) ||(-x) (+)_c y||), ranked by ||(-x) (+)_c y||^2 from the Gram matrix:
    with u = -x, v = y, ||(1 + 2c<u,v> + c||v||^2) u + (1 - c||u||^2) v||^2 / (1 + 2c<u,v> + c^2||u||^2||v||^2)^2."""
    x = x.double()
    n = len(x)
    chunk = chunk or max(1, (1 << 21) // max(n, 1))  # rows per block: a few [chunk, N] float64 temporaries, ~16 MB each
    sq = (x * x).sum(1)
    out = np.empty((n, k), dtype=np.int64)
    for s in range(0, n, chunk):
        xy = x[s : s + chunk] @ x.T  # [b, N]
        x2, y2 = sq[s : s + chunk, None], sq[None, :]
        a = 1 - 2 * c * xy + c * y2
        b = 1 - c * x2
        num = a * a * x2 - 2 * a * b * xy + b * b * y2
        den = 1 - 2 * c * xy + c * c * x2 * y2
        dist = num.clamp_min(0) / (den * den)
        dist[torch.arange(len(xy)), torch.arange(s, s + len(xy))] = math.inf
        out[s : s + chunk] = torch.topk(dist, k, dim=1, largest=False).indices.numpy()
    return out


def poincare_retrieval(x: torch.Tensor, labels, c: float) -> dict[str, float]:
    """``poincare_recall@1`` and ``poincare_map_at_r`` of ball points x (the suite's Recall@k / MAP@R conventions:
    self excluded, lone queries left out), the original's hyperbolic retrieval evaluation."""
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
    ctx = Context(x.float().numpy(), y)
    k = max(1, min(int(ctx.class_size.max()) - 1, len(y) - 1))
    ctx.neighbours["poincare"] = poincare_neighbours(x, k, c)
    return {
        "poincare_recall@1": Recall("poincare_recall@1", "poincare", 1)(ctx),
        "poincare_map_at_r": MAPatR("poincare_map_at_r", "poincare")(ctx),
    }


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

    ``evaluate``: accuracy / ECE on closed-set splits; on open-set (class-disjoint) splits the original's
    retrieval in the Poincare distance on the ball points, ``poincare_recall@1`` / ``poincare_map_at_r``
    (selectable with ``--storage_metrics``; the original selects on validation Recall@1 in that distance).
    """

    selectable_metrics = ("accuracy", "poincare_recall@1", "poincare_map_at_r")

    def __init__(self, opt, batchminer=None):
        super().__init__(opt, batchminer)
        d, n = int(opt.embed_dim), int(opt.n_classes)
        self.c = float(opt.loss_hyperbolic_softmax_c)
        self.riemannian = not getattr(opt, "loss_hyperbolic_softmax_euclidean_grad", False)
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

    def evaluate(self, embeddings: torch.Tensor, labels: torch.Tensor, split: str) -> dict[str, float]:
        if is_closed_set(self.opt, labels, split):
            return closed_set_eval(self, self.logits, embeddings, labels, split)
        with torch.no_grad():
            return poincare_retrieval(expmap0(embeddings.detach().cpu().double(), self.c), labels, self.c)

    def export(self) -> dict[str, np.ndarray]:
        p, a = self.class_params()
        return {"class_p": p.detach().cpu().numpy(), "class_a": a.detach().cpu().numpy()}
