"""Batches of minimal Frechet distance to the pool (Roth et al. 2020 suite)."""

from __future__ import annotations

import numpy as np
import torch

from datasampler import register
from datasampler._storage import BatchMatchSampler, add_storage_args


def add_args(parser) -> None:
    add_storage_args(parser)


def frechet_distances(mu: np.ndarray, cov: np.ndarray, mus: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """Frechet distance of N(mu, cov) to each N(mus[i], covs[i]):

        ||mu - mu_i||^2 + tr(C) + tr(C_i) - 2 tr((C C_i)^(1/2)),

    with tr((C C_i)^(1/2)) = sum sqrt(eig(C^(1/2) C_i C^(1/2))) (symmetric PSD, so an
    ``eigvalsh`` instead of the original's general ``sqrtm``)."""
    vals, vecs = np.linalg.eigh(cov)
    root = (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T
    inner = torch.as_tensor(root[None] @ covs @ root[None])
    eig = torch.linalg.eigvalsh((inner + inner.transpose(1, 2)) / 2).numpy()
    trace_sqrt = np.sqrt(np.clip(eig, 0.0, None)).sum(axis=1)
    diff = ((mus - mu[None]) ** 2).sum(axis=1)
    return diff + np.trace(cov) + np.trace(covs, axis1=1, axis2=2) - 2.0 * trace_sqrt


@register(
    "fid_batchmatch",
    paper="Roth et al. 2020, Revisiting Training Strategies in DML; Heusel et al. 2017 (Frechet distance)",
    flags="--data_batchmatch_bigbs, --data_batchmatch_ncomps, --data_sampler_lowproj_dim, --data_sim_measure, "
    "--data_storage_no_update, --data_idx_full_prec, --data_mb_mom, --data_mb_lr",
    requires_storage=True,
)
class FidBatchmatchSampler(BatchMatchSampler):
    """Batch matching (see ``datasampler._storage.BatchMatchSampler``) with cost = the
    Frechet distance between Gaussians fitted (mean, sample covariance) to the stored
    embeddings of the candidate batch and of the pool, as the Roth suite.
    """

    def cost(self, pool_x: np.ndarray, candidates: list[np.ndarray]) -> np.ndarray:
        def moments(x):
            return x.mean(axis=0), np.atleast_2d(np.cov(x.T)) if len(x) > 1 else np.zeros((x.shape[1],) * 2)

        mu, cov = moments(pool_x)
        stats = [moments(pool_x[c]) for c in candidates]
        mus, covs = np.stack([s[0] for s in stats]), np.stack([s[1] for s in stats])
        return frechet_distances(mu, cov, mus, covs)
