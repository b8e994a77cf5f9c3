"""Batches matching the pool's distance histogram and moments (Roth et al. 2020 suite)."""

from __future__ import annotations

import numpy as np

from datasampler import register
from datasampler._storage import BatchMatchSampler, add_storage_args
from utilities.distances import squared_distances

N_BINS = 50
WD_WEIGHT = 75.0  # the Roth suite's weight on the (symmetrised) Wasserstein term


def add_args(parser) -> None:
    add_storage_args(parser)


def histogram_w1(h1: np.ndarray, h2: np.ndarray, bin_width: float) -> float:
    """1-Wasserstein distance of two normalised histograms on the same equal-width bins:
    bin_width * sum_k |H1_k - H2_k| with H the cumulative sums."""
    return float(bin_width * np.abs(np.cumsum(h1) - np.cumsum(h2)).sum())


def upper_distances(x: np.ndarray) -> np.ndarray:
    """Pairwise Euclidean distances i < j."""
    return np.sqrt(squared_distances(x)[np.triu_indices(len(x), 1)])


@register(
    "disthist_batchmatch",
    paper="Roth et al. 2020, Revisiting Training Strategies and Generalization Performance in DML",
    flags="--data_batchmatch_bigbs, --data_batchmatch_ncomps, --data_sampler_lowproj_dim, --data_sim_measure, "
    "--data_storage_no_update, --data_idx_full_prec, --data_mb_mom, --data_mb_lr",
    requires_storage=True,
)
class DisthistBatchmatchSampler(BatchMatchSampler):
    """Batch matching (see ``datasampler._storage.BatchMatchSampler``) with the Roth suite's
    cost of a candidate batch S against the pool P (stored embeddings):

        ||mu_P - mu_S|| + ||sigma_P - sigma_S|| + 75 * (W1(h_P, h_S) + W1(h_S, h_P))

    mu / sigma the per-dimension mean and standard deviation, h the normalised histogram
    (50 bins over the pool's range) of pairwise Euclidean distances. W1 is taken between
    the histograms as distributions over the bin centres; the Roth suite passed the bin
    masses to ``scipy.stats.wasserstein_distance`` as if they were sample values, which
    ignores where the mass lies.
    """

    def cost(self, pool_x: np.ndarray, candidates: list[np.ndarray]) -> np.ndarray:
        pool_d = upper_distances(pool_x)
        lo, hi = (float(pool_d.min()), float(pool_d.max())) if len(pool_d) else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1e-12
        edges = np.linspace(lo, hi, N_BINS + 1)
        h_pool = np.histogram(pool_d, bins=edges)[0].astype(float)
        h_pool /= max(h_pool.sum(), 1.0)
        mu, sigma = pool_x.mean(axis=0), pool_x.std(axis=0)
        costs = []
        for cand in candidates:
            x = pool_x[cand]
            h = np.histogram(upper_distances(x), bins=edges)[0].astype(float)
            h /= max(h.sum(), 1.0)
            w1 = histogram_w1(h_pool, h, edges[1] - edges[0])
            costs.append(
                np.linalg.norm(mu - x.mean(axis=0)) + np.linalg.norm(sigma - x.std(axis=0)) + WD_WEIGHT * 2 * w1
            )
        return np.asarray(costs)
