"""MNIST / FashionMNIST / CIFAR10 / CIFAR100 through torchvision, never downloading.

Files are expected under ``<source_path>/<name>/`` exactly where torchvision's
``download=True`` puts them (e.g. ``<source_path>/mnist/MNIST/raw/train-images-idx3-ubyte``,
``<source_path>/cifar10/cifar-10-batches-py/data_batch_1``). Images stay in memory at
native resolution (uint8); the official train set trains and the official test set tests
(same classes: labels shared). Train-time augmentation: none for the MNIST-likes, random
crop (padding 4) and horizontal flip for CIFAR.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torchvision import datasets as tv_datasets
from torchvision import transforms

from datasets._base import TensorImageDataset, tensor_image_encoder
from datasets._splits import assemble
from utilities.errors import UserError

SPECS = {
    "mnist": dict(cls="MNIST", mean=(0.1307,), std=(0.3081,), crop=False,
                  files="MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"),
    "fashion_mnist": dict(cls="FashionMNIST", mean=(0.2860,), std=(0.3530,), crop=False,
                          files="FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"),
    "cifar10": dict(cls="CIFAR10", mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), crop=True,
                    files="cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}"),
    "cifar100": dict(cls="CIFAR100", mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), crop=True,
                     files="cifar-100-python/{train,test,meta}"),
}  # fmt: skip


def read_split(name: str, root: str, train: bool):
    spec = SPECS[name]
    try:
        return getattr(tv_datasets, spec["cls"])(root, train=train, download=False)
    except RuntimeError as err:
        raise UserError(
            f"{name} not found (or corrupted) in {root}: expected {os.path.join(root, spec['files'])} (as written by torchvision's "
            f"{spec['cls']}(root='{root}', download=True) on a machine with network)"
        ) from err


def torchvision_encoder(name: str):
    """``image_encoder(opt, input_shape)`` of dataset ``name``: grey or RGB at the stored size, normalised with the
    dataset's mean / std."""

    def image_encoder(opt, input_shape: tuple[int, ...]):
        return tensor_image_encoder(SPECS[name]["mean"], SPECS[name]["std"], input_shape)

    return image_encoder


def as_tensor(images) -> torch.Tensor:
    """MNIST ``[N, H, W]`` tensors and CIFAR ``[N, H, W, 3]`` arrays -> uint8 ``[N, C, H, W]``."""
    x = torch.as_tensor(np.asarray(images))
    return x.unsqueeze(1).contiguous() if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


def load_torchvision(name: str, opt) -> dict:
    spec = SPECS[name]
    root = os.path.join(opt.source_path, name)
    train, test = read_split(name, root, True), read_split(name, root, False)
    train_x, test_x = as_tensor(train.data), as_tensor(test.data)
    train_y, test_y = np.asarray(train.targets, dtype=np.int64), np.asarray(test.targets, dtype=np.int64)
    size = train_x.shape[-1]
    normalize = transforms.Normalize(spec["mean"], spec["std"])
    augment = spec["crop"] and opt.augmentation != "none"
    train_tf = transforms.Compose([transforms.RandomCrop(size, padding=4), transforms.RandomHorizontalFlip(), normalize]
                                  if augment else [normalize])  # fmt: skip
    images = torch.cat([train_x, test_x])
    offset = len(train_x)

    def make(items, labels, is_train: bool, names):
        return TensorImageDataset(images, labels, train_tf if is_train else normalize, names, indices=items)

    return assemble(np.arange(offset), train_y, np.arange(len(test_x)) + offset, test_y, list(train.classes), make,
                    opt, classification=True)  # fmt: skip
