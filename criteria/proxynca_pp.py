"""ProxyNCA++-style ProxyNCA of the EL-nivMF code (positive proxy included, scale flag)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from criteria import register
from criteria._base import Criterion


@register("proxynca_pp", paper="Teh et al. 2020, ProxyNCA++ (NCA softmax, positive proxy included)",
          flags="--loss_proxynca_scale, --loss_proxynca_lrmulti")  # fmt: skip
class ProxyNcaPP(Criterion):
    """x = s e/||e||, p_c = s v_c/||v_c|| (s = --loss_proxynca_scale, 3):
    L = mean_i [ ||x_i - p_{y_i}||^2 + logsumexp_c(-||x_i - p_c||^2) ].

    The positive proxy is INCLUDED in the denominator: the NCA softmax of ProxyNCA++ (Teh et al. 2020, squared
    distances of normalised vectors, s^2 = 1/T) and pytorch-metric-learning's ProxyNCALoss (softmax_scale = s^2).
    The Roth-suite ``proxynca`` excludes it. (The EL-nivMF code's registered ``proxynca`` is the excluding form with
    the scale flag, which ``proxynca`` honours; its unregistered ``proxynca_v2`` includes the positive but on
    unsquared distances.) Proxies init randn / 8, trained at --lr x --loss_proxynca_lrmulti without weight decay.
    """

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.scale = float(opt.loss_proxynca_scale)
        self.proxy_lr = self.lr * float(opt.loss_proxynca_lrmulti)
        self.proxies = nn.Parameter(torch.randn(self.classes(), int(opt.embed_dim)) / 8)

    def forward(self, embeddings, labels):
        labels = torch.as_tensor(labels, device=embeddings.device).long()
        x = self.scale * F.normalize(embeddings, dim=1)
        p = self.scale * F.normalize(self.proxies, dim=1)
        d2 = (x.pow(2).sum(1, keepdim=True) + p.pow(2).sum(1)[None] - 2 * x @ p.T).clamp_min(0)
        return (d2.gather(1, labels[:, None]).squeeze(1) + torch.logsumexp(-d2, dim=1)).mean()

    def param_groups(self):
        return [{"params": [self.proxies], "lr": self.proxy_lr, "weight_decay": 0.0,
                 "name": "proxynca_pp_proxies"}]  # fmt: skip

    def export(self) -> dict[str, np.ndarray]:
        return {"proxies": self.proxies.detach().cpu().numpy()}
