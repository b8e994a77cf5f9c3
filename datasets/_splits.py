"""Train / validation / test assembly shared by every loader.

Protocols (``--split_protocol``):

* ``roth`` (default, Roth et al. 2020): validation only with ``--use_tv_split``. As the Roth
  suite, the first ``int(n_classes * --tv_split_perc)`` sorted train classes stay in training
  and the rest validate; with ``--tv_split_by_samples``, within each class the images at
  ``round(linspace(0, n - 1, int(n * --tv_split_perc)))`` stay in training. With
  ``--tv_split_random`` both choices are draws seeded by ``--seed`` instead, so seeds also
  vary the split.
* ``vmf`` (Scott et al. 2021): always a validation split. Class-disjoint datasets hold out
  the paper's validation classes (exact lists for CUB200 / CARS196 / SOP; on other class
  counts a RandomState(1234) draw of the same fraction); classification datasets take a
  stratified 15% of the train images (seed 1234).

Labels: ``training`` labels are 0..C-1 (sorted train classes). ``validation`` and ``testing``
use the same mapping when all their classes are train classes (classification), else
their original class ids (class-disjoint retrieval). Each split states which it is:
``split.closed_set`` is True when its classes are the train classes (accuracy and
calibration of a classifier make sense there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.model_selection import train_test_split

from utilities.errors import UserError

VMF_SEED = 1234


def add_args(parser) -> None:
    parser.add_argument("--split_protocol", default="roth", choices=["roth", "vmf"],
                        help="roth: validation only with --use_tv_split; vmf: the vMF paper's validation classes "
                             "(CUB/CARS/SOP) or stratified 85/15 split (MNIST/CIFAR), seed 1234")  # fmt: skip
    parser.add_argument("--tv_split_random", action="store_true",
                        help="with --use_tv_split: draw the kept classes (or images) with --seed instead of the "
                             "Roth suite's fixed choice (first classes; evenly spaced images)")  # fmt: skip


def vmf_validation_classes(n_classes: int, exact: dict[int, Sequence[int]], fraction: float) -> np.ndarray:
    """Positions (in the sorted train classes) held out for validation under the vMF protocol."""
    if n_classes in exact:
        return np.asarray(sorted(exact[n_classes]), dtype=np.int64)
    n_val = min(n_classes - 1, max(1, round(n_classes * fraction)))
    return np.sort(np.random.RandomState(VMF_SEED).choice(n_classes, n_val, replace=False))


def split_by_classes(classes: np.ndarray, keep_share: float, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Item indices (train, val): ``int(n * keep_share)`` classes stay in training.

    ``seed=None`` keeps the first classes in sorted order (the Roth suite); a seed draws them.
    """
    uniq = np.unique(classes)
    if len(uniq) < 2:
        raise UserError(f"cannot split {len(uniq)} train class(es) into train and validation classes; "
                        "use --tv_split_by_samples")  # fmt: skip
    n_keep = min(len(uniq) - 1, max(1, int(len(uniq) * keep_share)))
    order = uniq if seed is None else np.random.RandomState(seed).permutation(uniq)
    in_train = np.isin(classes, order[:n_keep])
    return np.flatnonzero(in_train), np.flatnonzero(~in_train)


