"""Adversarial separation of sub-embeddings (Milbich, Roth et al. 2020, DiVA), as a standalone criterion."""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import criteria
from criteria import register
from criteria._base import Criterion
from criteria._common import TUPLE_OUTPUTS, zero_loss
from criteria._roth_utils import grad_reverse
from utilities.errors import UserError
from utilities.flag_types import non_negative_float, positive_float, positive_int


def add_args(parser) -> None:
    parser.add_argument(
        "--diva_decorrelations",
        default=["0-1"],
        nargs="+",
        type=str,
        help="directions 'i-j': a regressor predicts chunk j of the embedding from chunk i; the "
        "embedding is split into max index + 1 equal chunks",
    )
    parser.add_argument(
        "--diva_rho_decorrelation",
        default=[1500.0],
        nargs="+",
        type=non_negative_float(),
        help="weight per direction (one value applies to all)",
    )
    parser.add_argument("--diva_decorrnet_dim", default=512, type=positive_int(), help="hidden width of the regressors")
    parser.add_argument("--diva_decorrnet_lr", default=0.00001, type=positive_float(), help="learning rate of the regressors")
    parser.add_argument("--loss_adversarial_separation_base", default="margin", type=base_loss,
                        help="criterion trained on the full embedding next to the separation term: a triplet-based "
                        "or miner-free loss ('none': separation only)")  # fmt: skip


def base_loss(name: str) -> str:
    """argparse type of ``--loss_adversarial_separation_base``: 'none', or a loss that takes every miner
    adversarial_separation accepts (the triplet-based ones) or none; npair/lifted-based losses are refused
    here, at parse time, with one line (the parser turns the error into a ``UserError``)."""
    if name == "none":
        return name
    if name == "adversarial_separation":
        raise argparse.ArgumentTypeError("the base loss cannot be adversarial_separation itself")
    if name not in criteria.names():
        others = [n for n in criteria.names() if n != "adversarial_separation"]
        raise argparse.ArgumentTypeError(f"unknown loss '{name}'; choose none or one of: {', '.join(others)}")
    own = criteria.get_class(name).accepts
    if own and not set(AdversarialSeparation.accepts) <= set(own):
        raise argparse.ArgumentTypeError(
            f"base loss '{name}' needs --batch_mining {' or '.join(criteria.accepted_miners(name))}, which "
            "adversarial_separation cannot pass on; choose a triplet-based base (e.g. margin, triplet), a miner-free "
            "one (e.g. multisimilarity) or none"
        )
    return name


def parse_directions(directions: list[str]) -> list[tuple[int, int]]:
    out = []
    for d in directions:
        parts = d.split("-")
        if len(parts) != 2 or not all(p.isdigit() for p in parts) or parts[0] == parts[1]:
            raise UserError(
                f"--diva_decorrelations entry '{d}' is not 'i-j' with two different chunk indices, e.g. 0-1"
            )
        out.append((int(parts[0]), int(parts[1])))
    return out


