"""The Roth et al. 2020 suite's ``full_random`` sampler (its ``random_sampler.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from datasampler import register
from datasampler._base import BatchSampler


@register("full_random", paper="Roth et al. 2020, Revisiting Training Strategies and Generalization Performance in DML")
class FullRandomSampler(BatchSampler):
    """Each batch: ``bs - 1`` draws of (uniform class, then uniform image of it), with
    replacement, plus another image of the class of a random batch member (one whose class
    has two images or more), so every batch holds a positive pair. Classes are drawn
    uniformly, not in proportion to their size, as in the Roth suite (which may also pair
    an image with itself).
    """

    def __init__(self, opt, labels):
        super().__init__(opt, labels)
        if self.batch_size < 2:
            raise ValueError("full_random needs --bs of at least 2")
        _, inverse = np.unique(self.labels, return_inverse=True)
        self.sample_class = inverse
        self.order = np.argsort(inverse, kind="stable")  # indices grouped by class
        self.sizes = np.bincount(inverse)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])

    def batches(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        n = self.batch_size - 1
        for _ in range(self.n_batches):
            cls = rng.integers(len(self.sizes), size=n)
            batch = self.order[self.starts[cls] + (rng.random(n) * self.sizes[cls]).astype(np.int64)]
            pairable = np.flatnonzero(self.sizes[cls] > 1)  # members whose class has another image
            member = batch[rng.choice(pairable)] if len(pairable) else batch[rng.integers(n)]
            c = self.sample_class[member]
            offset = rng.integers(self.sizes[c] - 1) if self.sizes[c] > 1 else 0
            partner = self.order[self.starts[c] + offset]
            if self.sizes[c] > 1 and partner == member:  # skip the member itself: last slot of the class
                partner = self.order[self.starts[c] + self.sizes[c] - 1]
            yield np.append(batch, partner)
