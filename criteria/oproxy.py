"""Standalone ProxyAnchor / ProxyNCA of the EL-nivMF code (``oproxy``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from criteria import register
from criteria._base import Criterion
from criteria._nivmf import add_oproxy_args, oproxy_loss, oproxy_options


def add_args(parser) -> None:
    add_oproxy_args(parser)


@register("oproxy", paper="Kim et al. 2020 (ProxyAnchor) as in the code of Kirchhof et al. 2022",
          flags="--loss_oproxy_{pos_alpha, neg_alpha, pos_delta, neg_delta, mode, lrmulti}")  # fmt: skip
class OProxy(Criterion):
    """``_nivmf.oproxy_loss`` on cos(e_i, p_c): the EL-nivMF code's ``criteria/oproxy.py``.

    With w+(i, j) = exp(-pos_alpha (cos(e_i, p_{y_j}) - pos_delta)) over same-label pairs and
    w-(i, c) = exp(neg_alpha (cos(e_i, p_c) - neg_delta)) over c != y_i:

    * mode ``anchor`` (default, ProxyAnchor): (1/B) sum_j log(1 + sum_{i: y_i = y_j} w+) +
      (1/C) sum_c log(1 + sum_{i: y_i != c} w-). The positive term averages over batch ITEMS (a class weighs by its
      count in the batch), as the original; ``proxyanchor`` and pytorch-metric-learning average over the present
      classes instead (the two agree when every present class has the same count, e.g. --samples_per_class batches).
    * mode ``nca``: the same sums taken per image, (1/B) sum_i log(1 + sum_{j: y_j = y_i} w+) +
      (1/B) sum_i log(1 + sum_{c != y_i} w-).

    Proxies: the original's own parametrisation, kept on purpose: a plain [C, d] parameter initialised randn / 8
    (its direction is all the loss sees), trained at --lr x --loss_oproxy_lrmulti (2000) without weight decay. It is
    a standalone baseline, so it does NOT share the EL-nivMF family's weight-normalised directions, concentrations
    and --loss_proxyvmf_* learning rates (proxyvmf_panc's guidance term does use those). The original's unused or
    experimental switches (--loss_oproxy_euclidean, _unique, _detach_proxies, _proxy_div, _init_dev) are not
    offered.
    """

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.proxies = nn.Parameter(torch.randn(self.classes(), int(opt.embed_dim)) / 8)
        self.kw = oproxy_options(opt)
        self.proxy_lr = self.lr * float(opt.loss_oproxy_lrmulti)

    def forward(self, embeddings, labels):
        labels = torch.as_tensor(labels, device=embeddings.device).long()
        cos = F.normalize(embeddings, dim=1) @ F.normalize(self.proxies, dim=1).T
        return oproxy_loss(cos, labels, **self.kw)

    def param_groups(self):
        return [{"params": [self.proxies], "lr": self.proxy_lr, "weight_decay": 0.0,
                 "name": "oproxy_proxies"}]  # fmt: skip

    def export(self):
        return {"proxies": self.proxies.detach().cpu().numpy()}
