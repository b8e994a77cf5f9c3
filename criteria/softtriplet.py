"""SoftTriple loss (Qian et al. 2019)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from criteria import register
from criteria._base import Criterion
from utilities.errors import UserError
from utilities.flag_types import non_negative_float, positive_float, positive_int

REG_EPS = 1e-5  # inside sqrt(2 - 2 cos): keeps the gradient finite for coinciding centres (the reference code's value)


def add_args(parser) -> None:
    parser.add_argument("--loss_softtriplet_n_centroids", default=2, type=positive_int(), help="centres K per class")
    parser.add_argument(
        "--loss_softtriplet_margin_delta", default=0.01, type=non_negative_float(), help="margin delta on the target class"
    )
    parser.add_argument(
        "--loss_softtriplet_gamma",
        default=0.1,
        type=positive_float(),
        help="entropy weight gamma: centre weights are softmax(cos / gamma) within a class",
    )
    parser.add_argument("--loss_softtriplet_lambda", default=8.0, type=positive_float(), help="scale lambda of the class logits")
    parser.add_argument(
        "--loss_softtriplet_reg_weight", default=0.2, type=non_negative_float(), help="weight tau of the centre-merging regulariser"
    )
    parser.add_argument("--loss_softtriplet_lrmulti", default=1.0, type=positive_float(),
                        help="learning rate of the centres = --lr times this")  # fmt: skip


@register(
    "softtriplet",
    paper="Qian et al. 2019, SoftTriple Loss: Deep Metric Learning Without Triplet Sampling",
    flags="--loss_softtriplet_n_centroids, --loss_softtriplet_margin_delta, --loss_softtriplet_gamma, "
    "--loss_softtriplet_lambda, --loss_softtriplet_reg_weight, --loss_softtriplet_lrmulti",
)
class SoftTriplet(Criterion):
    """With K unit centres w_c^k per class and cosines s_ik = x_i^T w_c^k:

        S_ic = sum_k softmax_k(s_ick / gamma) s_ick                    (over the K centres of class c)
        L    = mean_i CE(lambda (S_i - delta e_{y_i}), y_i) + tau R,
        R    = sum_c sum_{k < k'} sqrt(2 + 1e-5 - 2 w_c^k^T w_c^k') / (C K (K - 1))

    as in the paper (eqs. 7, 10, 12) and its reference code. The Roth suite multiplies by gamma
    instead of dividing, takes the softmax over classes instead of over a class's centres and
    normalises the centre matrix along the wrong axis: bugs, not reproduced (the flag keeps its
    name and default 0.1, now meaning the paper's gamma). Embeddings are L2-normalised inside.
    Centres: a ``[embed_dim, n_classes * K]`` parameter (class-major columns), init uniform in
    +-1/sqrt(C K), trained at ``--lr`` x ``--loss_softtriplet_lrmulti`` without weight decay (the
    Roth code reads a missing ``loss_softtriplet_lr`` flag). Takes no miner.
    """

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.n_classes = self.classes()
        self.n_centroids = int(opt.loss_softtriplet_n_centroids)
        if self.n_centroids < 1 or float(opt.loss_softtriplet_gamma) <= 0:
            raise UserError("--loss_softtriplet_n_centroids must be >= 1 and --loss_softtriplet_gamma > 0")
        self.margin_delta = float(opt.loss_softtriplet_margin_delta)
        self.gamma = float(opt.loss_softtriplet_gamma)
        self.lam = float(opt.loss_softtriplet_lambda)
        self.reg_weight = float(opt.loss_softtriplet_reg_weight)
        self.centroid_lr = float(opt.lr) * float(opt.loss_softtriplet_lrmulti)
        n = self.n_classes * self.n_centroids
        self.intra_class_centroids = nn.Parameter(
            torch.empty(int(opt.embed_dim), n).uniform_(-1 / math.sqrt(n), 1 / math.sqrt(n))
        )

    def class_similarities(self, embeddings: torch.Tensor) -> torch.Tensor:
        """S ``[B, C]``: the soft-max-weighted cosine to each class's centres."""
        w = F.normalize(self.intra_class_centroids.to(embeddings.dtype), dim=0)
        # Columns reordered centre-major ([D, K, C]) so the softmax over a class's K centres runs over a middle
        # dimension: PyTorch's CPU softmax over a short last dimension is several times slower.
        w = w.reshape(-1, self.n_classes, self.n_centroids).transpose(1, 2).reshape(w.shape[0], -1)
        sims = (F.normalize(embeddings, dim=1) @ w).reshape(len(embeddings), self.n_centroids, self.n_classes)
        return (torch.softmax(sims / self.gamma, dim=1) * sims).sum(dim=1)

    def regulariser(self, dtype: torch.dtype) -> torch.Tensor:
        """R over the centre pairs of each class, from per-class K x K Gram matrices (no CK x CK matrix)."""
        k = self.n_centroids
        w = F.normalize(self.intra_class_centroids.to(dtype), dim=0).reshape(-1, self.n_classes, k)  # [D, C, K]
        if k < 2:
            return w.sum() * 0.0
        gram = torch.einsum("dck,dcl->ckl", w, w)
        i, j = torch.triu_indices(k, k, offset=1, device=w.device)
        return torch.sqrt(2 + REG_EPS - 2 * gram[:, i, j]).sum() / (self.n_classes * k * (k - 1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=embeddings.device).long()
        sims = self.class_similarities(embeddings)
        logits = sims - self.margin_delta * F.one_hot(labels, self.n_classes).to(sims.dtype)
        loss = F.cross_entropy(self.lam * logits, labels)
        if self.reg_weight:
            loss = loss + self.reg_weight * self.regulariser(embeddings.dtype)
        return loss

    def param_groups(self) -> list[dict]:
        return [{"params": [self.intra_class_centroids], "lr": self.centroid_lr, "weight_decay": 0.0,
                 "name": "softtriplet_centroids"}]  # fmt: skip

    def export(self) -> dict[str, np.ndarray]:
        return {"centroids": self.intra_class_centroids.detach().cpu().numpy().T}