@register(
    "adversarial_separation",
    paper="Milbich, Roth et al. 2020, DiVA: Diverse Visual Feature Aggregation for Deep Metric Learning",
    flags="--diva_decorrelations, --diva_rho_decorrelation, --diva_decorrnet_dim, --diva_decorrnet_lr, "
    "--loss_adversarial_separation_base",
)
class AdversarialSeparation(Criterion):
    """L = L_base(x) - sum_{(i->j)} rho_ij * mean_b mean_d ( z_j * normalize(r_ij(z_i)) )^2,
    z_i = normalize(GR(x^(i))),

    where x^(i) is the i-th of n equal chunks of the embedding, GR the gradient-reversal layer,
    r_ij a Linear-ReLU-Linear regressor (hidden ``--diva_decorrnet_dim``). The regressors
    minimise L, i.e. learn to predict chunk j from chunk i; through GR the embedding gets the
    opposite gradient and makes its chunks mutually unpredictable (decorrelated).

    The separation term is the Roth/DiVA suite's ``adversarial_separation`` with its flags. There
    it takes a dict of several heads' embeddings and cannot run as a main loss (a ``feature_dict``
    signature, and ``--diva_*`` flags missing from that parameter file); here the heads are chunks
    of the one embedding, and ``--loss_adversarial_separation_base`` (default: margin, DiVA's
    discriminative loss) trains the full embedding, with the miner passed to it when it takes one.
    The accepted miners are those of the triplet-based bases (outputs ``TRIPLET_OUTPUTS`` and the Roth
    suite's ``REGULARISING_OUTPUTS``, e.g. ``intra_random`` as DiVA's intra-class task), default
    ``distance``; a base that needs the npair or lifted miner is refused when the flags are parsed
    (see ``base_loss``). With a miner-free base (or 'none') the miner is built but not used.
    One weight in ``--diva_rho_decorrelation`` applies to every direction (the original zips the
    lists and silently drops unmatched directions). Regressors train at ``--diva_decorrnet_lr``
    without weight decay; the base criterion's own parameter groups are kept.
    """

    accepts = TUPLE_OUTPUTS  # those of every triplet-based base; see base_loss
    default_miner = "distance"

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.directions = parse_directions(list(opt.diva_decorrelations))
        weights = [float(w) for w in opt.diva_rho_decorrelation]
        if len(weights) == 1:
            weights = weights * len(self.directions)
        if len(weights) != len(self.directions):
            raise UserError(f"--diva_rho_decorrelation has {len(weights)} values for {len(self.directions)} "
                            "--diva_decorrelations; give one weight, or one per direction")  # fmt: skip
        self.weights = weights
        dim = int(opt.embed_dim)
        self.n_chunks = max(max(d) for d in self.directions) + 1
        if self.n_chunks > dim:
            raise UserError(f"--diva_decorrelations needs {self.n_chunks} chunks but --embed_dim is {dim}")
        sizes = [len(c) for c in torch.arange(dim).tensor_split(self.n_chunks)]
        hidden = int(opt.diva_decorrnet_dim)
        self.regressors = nn.ModuleDict(
            {
                f"{i}-{j}": nn.Sequential(nn.Linear(sizes[i], hidden), nn.ReLU(), nn.Linear(hidden, sizes[j]))
                for i, j in self.directions
            }
        )
        self.regressor_lr = float(opt.diva_decorrnet_lr)
        self.base = self._build_base(opt, batchminer, n_classes)

    @classmethod
    def miner_margin(cls, opt) -> float:
        """The base loss's margin (the triplet margin without a base)."""
        name = opt.loss_adversarial_separation_base
        return super().miner_margin(opt) if name == "none" else criteria.get_class(name).miner_margin(opt)

    @staticmethod
    def _build_base(opt, batchminer, n_classes) -> Criterion | None:
        name = opt.loss_adversarial_separation_base  # checked by its argparse type, ``base_loss``
        if name == "none":
            return None
        cls = criteria.get_class(name)
        return criteria.select(name, opt, batchminer if cls.accepts else None, n_classes=n_classes)

    def separation(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The adversarial separation term alone (gradient-reversed into ``embeddings``)."""
        chunks = [F.normalize(grad_reverse(c), dim=-1) for c in embeddings.tensor_split(self.n_chunks, dim=1)]
        loss = zero_loss(embeddings)
        for w, (i, j) in zip(self.weights, self.directions):
            pred = F.normalize(self.regressors[f"{i}-{j}"](chunks[i]), dim=-1)
            loss = loss - w * (chunks[j] * pred).pow(2).mean(dim=-1).mean()
        return loss

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, **tuples) -> torch.Tensor:
        loss = self.separation(embeddings)
        if self.base is not None:
            loss = loss + self.base(embeddings, labels, **tuples)
        return loss

    def param_groups(self) -> list[dict]:
        groups = self.base.param_groups() if self.base is not None else []
        return groups + [{"params": list(self.regressors.parameters()), "lr": self.regressor_lr, "weight_decay": 0.0,
                          "name": "adversarial_separation_regressors"}]  # fmt: skip

    def prepare(self, model, loader, device) -> None:
        if self.base is not None:
            self.base.prepare(model, loader, device)

    def on_epoch_start(self, epoch: int) -> None:
        if self.base is not None:
            self.base.on_epoch_start(epoch)

    def export(self) -> dict[str, np.ndarray]:
        return self.base.export() if self.base is not None else {}
