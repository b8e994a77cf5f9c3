"""Train-set embedding storage shared by the batch-selection samplers (not a component).

Protocol with the training loop (the loop makes these calls; samplers only implement them):

1. ``sampler.requires_storage`` is True.
2. Once before epoch 1: ``sampler.init_storage(embeddings [N, D])`` with the embeddings of
   the whole training set in dataset order, computed without augmentation (eval mode).
3. After every training step: ``sampler.replace_storage_entries(batch_embeddings.detach(),
   batch_indices)`` (a no-op with ``--data_storage_no_update``). Under DDP pass the batch
   gathered from all ranks (``utilities.distributed.gather_with_grad`` on embeddings and
   indices), so that every rank holds the same storage and draws the same global batches.
4. Optionally, with ``--data_idx_full_prec`` (``sampler.full_refresh``): at the start of
   every epoch after the first (of a run, or of a resumed run, whose step 2 just ran),
   before the epoch's batches are drawn, ``sampler.full_storage_update(embeddings [N, D])``
   with a fresh pass over the training set as in step 2 (momentum ``--data_mb_mom`` when
   > 0). Under DDP every rank passes the same gathered embeddings.

Each epoch's batches are computed from the storage when the epoch's iteration starts, as
the Roth et al. 2020 suite's ``precompute_indices``, from ``default_rng((seed, epoch))``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from datasampler._base import BatchSampler, ClassBatchSampler
from utilities.distances import l2_normalize
from utilities.errors import UserError
from utilities.flag_types import Number, positive_float, positive_int

SIM_MEASURES = ("euclidean", "cosine")


def add_storage_args(parser) -> None:
    """Flags shared by the storage samplers; safe to call from several modules."""
    if "--data_batchmatch_bigbs" in parser._option_string_actions:
        return
    parser.add_argument(
        "--data_batchmatch_bigbs",
        default=512,
        type=positive_int(),
        help="storage samplers: size of the random pool each batch is selected from",
    )
    parser.add_argument(
        "--data_batchmatch_ncomps",
        default=10,
        type=positive_int(),
        help="disthist/fid_batchmatch: candidate batches compared per batch",
    )
    parser.add_argument(
        "--data_storage_no_update",
        action="store_true",
        help="storage samplers: keep the initial embeddings (no update after each step)",
    )
    parser.add_argument(
        "--data_sampler_lowproj_dim",
        default=-1,
        type=Number(int, low=1, also=(-1,)),
        help="storage samplers: random linear projection to this dimension before selection (-1: off)",
    )
    parser.add_argument(
        "--data_sim_measure",
        default="euclidean",
        choices=SIM_MEASURES,
        help="storage samplers: distances on raw (euclidean) or L2-normalised (cosine) embeddings",
    )
    parser.add_argument(
        "--data_idx_full_prec",
        action="store_true",
        help="storage samplers: recompute the whole storage at the start of every epoch",
    )
    parser.add_argument(
        "--data_mb_mom",
        default=-1.0,
        type=Number(float, high=1, high_open=True),
        help="storage samplers: momentum of full storage refreshes (<= 0: replace)",
    )
    parser.add_argument(
        "--data_mb_lr",
        default=1.0,
        type=positive_float(),
        help="storage samplers: step size of the momentum term in full storage refreshes",
    )


class StorageMixin:
    """Keeps ``self.storage`` (float32 CPU tensor ``[N, D]``) and the storage flags.

    Mixed into a ``datasampler._base.BatchSampler`` subclass; call ``init_storage_flags(opt)``
    in ``__init__`` after the base ``__init__``.
    """

    requires_storage = True

    def init_storage_flags(self, opt) -> None:
        self.storage: torch.Tensor | None = None
        self.delta_storage: torch.Tensor | None = None
        self.bigbs = int(opt.data_batchmatch_bigbs)
        self.n_comps = int(opt.data_batchmatch_ncomps)
        self.update_storage = not opt.data_storage_no_update
        self.low_proj_dim = int(opt.data_sampler_lowproj_dim)
        self.sim_measure = str(opt.data_sim_measure)
        self.full_refresh = bool(opt.data_idx_full_prec)
        self.mb_mom = float(opt.data_mb_mom)
        self.mb_lr = float(opt.data_mb_lr)
        if self.bigbs <= 0 or self.n_comps <= 0:
            raise UserError("--data_batchmatch_bigbs and --data_batchmatch_ncomps must be positive")
        if self.sim_measure not in SIM_MEASURES:
            raise UserError(
                f"--data_sim_measure {self.sim_measure} is unknown; choose one of: {', '.join(SIM_MEASURES)}"
            )
        _, inverse = np.unique(self.labels, return_inverse=True)
        self.sample_class = inverse  # class id (0..C-1) of each dataset index
        order = np.argsort(inverse, kind="stable")
        self.members = np.split(order, np.cumsum(np.bincount(inverse))[:-1])  # dataset indices per class id

    # ----------------------------------------------------------- storage protocol
    def init_storage(self, embeddings: torch.Tensor) -> None:
        """Set the storage to the embeddings of the whole training set (dataset order)."""
        embeddings = torch.as_tensor(embeddings).detach().float().cpu()
        if embeddings.ndim != 2 or len(embeddings) != len(self.labels):
            raise ValueError(f"init_storage needs [{len(self.labels)}, D] embeddings, got {tuple(embeddings.shape)}")
        self.storage = embeddings.clone()
        self.delta_storage = torch.zeros_like(self.storage)

    def replace_storage_entries(self, embeddings: torch.Tensor, indices) -> None:
        """Overwrite the stored embeddings of dataset ``indices`` (skipped with --data_storage_no_update)."""
        if not self.update_storage:
            return
        self.check_storage()
        idx = torch.as_tensor(indices).long().cpu().reshape(-1)
        self.storage[idx] = torch.as_tensor(embeddings).detach().float().cpu().reshape(len(idx), -1)

    def full_storage_update(self, embeddings: torch.Tensor) -> None:
        """Refresh the whole storage; with ``--data_mb_mom m > 0`` a momentum step:
        delta <- m delta + (1 - m)(new - old), storage <- new + mb_lr * delta.
        (The Roth suite never initialised delta, so m > 0 crashed there.)"""
        new = torch.as_tensor(embeddings).detach().float().cpu()
        self.check_storage()
        if self.mb_mom > 0:
            self.delta_storage = self.mb_mom * self.delta_storage + (1 - self.mb_mom) * (new - self.storage)
            self.storage = new + self.mb_lr * self.delta_storage
        else:
            self.storage = new.clone()

    def check_storage(self) -> None:
        if self.storage is None:
            raise RuntimeError(
                f"{type(self).__name__} needs its embedding storage: call init_storage(train embeddings) before use"
            )

    # ------------------------------------------------------------------ helpers
    def pool(self, rng: np.random.Generator) -> np.ndarray:
        """A random pool of ``min(bigbs, N)`` distinct dataset indices."""
        return rng.choice(len(self.labels), min(self.bigbs, len(self.labels)), replace=False)

    def features(self, indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Stored embeddings of ``indices`` (float64), L2-normalised for the cosine measure and
        randomly projected to ``--data_sampler_lowproj_dim`` when set (a fresh projection per
        call, drawn as torch's default ``nn.Linear`` init, as the original)."""
        self.check_storage()
        x = self.storage[torch.as_tensor(indices, dtype=torch.long)].double().numpy()
        if self.sim_measure == "cosine":
            x = l2_normalize(x)
        if self.low_proj_dim > 0:
            bound = 1.0 / np.sqrt(x.shape[1])
            x = x @ rng.uniform(-bound, bound, size=(x.shape[1], self.low_proj_dim))
        return x

    def with_class_mates(self, points: np.ndarray, samples_per_class: int, rng: np.random.Generator) -> np.ndarray:
        """Each selected point followed by ``samples_per_class - 1`` other images of its class
        (distinct where the class has enough; the Roth suite drew them with replacement)."""
        parts = []
        for idx in points:
            mates = self.members[self.sample_class[idx]]
            others = mates[mates != idx]
            k = samples_per_class - 1
            if len(others) == 0:
                others = mates  # a single-image class: repeat it
            parts.append(np.concatenate([[idx], rng.choice(others, k, replace=len(others) < k)]))
        return np.concatenate(parts).astype(np.int64)


