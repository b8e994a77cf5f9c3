"""Standalone ProxyAnchor / ProxyNCA of the EL-nivMF code (``oproxy``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from criteria import register
from criteria._base import Criterion
from criteria._nivmf import add_oproxy_args, oproxy_loss


def add_args(parser) -> None:
    add_oproxy_args(parser)


@register("oproxy", paper="Kim et al. 2020 (ProxyAnchor) as in the code of Kirchhof et al. 2022",
          flags="--loss_oproxy_{pos_alpha, neg_alpha, pos_delta, neg_delta, mode, lrmulti}")  # fmt: skip
class OProxy(Criterion):
    """``_nivmf.oproxy_loss`` on cos(e_i, p_c) with its own proxies (randn / 8, as the original).

    mode ``anchor`` (default) is ProxyAnchor with the original's reduction (positive term averaged over batch items,
    negative over all classes; ``proxyanchor`` averages the positive term over present classes instead); mode
    ``nca`` reduces per image. Proxies train at --lr x --loss_oproxy_lrmulti without weight decay.
    """

    allowed_miners = ()
    default_miner = None

    def __init__(self, opt, batchminer=None):
        super().__init__(opt, batchminer)
        self.proxies = nn.Parameter(torch.randn(int(opt.n_classes), int(opt.embed_dim)) / 8)
        self.kw = dict(pos_alpha=float(opt.loss_oproxy_pos_alpha), neg_alpha=float(opt.loss_oproxy_neg_alpha),
                       pos_delta=float(opt.loss_oproxy_pos_delta), neg_delta=float(opt.loss_oproxy_neg_delta),
                       mode=opt.loss_oproxy_mode)  # fmt: skip

    def forward(self, embeddings, labels):
        labels = torch.as_tensor(labels, device=embeddings.device).long()
        cos = F.normalize(embeddings, dim=1) @ F.normalize(self.proxies, dim=1).T
        return oproxy_loss(cos, labels, **self.kw)

    def param_groups(self):
        return [{"params": [self.proxies], "lr": self.opt.lr * self.opt.loss_oproxy_lrmulti, "weight_decay": 0.0,
                 "name": "oproxy_proxies"}]  # fmt: skip

    def export(self):
        return {"proxies": self.proxies.detach().cpu().numpy()}
