"""Episodic batches of the vMF paper: n classes x k samples per batch (Scott et al. 2021)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator

import numpy as np

from datasampler import register
from datasampler._base import ClassBatchSampler
from utilities.errors import UserError
from utilities.flag_types import Number, positive_int

log = logging.getLogger("dml")


def add_args(parser) -> None:
    parser.add_argument(
        "--n_episodes",
        default=250,
        type=Number(int, low=1, also=(-1,)),
        help="episodic: batches (episodes) per epoch; -1: one pass, len(train) // batch size",
    )
    parser.add_argument(
        "--episode_classes",
        default=10,
        type=positive_int(),
        help="episodic: classes per episode, drawn without replacement (clamped to the train classes)",
    )
    parser.add_argument(
        "--episode_samples",
        default=13,
        type=positive_int(),
        help="episodic: images per class and episode; the batch size is classes x samples (--bs ignored)",
    )


@register(
    "episodic",
    paper="Scott, Gallagher, Mozer 2021, von Mises-Fisher Loss: An Exploration of Embedding Geometries for Supervised Learning",
    flags="--n_episodes, --episode_classes, --episode_samples",
)
class EpisodicSampler(ClassBatchSampler):
    """``--n_episodes`` batches per epoch (default 250, the paper's MNIST/CIFAR setting;
    -1 gives one pass over the data), each of ``--episode_classes`` distinct classes drawn
    uniformly x ``--episode_samples`` distinct images per class (a class with fewer images
    gives all of them plus random repeats; the original then yields a smaller batch).

    The batch size is classes x samples (``sampler.batch_size``, the run's effective batch size):
    ``--bs`` and ``--samples_per_class`` are ignored. Asking for more classes than the training
    split has uses all of them (with a warning).
    """

    def __init__(self, opt, labels):
        n_episodes, n_cls, n_smp = int(opt.n_episodes), int(opt.episode_classes), int(opt.episode_samples)
        if n_cls <= 0 or n_smp <= 0 or (n_episodes <= 0 and n_episodes != -1):
            raise UserError("--episode_classes and --episode_samples must be positive and --n_episodes positive or -1")
        available = len(np.unique(np.asarray(labels)))
        if n_cls > available:
            warnings.warn(
                f"--episode_classes {n_cls} exceeds the {available} training classes; using {available}", stacklevel=2
            )
            n_cls = available
        if int(opt.bs) != n_cls * n_smp:
            log.info(f"episodic sampler: batch size {n_cls} classes x {n_smp} samples = {n_cls * n_smp} (--bs ignored)")
        super().__init__(opt, labels, batch_size=n_cls * n_smp, samples_per_class=n_smp)
        self.n_batches = n_episodes if n_episodes > 0 else max(1, len(self.labels) // self.batch_size)

    def batches(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        for _ in range(self.n_batches):
            chosen = rng.choice(len(self.classes), self.classes_per_batch, replace=False)
            parts = []
            for c, k in zip(chosen, self.counts):
                idx = self.class_indices[c]
                if len(idx) >= k:
                    parts.append(rng.choice(idx, k, replace=False))
                else:  # every image once, then repeats to fill the class's k slots
                    parts.append(np.concatenate([rng.permutation(idx), rng.choice(idx, k - len(idx))]))
            yield np.concatenate(parts)
