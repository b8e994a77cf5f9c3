"""Proxy-Anchor loss (Kim et al. 2020)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from criteria import register
from criteria._base import Criterion
from criteria._common import logsumexp_add_one
from utilities.flag_types import finite_float, positive_float


def add_args(parser) -> None:
    parser.add_argument("--loss_proxyanchor_alpha", default=32.0, type=positive_float(), help="scale alpha of the similarities")
    parser.add_argument("--loss_proxyanchor_delta", default=0.1, type=finite_float(), help="margin delta")
    parser.add_argument("--loss_proxyanchor_lrmulti", default=100.0, type=positive_float(),
                        help="learning rate of the proxies = --lr times this (100 in the original code)")  # fmt: skip


@register(
    "proxyanchor",
    paper="Kim et al. 2020, Proxy Anchor Loss for Deep Metric Learning",
    flags="--loss_proxyanchor_alpha, --loss_proxyanchor_delta, --loss_proxyanchor_lrmulti",
)
class ProxyAnchor(Criterion):
    """With s(x, p) the cosine similarity, P+ the proxies of classes present in the batch:

        L = 1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x, p) - delta)))
          + 1/|P|  sum_{p in P}  log(1 + sum_{x in X_p-} exp( alpha (s(x, p) + delta)))

    Embeddings and proxies are L2-normalised inside (cosine), so any architecture works.
    One proxy per class (``n_classes`` x ``--embed_dim``), initialised with
    kaiming-normal (fan_out) and trained at ``--lr`` x ``--loss_proxyanchor_lrmulti`` with
    the backbone's weight decay, as in the original code. Takes no batch miner.
    """

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.n_classes = self.classes()
        self.alpha = float(opt.loss_proxyanchor_alpha)
        self.delta = float(opt.loss_proxyanchor_delta)
        self.proxy_lr = float(opt.lr) * float(opt.loss_proxyanchor_lrmulti)
        self.weight_decay = float(opt.decay)
        self.proxies = nn.Parameter(torch.empty(self.n_classes, int(opt.embed_dim)))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=embeddings.device).long()
        cos = F.normalize(embeddings, dim=1) @ F.normalize(self.proxies.to(embeddings.dtype), dim=1).T  # [B, C]
        pos = F.one_hot(labels, self.n_classes).bool()
        pos_term = logsumexp_add_one(-self.alpha * (cos - self.delta), pos, dim=0)  # [C]; 0 for absent classes
        neg_term = logsumexp_add_one(self.alpha * (cos + self.delta), ~pos, dim=0)
        n_present = pos.any(dim=0).sum().clamp_min(1)
        return pos_term.sum() / n_present + neg_term.sum() / self.n_classes

    def param_groups(self) -> list[dict]:
        return [
            {
                "params": [self.proxies],
                "lr": self.proxy_lr,
                "weight_decay": self.weight_decay,
                "name": "proxyanchor_proxies",
            }
        ]

    def export(self) -> dict[str, np.ndarray]:
        return {"proxies": self.proxies.detach().cpu().numpy()}
