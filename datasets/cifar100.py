"""cifar100 through torchvision (never downloaded); see datasets._torchvision."""

from __future__ import annotations

from datasets import register
from datasets._torchvision import load_torchvision, torchvision_encoder

NAME = "cifar100"
image_encoder = torchvision_encoder(NAME)


@register("cifar100", paper="Krizhevsky 2009, Learning Multiple Layers of Features from Tiny Images",
          defaults={"arch": "resnet50", "not_pretrained": True, "first_conv_3x3": True, "embed_dim": 128, "bs": 128,
                    "samples_per_class": 4, "n_epochs": 100, "lr": 1e-3, "kernels": 4, "tau": [1000]})  # fmt: skip
def load(opt) -> dict:
    return load_torchvision(NAME, opt)
