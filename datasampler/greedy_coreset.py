"""Greedy k-center coreset batches from stored embeddings (Roth et al. 2020 suite)."""

from __future__ import annotations

import numpy as np

from datasampler import register
from datasampler._storage import CoresetSampler, add_storage_args
from utilities.distances import squared_distances
from utilities.flag_types import non_negative_float


def add_args(parser) -> None:
    add_storage_args(parser)
    parser.add_argument(
        "--data_gc_coreset_lim",
        default=1e-9,
        type=non_negative_float(),
        help="greedy_coreset: once every pool point is within this squared distance of the "
        "coreset, the remaining picks are random",
    )
    parser.add_argument(
        "--data_gc_softened",
        action="store_true",
        help="greedy_coreset: pick randomly among the farthest 3%% instead of the farthest point",
    )


def greedy_k_center(
    dist2: np.ndarray, k: int, first: int, rng: np.random.Generator, softened: bool = False, lim: float = 1e-9
) -> list[int]:
    """Greedy k-center (Gonzalez 1985) on a squared-distance matrix: start at ``first``,
    then repeatedly add the point farthest from the points chosen so far,
    argmax_j min_{s chosen} d2(j, s). ``softened``: a random point among those at or above
    the 97th percentile of that distance. Once all are within ``lim``, random new points."""
    min_d = dist2[first].copy()
    chosen = [int(first)]
    while len(chosen) < k:
        if min_d.max() <= lim:
            free = np.setdiff1d(np.arange(len(min_d)), chosen)
            nxt = int(rng.choice(free))
        elif softened:
            far = np.flatnonzero((min_d >= np.percentile(min_d, 97)) & (min_d > lim))
            nxt = int(rng.choice(far))
        else:
            nxt = int(np.argmax(min_d))
        chosen.append(nxt)
        min_d = np.minimum(min_d, dist2[nxt])
    return chosen


@register(
    "greedy_coreset",
    paper="Roth et al. 2020, Revisiting Training Strategies in DML; Sener & Savarese 2018, Active Learning: A Core-Set Approach",
    flags="--data_batchmatch_bigbs, --data_gc_coreset_lim, --data_gc_softened, --data_sampler_lowproj_dim, "
    "--data_sim_measure, --data_storage_no_update, --data_idx_full_prec, --data_mb_mom, --data_mb_lr",
    requires_storage=True,
)
class GreedyCoresetSampler(CoresetSampler):
    """Each batch: a random pool of ``--data_batchmatch_bigbs`` training images; greedy
    k-center on their stored embeddings picks k = bs / samples_per_class of them (first
    pick random); each pick is followed by samples_per_class - 1 other images of its
    class. Needs the embedding storage (see ``datasampler._storage``).

    Fixes of the Roth suite's version: it mapped the coreset positions through a second,
    unrelated random pool (so the chosen images were not the coreset), and its
    ``--data_gc_coreset_lim`` was unused (here: saturation threshold).
    """

    def __init__(self, opt, labels):
        super().__init__(opt, labels)
        self.softened = bool(opt.data_gc_softened)
        self.lim = float(opt.data_gc_coreset_lim)

    def select(self, pool: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Dataset indices of the k coreset points of ``pool``."""
        dist2 = squared_distances(self.features(pool, rng))
        first = int(rng.integers(len(pool)))
        return pool[greedy_k_center(dist2, self.k, first, rng, self.softened, self.lim)]
