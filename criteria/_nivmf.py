"""Shared proxy parametrisation of the EL-nivMF family (Kirchhof et al. 2022; docs/methods.md).

Every criterion of the family (``proxyvmf_panc``, ``proxyvmf``, ``proxyvmf_kl``, ``proxynca_nivmf``,
``proxynca_l2``, ``proxynca_cos``) owns, per class c:

* ``proxy_v[c]``: a raw direction parameter v_c; the loss only sees u_c = v_c / ||v_c|| (the original's weight
  normalisation). v_c starts with norm ``--loss_proxyvmf_concentration``; its norm is unused by the loss but sets
  the optimiser's angular step size.
* ``kappa[c]``: a per-dimension concentration vector kappa_c in R^d, initialised to ``concentration`` and clamped
  to >= 0.1 in the forward pass. Stretched mean m_c = kappa_c * u_c, r_c = ||m_c||.
* one learned temperature T (init ``--loss_proxyvmf_temp``).

Optimiser groups (no weight decay): v at lr x proxylrmulti, kappa at lr x conclrmulti, T at lr x templrmulti.
``prepare()`` multiplies the head's initial weight (``model.last_linear.weight``, not its bias, as the original)
by ``--loss_proxyvmf_init_norm_multiplier`` so embedding norms (= image concentrations) start large; then, with
``--loss_proxyvmf_warmstart``, the training loop hands ``warm_start`` the train embeddings (no augmentation) and
v_c becomes the normalised class mean times ``concentration``.

Isotropic members (``proxyvmf``, ``proxyvmf_kl``) read the proxy as vMF(m_c / r_c, r_c), the vMF with natural
parameter m_c (exactly vMF(u_c, kappa) when kappa_c is the constant vector kappa).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from criteria._base import Criterion
from criteria._classifier import with_default_metrics
from criteria._common import logsumexp_add_one
from utilities.errors import UserError
from utilities.flag_types import finite_float, fraction, non_negative_float, positive_float, positive_int
from utilities.vmf import log_vmf_norm

KAPPA_MIN = 0.1

# Uncertainty metrics every run of the family reports on top of the normal retrieval metrics:
# norm percentiles, AUROC of the norm for a correct cosine / Euclidean 1-NN, Spearman, the rejection-curve area and
# the neighbour-weighted label probability. ``unc_auroc_ppk`` (O(N^2) log-normalisers) stays opt-in.
UNCERTAINTY_METRICS = ("norms@5", "norms@50", "norms@95", "unc_auroc_cos", "unc_auroc_l2", "unc_spearman",
                       "unc_recall_area", "unc_nw_acc@10", "unc_nw_ll@10")  # fmt: skip


# The EL-nivMF code's defaults: the embedding norm is the vMF concentration, so the backbone must
# not L2-normalise (``resnet50_frozen``, not Roth's ``..._normalize``).
FAMILY_FLAG_DEFAULTS = {"arch": "resnet50_frozen", "bs": 64, "storage_metrics": ["c_recall@1"],
                        "evaluation_metrics": with_default_metrics(*UNCERTAINTY_METRICS)}  # fmt: skip


def add_proxyvmf_args(parser) -> None:
    a = parser.add_argument
    a(
        "--loss_proxyvmf_guidance_w",
        default=0.0,
        type=non_negative_float(),
        help="weight w of the ProxyAnchor guidance term on the proxy directions (proxyvmf_panc)",
    )
    a(
        "--loss_proxyvmf_proxylrmulti",
        default=5000.0,
        type=positive_float(),
        help="lr of the proxy directions = --lr x this",
    )
    a(
        "--loss_proxyvmf_conclrmulti",
        default=50000.0,
        type=positive_float(),
        help="lr of the per-dimension proxy concentrations = --lr x this",
    )
    a("--loss_proxyvmf_templrmulti", default=500.0, type=positive_float(), help="lr of the temperature = --lr x this")
    a(
        "--loss_proxyvmf_concentration",
        default=10.0,
        type=positive_float(),
        help="initial proxy concentration (every kappa_{c,j}) and initial norm of the raw direction v_c",
    )
    a(
        "--loss_proxyvmf_rho",
        default=1.0,
        type=positive_float(),
        help="order of the PPK in proxyvmf: 1 = expected likelihood (EL-vMF), 0.5 = Bhattacharyya (B-vMF)",
    )
    a(
        "--loss_proxyvmf_warmstart",
        action="store_true",
        help="initialise proxy directions to the normalised train-class mean embeddings (no augmentation)",
    )
    a("--loss_proxyvmf_temp", default=0.01, type=positive_float(), help="initial value of the learned temperature T")
    a("--loss_proxyvmf_n_samples", default=20, type=positive_int(), help="vMF samples S per image (proxyvmf_panc)")
    a(
        "--loss_proxyvmf_init_norm_multiplier",
        default=100.0,
        type=positive_float(),
        help="factor on the embedding head's initial weights, so embedding norms (concentrations) start large",
    )
    a("--loss_proxyvmf_subsample_p", default=1.0, type=fraction(low_open=True),
      help="< 1: per batch use the proxies of the batch's classes plus a random share of the others, "
           "int((p - U/C) (C - U)) negatives (U classes in the batch, C in total), as the original")  # fmt: skip


def add_oproxy_args(parser) -> None:
    a = parser.add_argument
    a("--loss_oproxy_pos_alpha", default=32.0, type=positive_float(), help="ProxyAnchor/NCA scale of the positive term")
    a("--loss_oproxy_neg_alpha", default=32.0, type=positive_float(), help="ProxyAnchor/NCA scale of the negative term")
    a(
        "--loss_oproxy_pos_delta",
        default=0.1,
        type=finite_float(),
        help="positive margin: exp(-pos_alpha (s - pos_delta))",
    )
    a(
        "--loss_oproxy_neg_delta",
        default=-0.1,
        type=finite_float(),
        help="negative margin: exp(neg_alpha (s - neg_delta))",
    )
    a(
        "--loss_oproxy_mode",
        default="anchor",
        choices=["anchor", "nca"],
        help="anchor: logsumexp over the batch per proxy (ProxyAnchor); nca: over proxies/positives per image",
    )
    a("--loss_oproxy_lrmulti", default=2000.0, type=positive_float(), help="lr of the oproxy proxies = --lr x this")


def oproxy_options(opt) -> dict:
    """Keyword arguments of ``oproxy_loss`` from the ``--loss_oproxy_*`` flags."""
    return dict(pos_alpha=float(opt.loss_oproxy_pos_alpha), neg_alpha=float(opt.loss_oproxy_neg_alpha),
                pos_delta=float(opt.loss_oproxy_pos_delta), neg_delta=float(opt.loss_oproxy_neg_delta),
                mode=opt.loss_oproxy_mode)  # fmt: skip


def oproxy_loss(cos_all: torch.Tensor, labels: torch.Tensor, pos_alpha: float, neg_alpha: float,
                pos_delta: float, neg_delta: float, mode: str = "anchor") -> torch.Tensor:  # fmt: skip
    """The original ``oproxy`` objective from cosines ``cos_all`` [B, C] of images to proxies.

    Positive term on s_{i, y_j} (image i to the proxy of item j, masked to y_i = y_j), negative term on s_{i,c}
    (masked to y_i != c). mode ``anchor`` (dim 0): pos = (1/B) sum_j log(1 + sum_{i: y_i=y_j} exp(-a+(s_{i,y_j} -
    d+))), neg = (1/C) sum_c log(1 + sum_{i: y_i!=c} exp(a-(s_{i,c} - d-))); mode ``nca`` (dim 1): the same sums
    taken per image i over j / c instead, both averaged over the batch.
    """
    dim = 0 if mode == "anchor" else 1
    same = labels[:, None] == labels[None, :]  # [B, B]
    diff = labels[:, None] != torch.arange(cos_all.shape[1], device=labels.device)[None, :]  # [B, C]
    pos_sims = cos_all[:, labels]  # [B, B]: s_{i, y_j}
    pos = logsumexp_add_one(-pos_alpha * (pos_sims - pos_delta), same, dim)
    neg = logsumexp_add_one(neg_alpha * (cos_all - neg_delta), diff, dim)
    return pos.mean() + neg.mean()


class NivmfProxyCriterion(Criterion):
    """Base of the family: proxies, concentrations, temperature, lr groups, warm start and NCA-style reduction.

    Subclasses implement ``similarities(embeddings, u, kappa) -> [B, C']`` (already divided by T); the loss is
    L = mean_i [ -sim(i, y_i) + logsumexp_c sim(i, c) ] over the (optionally subsampled) proxies.
    """

    norm_is_certainty = True  # the run ends with uncertainty plots of the test split

    # resnet50_frozen, bs 64, storage c_recall@1, evaluation = the default metrics + UNCERTAINTY_METRICS
    flag_defaults = FAMILY_FLAG_DEFAULTS

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.n_classes = self.classes()
        self.dim = int(opt.embed_dim)
        conc = float(opt.loss_proxyvmf_concentration)
        if conc <= 0:
            raise UserError(f"--loss_proxyvmf_concentration must be > 0, got {conc}")
        p = float(opt.loss_proxyvmf_subsample_p)
        if not 0 < p <= 1:
            raise UserError(f"--loss_proxyvmf_subsample_p must be in (0, 1], got {p}")
        self.concentration, self.subsample_p = conc, p
        self.proxy_v = nn.Parameter(F.normalize(torch.randn(self.n_classes, self.dim), dim=1) * conc)
        self.kappa = nn.Parameter(torch.full((self.n_classes, self.dim), conc))
        self.temp = nn.Parameter(torch.tensor(float(opt.loss_proxyvmf_temp)))
        self.lr_multipliers = (float(opt.loss_proxyvmf_proxylrmulti), float(opt.loss_proxyvmf_conclrmulti),
                               float(opt.loss_proxyvmf_templrmulti))  # fmt: skip
        self.init_norm_multiplier = float(opt.loss_proxyvmf_init_norm_multiplier)
        self.wants_warm_start = bool(opt.loss_proxyvmf_warmstart)

    # ------------------------------------------------------------------ parameters
    def directions(self) -> torch.Tensor:
        return F.normalize(self.proxy_v, dim=1)

    def concentrations(self) -> torch.Tensor:
        return self.kappa.clamp_min(KAPPA_MIN)

    def param_groups(self) -> list[dict]:
        groups = [
            {"params": [self.proxy_v], "lr": self.lr * self.lr_multipliers[0], "weight_decay": 0.0,
             "name": "proxyvmf_proxies"},
            {"params": [self.kappa], "lr": self.lr * self.lr_multipliers[1], "weight_decay": 0.0,
             "name": "proxyvmf_concentrations"},
            {"params": [self.temp], "lr": self.lr * self.lr_multipliers[2], "weight_decay": 0.0,
             "name": "proxyvmf_temperature"},
        ]  # fmt: skip
        return [g for g in groups if g["params"][0].requires_grad]

    @torch.no_grad()
    def prepare(self, model, loader, device) -> None:
        """Scale the head's initial weight by ``--loss_proxyvmf_init_norm_multiplier`` (the warm start, if asked
        for, follows with the train embeddings of the scaled network: ``warm_start``)."""
        head = getattr(model, "last_linear", None)
        if head is not None:
            head.weight.mul_(self.init_norm_multiplier)

    @torch.no_grad()
    def warm_start(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """v_c = normalise(mean of class c's embeddings) x concentration (classes absent keep their init)."""
        embeddings, labels = embeddings.float().to(self.proxy_v.device), labels.long().to(self.proxy_v.device)
        sums = torch.zeros_like(self.proxy_v).index_add_(0, labels, embeddings)
        counts = torch.bincount(labels, minlength=self.n_classes)
        present = counts > 0
        means = sums[present] / counts[present, None]
        self.proxy_v[present] = F.normalize(means, dim=1) * self.concentration

    # ------------------------------------------------------------------ loss
    def select_proxies(self, labels: torch.Tensor):
        """(class ids used [C'], labels remapped into them [B]); all classes unless --loss_proxyvmf_subsample_p < 1."""
        if self.subsample_p >= 1 or not self.training:
            return None, labels
        present = torch.unique(labels)
        n_pres, n_cls = len(present), self.n_classes
        is_neg = torch.ones(n_cls, dtype=torch.bool, device=labels.device)
        is_neg[present] = False
        negs = torch.nonzero(is_neg).flatten()
        n_take = max(0, int((self.subsample_p - n_pres / n_cls) * len(negs)))
        perm = torch.randperm(len(negs), device=labels.device)[:n_take]
        ids = torch.cat([present, negs[perm]])
        remap = torch.full((n_cls,), -1, dtype=torch.long, device=labels.device)
        remap[ids] = torch.arange(len(ids), device=labels.device)
        return ids, remap[labels]

    def similarities(self, embeddings, u, kappa, **kwargs) -> torch.Tensor:
        raise NotImplementedError

    def nca_loss(self, sims: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (-sims.gather(1, labels[:, None]).squeeze(1) + torch.logsumexp(sims, dim=1)).mean()

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, **kwargs) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=embeddings.device).long()
        u, kappa = self.directions(), self.concentrations()
        ids, target = self.select_proxies(labels)
        if ids is not None:
            u, kappa = u[ids], kappa[ids]
        sims = self.similarities(embeddings, u, kappa, **kwargs)
        return self.nca_loss(sims, target)

    # ------------------------------------------------------------------ outputs
    @torch.no_grad()
    def image_concentrations(self, embeddings: torch.Tensor) -> torch.Tensor:
        """kappa_i = ||e_i||: an image is vMF(e_i / ||e_i||, ||e_i||) (float64)."""
        return embeddings.detach().cpu().double().norm(dim=1)

    def diagnostics(self) -> dict[str, float]:
        return {"proxy_temperature": float(self.temp.detach()),
                "proxy_kappa_mean": float(self.concentrations().detach().mean())}  # fmt: skip

    def export(self) -> dict[str, np.ndarray]:
        return {
            "proxies": self.directions().detach().cpu().numpy(),
            "proxy_kappas": self.concentrations().detach().cpu().numpy(),
            "temperature": self.temp.detach().cpu().numpy(),
        }


def stretched(u: torch.Tensor, kappa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """m_c = kappa_c * u_c and r_c = ||m_c||."""
    m = kappa * u
    return m, torch.linalg.vector_norm(m, dim=1)


def nivmf_offset(kappa: torch.Tensor, r: torch.Tensor, d: int) -> torch.Tensor:
    """a_c = log C_d(r_c) + sum_j log kappa_{c,j} - log r_c, so l_c(z) = a_c + z^T m_c."""
    return log_vmf_norm(r, d) + torch.log(kappa).sum(dim=1) - torch.log(r)
