"""ArcFace: additive angular margin softmax (Deng et al. 2019)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from criteria import register
from criteria._classifier import LogitClassifier
from utilities.flag_types import Number, non_negative_int, positive_float

_EPS = 1e-7  # keeps acos' gradient finite at cos = +-1


def add_args(parser) -> None:
    parser.add_argument("--loss_arcface_lr", default=0.0005, type=positive_float(), help="learning rate of the class weights")
    parser.add_argument(
        "--loss_arcface_angular_margin", default=0.5, type=Number(float, low=0, high=3.141592653589793), help="additive angular margin m (radians)"
    )
    parser.add_argument(
        "--loss_arcface_feature_scale", default=16.0, type=positive_float(), help="logit scale s (inverse temperature)"
    )
    parser.add_argument(
        "--loss_arcface_learn_scale", action="store_true",
        help="learn the logit scale s (as log s, at --temp_lr, no momentum or decay), as the vMF paper's baseline",
    )  # fmt: skip
    parser.add_argument(
        "--loss_arcface_warmup_epochs", default=0, type=non_negative_int(),
        help="margin 0 for the first N epochs (vMF paper: 20 (Fashion)MNIST, 60 CIFAR10, 100 CIFAR100)",
    )  # fmt: skip


@register(
    "arcface",
    paper="Deng et al. 2019, ArcFace: Additive Angular Margin Loss for Deep Face Recognition",
    flags="--loss_arcface_lr, --loss_arcface_angular_margin, --loss_arcface_feature_scale, "
    "--loss_arcface_learn_scale, --loss_arcface_warmup_epochs",
)
class ArcFace(LogitClassifier):
    """L = mean_i CE(s * [cos(theta_{i,y_i} + m) for the target, cos(theta_{ij}) otherwise], y_i).

    theta_ij is the angle between x_i and class weight w_j (both L2-normalised inside).
    Follows the paper's pseudocode: the margin enters the target logit only. The Roth suite
    clamps every cosine to [1e-10, 1 - 1e-10] (killing the gradient of negative cosines)
    and adds the target's margin shift to all logits; both are bugs and not reproduced.
    Class weights ``[n_classes, embed_dim]`` start uniform in +-1/sqrt(embed_dim) and train
    at ``--loss_arcface_lr`` without weight decay. Takes no miner.
    Warm-up (vMF paper): the margin is 0 during epochs 1..``--loss_arcface_warmup_epochs``
    (set in ``on_epoch_start``). With ``--loss_arcface_learn_scale`` s = exp(log_s) is learned
    (init ``--loss_arcface_feature_scale``, lr ``--temp_lr``), as in the vMF paper. ``evaluate`` gives accuracy / ECE of softmax(s cos) on closed-set splits.
    """

    def __init__(self, opt, batchminer=None, n_classes=None):
        super().__init__(opt, batchminer, n_classes)
        self.margin = float(opt.loss_arcface_angular_margin)
        self.warmup_epochs = int(opt.loss_arcface_warmup_epochs)
        self.current_margin = 0.0 if self.warmup_epochs > 0 else self.margin
        log_scale = torch.tensor(math.log(float(opt.loss_arcface_feature_scale)), dtype=torch.float64)
        if opt.loss_arcface_learn_scale:
            self.log_scale = nn.Parameter(log_scale)
            self.scale_lr = float(opt.temp_lr)
        else:
            self.register_buffer("log_scale", log_scale)
        self.class_lr = float(opt.loss_arcface_lr)
        dim = int(opt.embed_dim)
        self.class_map = nn.Parameter(
            torch.empty(self.classes(), dim).uniform_(-1 / math.sqrt(dim), 1 / math.sqrt(dim))
        )

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=embeddings.device).long()
        w = F.normalize(self.class_map.to(embeddings.dtype), dim=1)
        cos = F.normalize(embeddings, dim=1) @ w.T  # [B, C]
        target = labels[:, None]  # gather / scatter: a fifth of the step's loss time less than a one-hot mask
        theta_y = torch.acos(cos.gather(1, target).clamp(-1 + _EPS, 1 - _EPS))
        logits = cos.scatter(1, target, torch.cos(theta_y + self.current_margin))
        return F.cross_entropy(self.scale.to(logits.dtype) * logits, labels)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def on_epoch_start(self, epoch: int) -> None:
        self.current_margin = 0.0 if epoch <= self.warmup_epochs else self.margin

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Margin-free prediction logits s cos(theta)."""
        w = F.normalize(self.class_map.to(embeddings.dtype), dim=1)
        return self.scale.to(embeddings.dtype) * (F.normalize(embeddings, dim=1) @ w.T)

    def param_groups(self) -> list[dict]:
        groups = [{"params": [self.class_map], "lr": self.class_lr, "weight_decay": 0.0, "name": "arcface_class_map"}]
        if isinstance(self.log_scale, nn.Parameter):
            groups.append({"params": [self.log_scale], "lr": self.scale_lr, "weight_decay": 0.0, "momentum": 0.0,
                           "name": "arcface_scale"})  # fmt: skip
        return groups

    def export(self) -> dict[str, np.ndarray]:
        return {"class_weights": self.class_map.detach().cpu().numpy(), "scale": self.scale.detach().cpu().numpy()}
