"""mnist through torchvision (never downloaded); see datasets._torchvision."""

from __future__ import annotations

from datasets import register
from datasets._torchvision import load_torchvision, torchvision_encoder

NAME = "mnist"
image_encoder = torchvision_encoder(NAME)


@register("mnist", paper="LeCun et al. 1998, Gradient-Based Learning Applied to Document Recognition",
          defaults={"arch": "mnist_cnn", "not_pretrained": True, "embed_dim": 32, "bs": 130, "samples_per_class": 13,
                    "n_epochs": 20, "lr": 1e-3, "kernels": 2, "tau": [1000]})  # fmt: skip
def load(opt) -> dict:
    return load_torchvision(NAME, opt)
