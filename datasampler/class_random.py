"""Class-random batches: random classes, random samples within each (Roth et al. 2020 suite)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from datasampler import register
from datasampler._base import ClassBatchSampler


@register(
    "class_random",
    paper="Roth et al. 2020, Revisiting Training Strategies and Generalization Performance in DML",
    flags="--bs, --samples_per_class",
)
class ClassRandomSampler(ClassBatchSampler):
    """Each batch: ``bs / samples_per_class`` distinct classes drawn uniformly, then
    ``samples_per_class`` distinct images of each (a class with fewer images gives all of
    them plus random repeats). The Roth suite draws classes and images with replacement, so a
    batch there can repeat a class or an image.
    """

    def batches(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        for _ in range(self.n_batches):
            yield self.draw(rng)
