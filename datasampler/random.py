"""Plain random batches: a shuffle of the training set cut into batches."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from datasampler import register
from datasampler._base import BatchSampler


@register("random", paper="standard shuffled mini-batches (no class structure)")
class RandomSampler(BatchSampler):
    """Each epoch, a random permutation of the training set cut into ``len // bs`` batches
    (the remainder is dropped): every image appears at most once per epoch, labels play no
    role, so a batch may hold no positive pair. The Roth suite has no sampler of this name
    (its ``random_sampler.py`` is ``full_random``).
    """

    def batches(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        perm = rng.permutation(len(self.labels))
        for b in range(self.n_batches):
            yield perm[b * self.batch_size : (b + 1) * self.batch_size]
