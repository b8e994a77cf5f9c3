"""D2-sampling coreset batches from stored embeddings (Roth et al. 2020 suite)."""

from __future__ import annotations

import numpy as np

from datasampler import register
from datasampler._storage import CoresetSampler, add_storage_args
from utilities.distances import squared_distances
from utilities.flag_types import non_negative_float


def add_args(parser) -> None:
    add_storage_args(parser)
    parser.add_argument(
        "--data_d2_coreset_lambda",
        default=1.0,
        type=non_negative_float(),
        help="d2_coreset: exponent lambda on the summed squared distances",
    )


def d2_coreset(points: np.ndarray, k: int, lam: float, rng: np.random.Generator) -> list[int]:
    """Positions of k distinct rows of ``points`` [n, D], as the Roth suite's D2 coreset:

    * fit N(m, S) to the points; start at the point nearest to a draw from it;
    * then draw each next point j (without replacement) with probability
      p_j ~ N(x_j; m, S) * (sum_{s chosen} ||x_j - x_s||^2)^lambda.

    The density is evaluated in log space with a pseudo-inverse (the original's ``pdf``
    underflowed to 0/0 in high dimensions and failed on singular covariances).
    """
    n, dim = points.shape
    mean = points.mean(axis=0)
    cov = np.atleast_2d(np.cov(points.T)) if n > 1 else np.zeros((dim, dim))
    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 0.0, None)
    anchor = mean + vecs @ (np.sqrt(vals) * rng.standard_normal(dim))  # a draw from N(mean, cov)
    chosen = [int(np.argmin(np.linalg.norm(points - anchor, axis=1)))]
    # Gaussian log-density up to a constant, on the covariance's support (pseudo-inverse).
    keep = vals > max(vals.max(initial=0.0), 1e-300) * 1e-10
    z = (points - mean) @ vecs[:, keep] / np.sqrt(vals[keep])
    log_dens = -0.5 * np.sum(z**2, axis=1)
    dens = np.exp(log_dens - log_dens.max())
    dist2 = squared_distances(points)
    weights = dist2[chosen[0]].copy()
    free = np.ones(n, dtype=bool)
    free[chosen[0]] = False
    while len(chosen) < k:
        p = np.where(free, dens * np.power(weights, lam), 0.0)
        if not np.isfinite(p).all() or p.sum() <= 0:  # all free points coincide with chosen ones
            p = free.astype(float)
        nxt = int(rng.choice(n, p=p / p.sum()))
        chosen.append(nxt)
        free[nxt] = False
        weights = weights + dist2[nxt]
    return chosen


@register(
    "d2_coreset",
    paper="Roth et al. 2020, Revisiting Training Strategies in DML; Arthur & Vassilvitskii 2007, k-means++ (D2 sampling)",
    flags="--data_batchmatch_bigbs, --data_d2_coreset_lambda, --data_sampler_lowproj_dim, --data_sim_measure, "
    "--data_storage_no_update, --data_idx_full_prec, --data_mb_mom, --data_mb_lr",
    requires_storage=True,
)
class D2CoresetSampler(CoresetSampler):
    """Each batch: a random pool of ``--data_batchmatch_bigbs`` training images; D2
    sampling on their stored embeddings (see ``d2_coreset``) picks k = bs /
    samples_per_class of them; each pick is followed by samples_per_class - 1 other
    images of its class. Needs the embedding storage (see ``datasampler._storage``).

    Fixes of the Roth suite's version: the coreset positions were mapped through a second,
    unrelated random pool, and the Gaussian weights underflowed or crashed (see above).
    """

    def __init__(self, opt, labels):
        super().__init__(opt, labels)
        self.lam = float(opt.data_d2_coreset_lambda)

    def select(self, pool: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return pool[d2_coreset(self.features(pool, rng), self.k, self.lam, rng)]
