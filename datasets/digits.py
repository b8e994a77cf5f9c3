"""scikit-learn's bundled ``digits`` (8x8 grey, 10 classes, 1797 images): the offline default.

Images are float ``[1, 8, 8]`` in [0, 1] (pixel / 16), normalised with the mean / std of all
1797 clean images, held in memory; no augmentation. Splits (``--digits_split``):

* ``dml`` (default): classes 0-4 train, 5-9 test (class-disjoint DML protocol).
* ``classification``: all 10 classes, stratified 20% test, then 15% of the rest as
  validation, seeded by ``--seed`` (the vMF paper's classification protocol in small).

``--digits_corruption s_max`` corrupts every image (all splits) with a strength
``s ~ U(0, s_max)`` drawn per image (seeded by ``--seed``): Gaussian blur with sigma
``2 s`` pixels and/or additive Gaussian noise with std ``s`` (on the [0, 1] scale), then
clipping to [0, 1]. Each split stores its strengths in ``dataset.corruption`` (None when off).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from sklearn.datasets import load_digits
from torchvision import transforms

from datasets import register
from datasets._base import TensorImageDataset, tensor_image_encoder
from datasets._splits import add_args as add_split_args
from datasets._splits import assemble, stratified_split
from utilities.errors import UserError
from utilities.flag_types import non_negative_float

MEAN, STD = 0.3053, 0.3760  # over all 1797 clean images in [0, 1]
TRAIN_CLASSES = (0, 1, 2, 3, 4)


def add_args(parser) -> None:
    # The shared split flags live in datasets._splits (not a component); digits is always registered.
    add_split_args(parser)
    parser.add_argument(
        "--digits_split",
        default="dml",
        choices=["dml", "classification"],
        help="digits: dml = classes 0-4 train / 5-9 test; classification = stratified "
        "train/val/test over all 10 classes (seeded by --seed)",
    )
    parser.add_argument(
        "--digits_corruption",
        default=0.0,
        type=non_negative_float(),
        help="digits: max corruption strength s_max (0: off); each image gets s ~ U(0, s_max)",
    )
    parser.add_argument("--digits_corruption_type", default="both", choices=["both", "noise", "blur"],
                        help="digits: blur (sigma 2s px), Gaussian noise (std s) or both")  # fmt: skip


def image_encoder(opt, input_shape: tuple[int, ...]):
    """Any image as the digits network sees one: grey, 8x8, normalised like the digits images."""
    return tensor_image_encoder((MEAN,), (STD,), input_shape)


def corrupt(images: np.ndarray, max_strength: float, kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt ``[N, H, W]`` images in [0, 1]; returns (images, per-image strength)."""
    rng = np.random.default_rng([seed, 8])
    strength = rng.uniform(0.0, max_strength, size=len(images))
    noise = rng.standard_normal(images.shape)
    out = images.copy()
    for i, s in enumerate(strength):
        if kind in ("both", "blur") and s > 0:
            out[i] = gaussian_filter(out[i], sigma=2.0 * s, mode="constant")
        if kind in ("both", "noise"):
            out[i] = out[i] + s * noise[i]
    return np.clip(out, 0.0, 1.0), strength


@register("digits", paper="scikit-learn load_digits (UCI optical recognition of handwritten digits)",
          flags="--digits_split, --digits_corruption, --digits_corruption_type",
          defaults={"arch": "mnist_cnn", "not_pretrained": True, "embed_dim": 32, "bs": 60, "samples_per_class": 12,
                    "n_epochs": 12, "lr": 1e-3, "kernels": 0, "tau": [1000]})  # fmt: skip
def load(opt) -> dict:
    data = load_digits()
    images = data.images.astype(np.float64) / 16.0
    classes = data.target.astype(np.int64)
    seed = int(opt.seed)
    max_strength = float(opt.digits_corruption)
    if max_strength < 0:
        raise UserError(f"--digits_corruption must be >= 0, got {max_strength}")
    strength = None
    if max_strength > 0:
        images, strength = corrupt(images, max_strength, opt.digits_corruption_type, seed)
    tensor = torch.from_numpy(images).float().unsqueeze(1)
    normalize = transforms.Normalize((MEAN,), (STD,))
    names = [str(c) for c in range(10)]

    def make(items, labels, train: bool, split_names):
        ds = TensorImageDataset(tensor, labels, normalize, split_names, indices=items)
        ds.corruption = None if strength is None else strength[np.asarray(items, dtype=np.int64)]
        return ds

    idx = np.arange(len(classes))
    if opt.digits_split == "classification":
        rest, test = stratified_split(classes, 0.2, seed)
        keep, val = stratified_split(classes[rest], 0.15, seed)
        train, val = rest[keep], rest[val]
        return assemble(train, classes[train], test, classes[test], names, make, opt, classification=True,
                        val_items=val, val_classes=classes[val])  # fmt: skip
    is_train = np.isin(classes, TRAIN_CLASSES)
    return assemble(idx[is_train], classes[is_train], idx[~is_train], classes[~is_train], names, make, opt)
