"""vMF softmax cross-entropy (Scott, Gallagher & Mozer, ICCV 2021); docs/methods.md."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from criteria import register
from criteria._base import Criterion
from criteria._classifier import CLASSIFIER_METRICS, with_default_metrics
from utilities.errors import UserError
from utilities.flag_types import finite_float, fraction, positive_float, positive_int
from utilities.vmf import log_vmf_mgf, sample_vmf, vmf_mean_resultant


def add_args(parser) -> None:
    parser.add_argument(
        "--loss_vmf_softmax_n_samples",
        default=10,
        type=positive_int(),
        help="vmf_softmax: reparameterised vMF samples S per example (loss and predictions)",
    )
    parser.add_argument(
        "--kappa_confidence",
        default=0.4,
        type=fraction(low_open=True, high_open=True),
        help="vmf_softmax: target initial mean resultant length r in (0, 1); sets the frozen scale "
        "s and the class-weight init N(0, sigma^2), sigma = r/(1-r^2)(d-1)/sqrt(d) (vmf_softmax only)",
    )
    parser.add_argument(
        "--learn_temp",
        action="store_true",
        help="vmf_softmax / cosine_softmax: learn the temperature beta = exp(-temp) (cosine_softmax: on by default)",
    )
    parser.add_argument("--no_learn_temp", dest="learn_temp", action="store_false",
                        help="keep the temperature fixed at exp(-init_temp) (undoes --learn_temp or a loss default)")  # fmt: skip
    parser.add_argument("--init_temp", default=0.0, type=finite_float(), help="initial temp (beta = exp(-temp))")
    parser.add_argument("--temp_lr", default=0.001, type=positive_float(),
                        help="learning rate of temp (own param group: no momentum, no weight decay)")  # fmt: skip


def kappa_sigma(r: float, d: int) -> float:
    """r / (1 - r^2) * (d - 1) / sqrt(d): per-coordinate scale giving a norm ~ kappa with A_d(kappa) ~ r."""
    if not 0.0 < r < 1.0:
        raise UserError(f"--kappa_confidence must lie in (0, 1), got {r}")
    return r / (1.0 - r * r) * (d - 1) / math.sqrt(d)


_NO_SHIFT_BETA = 20.0  # log_partition: exp(terms) with |terms| <= beta is safe in float32 up to here
PREPARE_BATCH = 256  # batch size of the original's scale estimate (its BatchNorm sees these batch statistics)


def _rebatch(loader, size: int):
    """Images of ``loader`` (first item of each batch) regrouped in order into batches of ``size``;
    the last batch takes the remainder, merged into the one before when it would hold one image
    (train-mode BatchNorm1d rejects a batch of one)."""
    pending, n = [], 0
    for batch in loader:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        pending.append(x)
        n += len(x)
        while n >= 2 * size:
            x = torch.cat(pending)
            yield x[:size]
            pending, n = [x[size:]], n - size
    if n:
        x = torch.cat(pending)
        if n > size and n - size >= 2:
            yield x[:size]
            yield x[size:]
        else:
            yield x


@torch.no_grad()
def mean_abs_coordinate(model: nn.Module, loader, device: torch.device, batch_size: int = PREPARE_BATCH) -> float:
    """m = mean over images and coordinates of |f(x)|, f in train mode (batch-statistics BatchNorm).

    Buffers (running statistics) and per-module train/eval flags are restored on exit; no gradients.
    """
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(mod, mod.training) for mod in model.modules()]
    model.train()
    total, count = 0.0, 0
    try:
        for images in _rebatch(loader, batch_size):
            if len(images) == 1:  # a one-image train set: no batch statistics exist
                model.eval()
            out = model(images.to(device)).float()
            total += out.abs().sum().item()
            count += out.numel()
    finally:
        for b, saved in buffers:
            b.copy_(saved)
        for mod, flag in modes:
            mod.training = flag
    return total / max(count, 1)


class TemperatureMixin:
    """beta = exp(-temp); temp a parameter with its own lr (``--learn_temp``) or a fixed buffer."""

    def _init_temp(self, opt) -> None:
        t = torch.tensor(float(opt.init_temp))
        if opt.learn_temp:
            self.temp = nn.Parameter(t)
        else:
            self.register_buffer("temp", t)
        self.temp_lr, self.temp_without_momentum = float(opt.temp_lr), opt.optim == "sgd"

    @property
    def beta(self) -> torch.Tensor:
        return torch.exp(-self.temp)

    def temp_group(self) -> list[dict]:
        if not isinstance(self.temp, nn.Parameter):
            return []
        group = {"params": [self.temp], "lr": self.temp_lr, "weight_decay": 0.0, "name": "temperature"}
        if self.temp_without_momentum:
            group.update(momentum=0.0, nesterov=False)
        return [group]


@register(
    "vmf_softmax",
    paper="Scott et al. 2021, von Mises-Fisher Loss: An Exploration of Embedding Geometries for Supervised Learning",
    flags="--loss_vmf_softmax_n_samples, --kappa_confidence, --learn_temp, --init_temp, --temp_lr",
)
class VMFSoftmax(TemperatureMixin, Criterion):
    """vMF softmax: embeddings and class weights are vMF distributions.

    Instance: z = s f(x), kappa_z = ||z||, mu_z = z / ||z||, with the scale s frozen in
    ``prepare`` (s = (1/m) r/(1-r^2) (d-1)/sqrt(d), m the mean |coordinate| of f(x) over the
    train set, r = --kappa_confidence). Class c: the free parameter w_c = kappa_c mu_c
    (init N(0, sigma^2), sigma = r/(1-r^2)(d-1)/sqrt(d)). Temperature beta = exp(-temp).

    Derivation. With unit z ~ vMF(mu_z, kappa_z) and unit class directions v_c ~ vMF(mu_c, kappa_c),
    the softmax likelihood is p(y | z, v) = exp(beta z^T v_y) / sum_c exp(beta z^T v_c). The paper
    minimises the negative log expected likelihood with the expectation over v taken in numerator
    and denominator separately (Jensen: -E log p <= this bound):

        L = E_z[ log sum_c E_v exp(beta z^T v_c) ] - E_{z,v}[ beta z^T v_y ].

    The vMF moment generating function gives E_v exp(beta z^T v_c) = C_d(kappa_c) / C_d(||w_c + beta z||)
    (the normaliser of the product density kappa_c mu_c + beta z); E z = A_d(kappa_z) mu_z,
    E v_y = A_d(kappa_y) mu_y and the numerator is linear, so its expectation is exact. The outer E_z
    is a Monte-Carlo mean over S reparameterised samples z_s:

        L = (1/S) sum_s logsumexp_c [log C_d(kappa_c) - log C_d(||w_c + beta z_s||)]
            - beta <A_d(kappa_z) mu_z, A_d(kappa_y) mu_y>,

    averaged over the batch, with the exact normaliser: the S*B*C differences log C_d(kappa_c) -
    log C_d(||w_c + beta z_s||) come from ``utilities.vmf.log_vmf_mgf`` (exact per-class interpolation of the log
    moment generating function, from ||w_c + beta z_s||^2 - kappa_c^2 = 2 beta z_s^T w_c + beta^2: one matmul), which
    also gives both A_d from the same exact pass. Pass unit ``samples`` [S, B, d] to ``forward`` to fix the draws
    (tests).
    """

    norm_is_certainty = True  # the run ends with uncertainty plots of the test split

    # The paper's metrics: accuracy / calibration (closed-set splits), sampled retrieval, mean concentration.
    flag_defaults = {"evaluation_metrics": with_default_metrics(*CLASSIFIER_METRICS, "vmf_recall@1", "vmf_map_at_r",
                                                                "vmf_mean_kappa")}  # fmt: skip

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.dim = int(opt.embed_dim)
        if self.dim < 2:
            raise UserError(f"vmf_softmax needs --embed_dim >= 2, got {self.dim}")
        self.n_samples = int(opt.loss_vmf_softmax_n_samples)
        if self.n_samples < 1:
            raise UserError(f"--loss_vmf_softmax_n_samples must be >= 1, got {self.n_samples}")
        self.r = float(opt.kappa_confidence)
        sigma = kappa_sigma(self.r, self.dim)
        self.class_weights = nn.Parameter(torch.randn(self.classes(), self.dim) * sigma)
        self.register_buffer("scale", torch.tensor(1.0))
        self._init_temp(opt)
        self.generator: torch.Generator | None = None

    # ----------------------------------------------------------------------------- set-up
    @torch.no_grad()
    def prepare(self, model: nn.Module, loader, device: torch.device) -> None:
        """Freeze s = (1/m) r/(1-r^2)(d-1)/sqrt(d), m = mean |f(x)_j| over the loader's images.

        As the original (``set_z_kappa_mult_vmf``: ``arch.train(True)``, batches of 256 in order), f(x)
        is computed in train mode, so BatchNorm normalises with each batch's statistics (layers the
        architecture keeps in eval mode, ``--set_bn_eval``, stay so). Unlike the original, every buffer
        (BatchNorm running statistics) and every module's train/eval flag is restored afterwards, so
        the estimate changes nothing else. See ``mean_abs_coordinate``.
        """
        m = mean_abs_coordinate(model, loader, device)
        if not m > 0:
            raise UserError("vmf_softmax: the network's initial embeddings are all zero; cannot set the scale")
        self.scale.fill_(kappa_sigma(self.r, self.dim) / m)

    def param_groups(self) -> list[dict]:
        groups = [{"params": [self.class_weights], "lr": self.lr, "weight_decay": 0.0, "name": "vmf_class_weights"}]
        return groups + self.temp_group()

    # ------------------------------------------------------------------------------ loss
    def instance(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu_z [B, d], kappa_z [B]) of z = s f(x)."""
        z = self.scale.to(embeddings.dtype) * embeddings
        kappa = z.norm(dim=1).clamp_min(1e-12)
        return z / kappa[:, None], kappa

    def log_partition(self, samples: torch.Tensor) -> torch.Tensor:
        """[S, B]: logsumexp_c [log C_d(kappa_c) - log C_d(||w_c + beta z_s||)] for unit samples z_s [S, B, d]."""
        w = self.class_weights.to(samples.dtype)
        return self._log_partition(samples, w, self.beta.to(samples.dtype), w.norm(dim=1) ** 2)

    def _log_partition(self, samples, w, beta, kappa_c_sq, mean_resultant_of=None):
        n_s, b, d = samples.shape
        flat = samples.reshape(n_s * b, d)
        # ||w_c + beta z_s||^2 - ||w_c||^2 = 2 beta z_s^T w_c + beta^2 (unit z_s): one matmul with beta^2 as its bias
        delta = torch.addmm((beta**2).reshape(1, 1), flat, (2 * beta) * w.T)  # [S*B, C]
        # log C_d(kappa_c) - log C_d(||w_c + beta z_s||), exact, without evaluating log C_d at all S*B*C norms
        terms = log_vmf_mgf(kappa_c_sq, delta, self.dim, mean_resultant_of)
        terms, a = terms if mean_resultant_of is not None else (terms, None)
        # logsumexp over the classes, written out so that its backward reuses the exponentials (torch.logsumexp's
        # backward recomputes them). |terms| <= beta (|d/dk log C_d| = A_d <= 1 and | ||w_c + beta z|| - ||w_c|| |
        # <= beta), so for beta <= 20 the exponentials neither overflow nor underflow without a shift; beyond that
        # the row maximum (a constant for autograd: it cancels exactly) is subtracted first.
        if float(beta.detach()) <= _NO_SHIFT_BETA:
            lse = torch.log(torch.exp(terms).sum(dim=1))
        else:
            m = terms.detach().amax(dim=1, keepdim=True)
            lse = torch.log(torch.exp(terms - m).sum(dim=1)) + m.squeeze(1)
        return lse.reshape(n_s, b) if a is None else (lse.reshape(n_s, b), a)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, samples: torch.Tensor | None = None):
        labels = torch.as_tensor(labels, device=embeddings.device).long()
        mu, kappa = self.instance(embeddings)
        if samples is None:
            samples = sample_vmf(mu, kappa, self.n_samples, generator=self.generator)  # [S, B, d]
        w = self.class_weights.to(embeddings.dtype)
        beta = self.beta.to(embeddings.dtype)
        w_y = w[labels]  # [B, d]
        kappa_y = w_y.norm(dim=1)
        b = kappa.shape[0]
        both = torch.cat([kappa, kappa_y])  # A_d(kappa_z) and A_d(kappa_y), from the normaliser's own exact pass
        if samples.dtype == embeddings.dtype:
            log_part, a = self._log_partition(samples, w, beta, (w * w).sum(1), both)
        else:
            log_part, a = self.log_partition(samples), vmf_mean_resultant(both, self.dim)
        # beta <A_d(kappa_z) mu_z, A_d(kappa_y) mu_y>, mu_y = w_y / kappa_y
        numerator = beta * a[:b] * a[b:] * (mu * w_y).sum(1) / kappa_y.clamp_min(1e-12)
        return (log_part.mean(dim=0) - numerator).mean()

    # ------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict_proba(self, embeddings: torch.Tensor, n_samples: int | None = None, generator=None) -> torch.Tensor:
        """mean_s softmax(beta z_s^T v_s): S samples of z and S independent samples of each class direction."""
        n = n_samples or self.n_samples
        dev = self.class_weights.device
        mu, kappa = self.instance(embeddings.to(dev).float())
        w = self.class_weights.float()
        kappa_c = w.norm(dim=1).clamp_min(1e-12)
        zs = sample_vmf(mu, kappa, n, generator=generator)  # [S, N, d]
        vs = sample_vmf(w / kappa_c[:, None], kappa_c, n, generator=generator)  # [S, C, d]
        logits = self.beta.float() * torch.einsum("snd,scd->snc", zs, vs)
        return torch.softmax(logits.double(), dim=2).mean(dim=0)

    def class_probabilities(self, embeddings: torch.Tensor, generator=None) -> torch.Tensor:
        """The sampled prediction ``predict_proba`` (S = ``--loss_vmf_softmax_n_samples``)."""
        return self.predict_proba(embeddings, generator=generator)

    @torch.no_grad()
    def embedding_samples(self, embeddings: torch.Tensor, n_sets: int, generator=None) -> torch.Tensor:
        """[n_sets, N, d] draws z ~ vMF(mu_z, kappa_z), one per image and set (CPU)."""
        mu, kappa = self.instance(embeddings.to(self.class_weights.device).float())
        return sample_vmf(mu, kappa, n_sets, generator=generator).cpu()

    @torch.no_grad()
    def image_concentrations(self, embeddings: torch.Tensor) -> torch.Tensor:
        """kappa = ||s f(x)|| per image, in float64."""
        return float(self.scale) * embeddings.detach().cpu().double().norm(dim=1)

    def export(self) -> dict[str, np.ndarray]:
        """Scale, class weights, class concentrations ``class_kappa`` = ||w_c|| and the temperature beta."""
        w = self.class_weights.detach().cpu()
        return {
            "vmf_scale": self.scale.detach().cpu().numpy(),
            "class_weights": w.numpy(),
            "class_kappa": w.double().norm(dim=1).float().numpy(),
            "temperature": self.beta.detach().cpu().numpy(),
        }