def split_by_samples(classes: np.ndarray, keep_share: float, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Item indices (train, val): within each class a ``keep_share`` of the images stays in training.

    ``seed=None`` keeps the evenly spaced images ``round(linspace(0, n-1, int(n * keep_share)))``
    (the Roth suite); a seed draws them.
    """
    rng = None if seed is None else np.random.RandomState(seed)
    train, val = [], []
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        n_keep = max(1, int(len(idx) * keep_share))
        if rng is None:
            keep = np.zeros(len(idx), dtype=bool)
            keep[np.unique(np.round(np.linspace(0, len(idx) - 1, n_keep)).astype(np.int64))] = True
        else:
            keep = np.zeros(len(idx), dtype=bool)
            keep[rng.permutation(len(idx))[:n_keep]] = True
        train.append(idx[keep])
        val.append(idx[~keep])
    train_idx, val_idx = np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
    if len(val_idx) == 0:
        raise UserError("--tv_split_by_samples left no validation images (too few images per class); "
                        "lower --tv_split_perc or split by classes")  # fmt: skip
    return train_idx, val_idx


def stratified_split(classes: np.ndarray, test_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified item indices (keep, held_out) with sklearn's ``train_test_split``."""
    idx, n_classes = np.arange(len(classes)), len(np.unique(classes))
    # sklearn needs at least one held-out and one kept image per class (matters for tiny fixtures only).
    n_held = max(n_classes, int(np.ceil(test_share * len(idx))))
    if len(idx) - n_held < n_classes or np.bincount(np.unique(classes, return_inverse=True)[1]).min() < 2:
        raise UserError(f"too few images ({len(idx)}) for a stratified split of {n_classes} classes; "
                        "every class needs at least 2 images")  # fmt: skip
    keep, held = train_test_split(idx, test_size=n_held, random_state=seed, stratify=classes)
    return np.sort(keep), np.sort(held)


def carve_validation(classes: np.ndarray, opt, classification: bool, vmf_exact: dict[int, Sequence[int]] | None = None,
                     vmf_fraction: float = 0.15) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """Split the train pool (item class ids ``classes``) into train / validation item indices."""
    if opt.split_protocol == "vmf":
        if classification:
            return stratified_split(classes, 0.15, VMF_SEED)
        uniq = np.unique(classes)
        val_classes = uniq[vmf_validation_classes(len(uniq), vmf_exact or {}, vmf_fraction)]
        in_val = np.isin(classes, val_classes)
        return np.flatnonzero(~in_val), np.flatnonzero(in_val)
    if not opt.use_tv_split:
        return np.arange(len(classes)), None
    share = float(opt.tv_split_perc)
    seed = int(opt.seed) if opt.tv_split_random else None
    if not 0 < share < 1:
        raise UserError(f"--tv_split_perc must lie in (0, 1), got {share}")
    if opt.tv_split_by_samples:
        return split_by_samples(classes, share, seed)
    return split_by_classes(classes, share, seed)


MakeDataset = Callable[[np.ndarray, np.ndarray, bool, list], object]


def assemble(train_items: np.ndarray, train_classes: np.ndarray, test_items: np.ndarray, test_classes: np.ndarray,
             class_names: Sequence[str], make: MakeDataset, opt, classification: bool = False,
             vmf_exact: dict[int, Sequence[int]] | None = None, vmf_fraction: float = 0.15,
             val_items: np.ndarray | None = None, val_classes: np.ndarray | None = None) -> dict:  # fmt: skip
    """Build the ``training`` / ``evaluation`` / ``validation`` / ``testing`` datasets.

    ``*_items`` are whatever ``make`` turns into images (paths or indices), ``*_classes``
    the original integer class ids (``class_names[id]`` names a class). ``make(items, labels,
    train, names)`` builds one split; ``train`` selects train-time transforms. A fixed
    ``val_items`` (e.g. the digits classification split) bypasses ``carve_validation``.
    """
    train_items, train_classes = np.asarray(train_items), np.asarray(train_classes, dtype=np.int64)
    test_items, test_classes = np.asarray(test_items), np.asarray(test_classes, dtype=np.int64)
    if val_items is None:
        tr, va = carve_validation(train_classes, opt, classification, vmf_exact, vmf_fraction)
        if va is not None:
            val_items, val_classes = train_items[va], train_classes[va]
        train_items, train_classes = train_items[tr], train_classes[tr]
    if len(train_items) == 0:
        raise UserError("the training split is empty; check the dataset folder and --tv_split_perc")
    uniq = np.unique(train_classes)
    mapping = {int(c): i for i, c in enumerate(uniq)}
    train_names = [class_names[c] for c in uniq]

    def split(items, classes: np.ndarray, train: bool = False):
        """One split; a split whose classes are all train classes is closed-set: it shares the train labels."""
        closed = set(np.unique(classes).tolist()) <= set(mapping)
        if closed:
            dataset = make(items, np.array([mapping[int(c)] for c in classes], dtype=np.int64), train, train_names)
        else:
            dataset = make(items, classes, train, list(class_names))
        dataset.closed_set = closed
        return dataset

    out = {
        "training": split(train_items, train_classes, train=True),
        "evaluation": split(train_items, train_classes),
        "validation": None,
        "testing": split(test_items, test_classes),
    }
    if val_items is not None:
        out["validation"] = split(np.asarray(val_items), np.asarray(val_classes, dtype=np.int64))
    return out
