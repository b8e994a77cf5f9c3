"""Dataset classes and transforms shared by every loader.

Each split yields ``(image_tensor, label_int, index_int)`` and exposes ``labels`` (numpy
int array), ``class_names`` (``class_names[label]``), ``closed_set`` (True when its classes
are the train classes, with the train labels), ``query`` / ``gallery`` (None, or boolean masks where the split is
evaluated query -> gallery) and ``raw_image(i)`` (the untransformed
PIL image, for image grids); file-based splits also expose ``image_paths``. With ``--decode_cache`` the
file-based splits are ``datasets._cache.CachedImageDataset``: the same attributes and images, read from a
decode cache; its training split yields uint8 images that the training loop normalises on the device.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms

from utilities.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# pretrainedmodels' BN-Inception: BGR, 0-255, minus (104, 117, 128). Normalise in RGB order with
# (R, G, B) means 128, 117, 104 and std 1/255, then flip channels (the Roth suite's convention).
BNINCEPTION_MEAN, BNINCEPTION_STD = (128 / 255, 117 / 255, 104 / 255), (1 / 255, 1 / 255, 1 / 255)


def uses_bninception(opt) -> bool:
    return "bninception" in str(opt.arch)


class ToBGR:
    """Reverse the channel order (RGB -> BGR) of a ``[3, H, W]`` tensor."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(0)

    def __repr__(self) -> str:
        return "ToBGR()"


def image_transforms(opt, train: bool) -> Callable:
    """Roth et al. 2020 transforms for photo datasets (``--augmentation``, s = ``--image_size``, 224).

    test: Resize(round(s*256/224)) + CenterCrop(s). train: ``base`` RandomResizedCrop(s) +
    RandomHorizontalFlip; ``big`` the same at s*256/224 (test crop too); ``adv``
    adds RandomGrayscale(0.2) + ColorJitter(0.2, 0.2, 0.2, 0.2); ``red`` Resize(s*256/224) +
    RandomCrop(s) + flip; ``none`` trains on the test transforms. ImageNet mean/std, or the
    BGR 0-255 convention for ``bninception`` archs.
    """
    mode = opt.augmentation
    size = int(opt.image_size)
    resize = round(size * 256 / 224)
    if mode == "big":  # the Roth suite: 256 px crops, test images still resized to 256
        size = resize
    if train and mode in ("base", "big"):
        steps = [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(0.5)]
    elif train and mode == "adv":
        steps = [transforms.RandomResizedCrop(size), transforms.RandomGrayscale(p=0.2),
                 transforms.ColorJitter(0.2, 0.2, 0.2, 0.2), transforms.RandomHorizontalFlip(0.5)]  # fmt: skip
    elif train and mode == "red":
        steps = [transforms.Resize(resize), transforms.RandomCrop(size), transforms.RandomHorizontalFlip(0.5)]
    else:
        steps = [transforms.Resize(resize), transforms.CenterCrop(size)]
    steps.append(transforms.ToTensor())
    if uses_bninception(opt):
        steps += [transforms.Normalize(BNINCEPTION_MEAN, BNINCEPTION_STD), ToBGR()]
    else:
        steps.append(transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return transforms.Compose(steps)


def tensor_image_encoder(mean: Sequence[float], std: Sequence[float], input_shape: tuple[int, ...]) -> Callable:
    """PIL image -> the tensor an in-memory dataset's network sees: ``input_shape`` (C, H, W) channels (grey or
    RGB) and size, in [0, 1], normalised with the dataset's ``mean`` / ``std``."""
    c, h, w = input_shape
    colour = transforms.Grayscale(1) if c == 1 else transforms.Lambda(lambda image: image.convert("RGB"))
    return transforms.Compose([colour, transforms.Resize((h, w)), transforms.ToTensor(), transforms.Normalize(mean, std)])


def load_rgb(path: str) -> Image.Image:
    """Open an image file as RGB; a corrupt or unreadable file is a ``UserError`` naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        first_line = (str(err).splitlines() or [""])[0]
        raise UserError(f"cannot read image {path} ({type(err).__name__}: {first_line}); replace or remove it") from err


class ImageFileDataset(Dataset):
    """Images read from files: ``paths[i]`` has label ``labels[i]``; transforms applied on load."""

    closed_set = False  # set per split by ``datasets._splits.assemble``
    query = gallery = None  # boolean masks where the split is evaluated query -> gallery (In-Shop, csv)

    def __init__(self, paths: Sequence[str], labels: Sequence[int], transform: Callable | None,
                 class_names: Sequence[str] | None = None):  # fmt: skip
        self.image_paths = [str(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.class_names = list(class_names) if class_names is not None else None

    def __len__(self) -> int:
        return len(self.image_paths)

    def raw_image(self, index: int) -> Image.Image:
        return load_rgb(self.image_paths[index])

    def __getitem__(self, index: int):
        image = self.raw_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index]), int(index)


class TensorImageDataset(Dataset):
    """Images held in memory as a ``[N, C, H, W]`` tensor (uint8 0-255 or float 0-1).

    ``indices`` selects the split's rows (the tensor is shared between splits, not copied);
    ``transform`` acts on the float image in [0, 1] (``Normalize``, random crops, ...).
    """

    closed_set = False  # set per split by ``datasets._splits.assemble``
    query = gallery = None  # boolean masks where the split is evaluated query -> gallery (In-Shop, csv)

    def __init__(self, images: torch.Tensor, labels: Sequence[int], transform: Callable | None,
                 class_names: Sequence[str] | None = None, indices: Sequence[int] | None = None):  # fmt: skip
        if images.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got {tuple(images.shape)}")
        self.images = images
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.labels) != len(self.indices):
            raise ValueError(f"{len(self.labels)} labels for {len(self.indices)} images")
        self.transform = transform
        self.class_names = list(class_names) if class_names is not None else None
        self.image_paths = None

    def __len__(self) -> int:
        return len(self.indices)

    def image01(self, index: int) -> torch.Tensor:
        x = self.images[int(self.indices[index])]
        return x.float().div(255) if x.dtype == torch.uint8 else x.float()

    def raw_image(self, index: int) -> Image.Image:
        x = (self.image01(index).clamp(0, 1) * 255).round().to(torch.uint8)
        arr = x.permute(1, 2, 0).numpy()
        return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)

    def __getitem__(self, index: int):
        x = self.image01(index)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[index]), int(index)


def list_images(folder: str) -> list[str]:
    """Sorted image files directly inside ``folder`` (hidden files skipped); an empty (zero-byte) one is a
    one-line error naming it."""
    files = sorted(
        os.path.join(folder, f) for f in os.listdir(folder)
        if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f))
    )  # fmt: skip
    for path in files:
        check_image_file(path)
    return files


def check_image_file(path: str) -> None:
    """A one-line error when ``path`` is missing or empty (a corrupt but non-empty image fails when it is read)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        raise UserError(f"image {path} not found; restore it or remove it from the dataset") from None
    if size == 0:
        raise UserError(f"image {path} is empty (0 bytes); replace or remove it")


def class_folders(root: str, layout: str) -> list[str]:
    """Sorted class sub-folders of ``root``; ``UserError`` naming ``root`` and ``layout`` if absent or empty."""
    if not os.path.isdir(root):
        raise UserError(f"dataset folder {root} not found; expected layout: {layout}")
    classes = sorted(d for d in os.listdir(root) if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise UserError(f"no class folders in {root}; expected layout: {layout}")
    return classes