class BatchMatchSampler(StorageMixin, ClassBatchSampler):
    """Base of the batch-matching samplers (``disthist_batchmatch``, ``fid_batchmatch``).

    Each batch: a class-structured pool of about ``--data_batchmatch_bigbs`` images
    (random classes, ``samples_per_class`` images per draw); ``--data_batchmatch_ncomps``
    candidate batches of ``bs / samples_per_class`` distinct pool classes x
    ``samples_per_class`` distinct images; the candidate whose stored embeddings best
    match the pool's statistics (lowest ``cost``) is the batch. The Roth suite drew classes
    and images with replacement, so its batches could repeat images; here repeats happen
    only where a class has too few images.
    """

    def __init__(self, opt, labels):
        super().__init__(opt, labels)
        self.init_storage_flags(opt)

    def cost(self, pool_x: np.ndarray, candidates: list[np.ndarray]) -> np.ndarray:
        """Mismatch of each candidate (rows of ``pool_x``) to the whole pool; lower is better."""
        raise NotImplementedError

    def class_pool(self, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
        """(dataset indices of the pool, positions in it of each pool class)."""
        n_classes = len(self.members)
        n_draws = max(self.bigbs // self.samples_per_class, self.classes_per_batch)
        drawn = rng.choice(n_classes, n_draws, replace=n_draws > n_classes)
        indices, groups, start = [], [], 0
        for c, m in zip(*np.unique(drawn, return_counts=True)):
            members = self.members[c]
            want = int(m) * self.samples_per_class
            take = rng.choice(members, min(want, len(members)), replace=False)
            if len(take) < self.samples_per_class:
                take = rng.choice(members, self.samples_per_class, replace=True)
            indices.append(take)
            groups.append(np.arange(start, start + len(take)))
            start += len(take)
        return np.concatenate(indices), groups

    def candidate(self, groups: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """Pool positions of one candidate batch (grouped by class)."""
        chosen = rng.choice(len(groups), self.classes_per_batch, replace=len(groups) < self.classes_per_batch)
        parts = [rng.choice(groups[g], k, replace=len(groups[g]) < k) for g, k in zip(chosen, self.counts)]
        return np.concatenate(parts)

    def batches(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        self.check_storage()
        epoch = []
        for _ in range(self.n_batches):
            pool, groups = self.class_pool(rng)
            pool_x = self.features(pool, rng)
            candidates = [self.candidate(groups, rng) for _ in range(self.n_comps)]
            best = candidates[int(np.argmin(self.cost(pool_x, candidates)))]
            epoch.append(pool[best])
        yield from epoch


class CoresetSampler(StorageMixin, BatchSampler):
    """Base of the coreset samplers: each batch picks k = bs / samples_per_class points of
    a random pool of ``--data_batchmatch_bigbs`` stored embeddings (``select``), each
    followed by samples_per_class - 1 other images of its class.
    """

    def __init__(self, opt, labels):
        super().__init__(opt, labels)
        self.init_storage_flags(opt)
        self.samples_per_class = int(opt.samples_per_class)
        if self.samples_per_class <= 0 or self.batch_size % self.samples_per_class:
            raise UserError(
                f"--bs {self.batch_size} must be a multiple of --samples_per_class {self.samples_per_class}"
            )
        self.k = self.batch_size // self.samples_per_class
        if min(self.bigbs, len(self.labels)) < self.k:
            raise UserError(f"--data_batchmatch_bigbs {self.bigbs} is below the {self.k} coreset points a batch needs")

    def select(self, pool: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Dataset indices of the k coreset points of ``pool``."""
        raise NotImplementedError

    def class_groups(self) -> np.ndarray:
        return np.full(self.k, self.samples_per_class)  # each point followed by its class mates

    def batches(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        self.check_storage()
        epoch = [
            self.with_class_mates(self.select(self.pool(rng), rng), self.samples_per_class, rng)
            for _ in range(self.n_batches)
        ]
        yield from epoch
