"""Shared machinery of the batch samplers (not a component).

Every sampler draws each epoch's batches from ``numpy.random.default_rng((seed, epoch))``,
so an epoch's batches depend only on ``--seed`` and the epoch: resuming reproduces them,
and all DDP ranks draw the same global batch and keep their own contiguous slice of it.

Class-structured batches are laid out class by class (``class_groups``), so the contiguous
slices hand each rank whole classes whenever the number of classes per batch allows it
(``bs / N`` a multiple of the samples per class); otherwise ``set_distributed`` warns that
classes are split. The number of batches per epoch and the global batches themselves do not
depend on the number of ranks (the losses see the gathered global batch, see ``training.loop``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch

from utilities.errors import UserError


class BatchSampler(torch.utils.data.Sampler):
    """Base batch sampler: ``len(labels) // bs`` batches of ``bs`` dataset indices per epoch.

    Subclasses implement ``batches(rng)``, yielding the global batches of one epoch.
    ``set_epoch(epoch)`` selects the epoch (as ``DistributedSampler``); without it the
    epoch advances by one on every pass. ``rank`` / ``world_size`` (0 / 1) shard each
    batch across DDP processes. ``batch_size`` is the effective (global) batch size: ``--bs``
    unless a subclass passes its own (the episodic sampler's classes x samples).
    """

    class_based = False  # batches are (classes x samples per class); see ClassBatchSampler

    def __init__(self, opt, labels, batch_size: int | None = None):
        self.labels = np.asarray(labels).astype(np.int64).reshape(-1)
        self.batch_size = int(opt.bs if batch_size is None else batch_size)
        self.seed = int(opt.seed)
        self.epoch = 0
        self.skip_batches = 0
        self.rank, self.world_size = 0, 1
        if self.batch_size <= 0:
            raise UserError(f"--bs must be positive, got {self.batch_size}")
        if len(self.labels) < self.batch_size:
            raise UserError(f"--bs {self.batch_size} exceeds the {len(self.labels)} training samples; lower --bs")
        self.n_batches = len(self.labels) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_distributed(self, rank: int, world_size: int) -> None:
        """Make this sampler yield rank ``rank``'s slice of every batch (whole classes where possible)."""
        if not 0 <= int(rank) < int(world_size):
            raise UserError(f"rank {rank} is outside the {world_size} processes")
        self.rank, self.world_size = int(rank), int(world_size)
        k = self.local_batch_size  # fails early when bs is not divisible
        groups = self.class_groups()
        if groups is None or self.world_size == 1:
            return
        ends = set(np.cumsum(groups).tolist())
        if any(r * k not in ends for r in range(1, self.world_size)):
            # Only where whole classes cannot be shared out: the losses still see the whole batch (gathered).
            warnings.warn(
                f"the {len(groups)} classes of a batch of {self.batch_size} cannot be shared out as whole classes "
                f"among {self.world_size} processes ({k} images each), so some classes are split between two; "
                f"for whole classes make the number of classes per batch a multiple of {self.world_size} "
                f"(e.g. --bs a multiple of {self.world_size} x --samples_per_class)",
                stacklevel=2,
            )

    def class_groups(self) -> np.ndarray | None:
        """Sizes of the consecutive same-class groups a global batch is laid out in (None: no class layout)."""
        return None

    @property
    def local_batch_size(self) -> int:
        if self.batch_size % self.world_size:
            raise UserError(f"--bs {self.batch_size} is not divisible by the {self.world_size} processes; change --bs")
        return self.batch_size // self.world_size

    def rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng((self.seed % 2**32, epoch))

    def batches(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def skip(self, n_batches: int) -> None:
        """The next pass starts after its first ``n_batches`` batches (resuming in the middle of an epoch): they
        are drawn, so the rest of the epoch is the same, and not yielded."""
        self.skip_batches = int(n_batches)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        skip, self.skip_batches = self.skip_batches, 0
        k = self.local_batch_size
        for i, batch in enumerate(self.batches(self.rng(epoch))):
            if i >= skip:
                yield batch[self.rank * k : (self.rank + 1) * k].tolist()

    def __len__(self) -> int:
        return self.n_batches


class ClassBatchSampler(BatchSampler):
    """Base of samplers whose batches hold ``classes_per_batch`` classes with
    ``samples_per_class`` indices each (``--bs / --samples_per_class`` classes, unless a
    subclass passes its own ``batch_size`` / ``samples_per_class``).

    Asked for more classes than exist, it takes every class and fills the batch with
    more samples per class (a warning says so); ``counts`` holds the per-class numbers.
    """

    class_based = True

    def __init__(self, opt, labels, batch_size: int | None = None, samples_per_class: int | None = None):
        super().__init__(opt, labels, batch_size)
        self.classes, inverse = np.unique(self.labels, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        self.class_indices = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
        self.samples_per_class = int(opt.samples_per_class if samples_per_class is None else samples_per_class)
        if self.samples_per_class <= 0:
            raise UserError(f"--samples_per_class must be positive, got {self.samples_per_class}")
        wanted = max(1, self.batch_size // self.samples_per_class)
        self.classes_per_batch = min(wanted, len(self.classes))
        if wanted > len(self.classes):
            warnings.warn(
                f"--bs {self.batch_size} / --samples_per_class {self.samples_per_class} asks for {wanted} classes per "
                f"batch but the training split has {len(self.classes)}; using all of them with more samples per class",
                stacklevel=2,
            )
        # Per-class sample counts of a batch: spc each, or bs spread evenly when clamped.
        base, extra = divmod(self.batch_size, self.classes_per_batch)
        self.counts = np.full(self.classes_per_batch, base)
        self.counts[:extra] += 1

    def class_groups(self) -> np.ndarray:
        return self.counts  # ``draw`` (and every subclass) concatenates the classes' images in this order

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One batch: ``classes_per_batch`` distinct classes drawn uniformly, ``counts[i]``
        distinct images of the i-th (a class with fewer images: each once, then repeats)."""
        parts = []
        for c, k in zip(rng.choice(len(self.classes), self.classes_per_batch, replace=False), self.counts):
            idx = self.class_indices[c]
            if len(idx) >= k:
                parts.append(rng.choice(idx, k, replace=False))
            else:
                parts.append(np.concatenate([rng.permutation(idx), rng.choice(idx, k - len(idx))]))
        return np.concatenate(parts)
