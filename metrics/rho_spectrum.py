"""Roth suite's spectral decay ``rho_spectrum@k`` of the embedding matrix."""

from __future__ import annotations

import numpy as np

from metrics import register
from metrics._base import Context, Metric, Requires

PAPER = "Roth et al. 2020, Revisiting Training Strategies and Generalization Performance in Deep Metric Learning"


def singular_values(x: np.ndarray) -> np.ndarray:
    """Singular values of x [N, D], descending, via the D x D Gram matrix in float64 (memory O(D^2))."""
    x = np.asarray(x, dtype=np.float64)
    gram = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T
    eig = np.linalg.eigvalsh(gram)[::-1]
    return np.sqrt(np.clip(eig, 0.0, None))


def rho_spectrum(s: np.ndarray, k: int) -> float:
    """KL divergence between the normalised spectrum s[|k|-1:] / sum and the uniform distribution.

    k > 0: KL(uniform || s_norm) = sum_i u_i log(u_i / s_i); k < 0: KL(s_norm || uniform).
    Singular values are floored at 1e-12 * max so that a rank-deficient matrix gives a large,
    finite value instead of inf.
    """
    s = np.maximum(s, 1e-12 * max(float(s.max(initial=0.0)), 1e-30))[abs(k) - 1 :]
    p = s / s.sum()
    u = np.full(len(p), 1.0 / len(p))
    if k > 0:
        return float(np.sum(u * np.log(u / p)))
    return float(np.sum(p * np.log(p / u)))


@register("rho_spectrum", paper=PAPER, form="rho_spectrum@<k != 0>")
class RhoSpectrum(Metric):
    """rho_spectrum@k: how flat the singular-value spectrum of the embeddings [N, D] is.

    s = singular values of the (uncentred) embedding matrix, all min(N, D) of them (the
    Roth code keeps D - 1 via TruncatedSVD on CPU, all via torch.svd on GPU);
    s' = s[|k|-1:] / sum(s[|k|-1:]); k > 0: KL(uniform || s'), k < 0: KL(s' || uniform).
    Lower = more uniform spectrum. The Roth code returns the vector s' for k = 0; a metric is
    a number, so k = 0 is rejected.
    """

    arg_kind = "nonzero_int"

    def __init__(self, name: str, geometry: None, arg: int):
        self.name, self.k = name, arg
        self.requires = Requires(embeddings=True)

    def __call__(self, ctx: Context) -> float:
        s = singular_values(ctx.embeddings)
        if abs(self.k) > len(s):
            return float("nan")
        return rho_spectrum(s, self.k)
