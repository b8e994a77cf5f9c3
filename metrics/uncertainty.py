"""Uncertainty metrics of probabilistic embeddings (Kirchhof et al. 2022; DESIGN section 7).

The certainty of an item is its embedding norm (= the vMF concentration kappa of EL-nivMF). "Correct" means the
query's nearest neighbour (self excluded) shares its label; lone queries are left out.

* ``norms@q``: the q-th percentile (1..100) of the embedding norms.
* ``unc_auroc_cos`` / ``unc_auroc_l2`` / ``unc_auroc_ppk``: AUROC of the certainty for predicting a correct nearest
  neighbour under cosine / Euclidean / log-PPK (rho = 1 between vMF(e/||e||, ||e||) pairs, computed in row chunks,
  O(N^2) log-normaliser evaluations) neighbours. NaN if every query is correct or every one wrong.
* ``unc_spearman``: Spearman correlation of certainty and cosine 1-NN correctness.
* ``unc_recall_area``: cosine Recall@1 of the kept queries after rejecting the x% least certain, averaged over
  keeping the n = 1..N most certain ones (area under the rejection curve; curve: ``rejection_curve``).
* ``unc_nw_acc@k`` / ``unc_nw_ll@k``: neighbour-weighted label probabilities from the k cosine neighbours,
  p_i(c) = (sum_{j in kNN(i)} ||e_j|| [y_j = c] + eps) / (sum_j ||e_j|| + eps * C) (eps = 1e-3, C = classes of
  the split): accuracy of argmax_c p_i(c) and mean log p_i(y_i).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata, spearmanr

from metrics import register
from metrics._base import Context, Metric, Requires
from utilities.errors import UserError

PAPER = "Kirchhof et al. 2022, A Non-isotropic Probabilistic Take on Proxy-based Deep Metric Learning"
EPS = 1e-3


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the boolean ``positive`` (Mann-Whitney, ties averaged)."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def norms_of(ctx_or_emb) -> np.ndarray:
    emb = ctx_or_emb.embeddings if isinstance(ctx_or_emb, Context) else ctx_or_emb
    return np.linalg.norm(np.asarray(emb, dtype=np.float64), axis=1)


def ppk_nearest_neighbour(embeddings: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """[N] index of the item with the largest log PPK (rho = 1) to each item, self excluded."""
    from utilities.vmf import log_vmf_norm

    e = torch.as_tensor(np.asarray(embeddings, dtype=np.float64))
    n, d = e.shape
    k = torch.linalg.vector_norm(e, dim=1)
    logc = log_vmf_norm(k, d)
    sq = k.pow(2)
    out = np.empty(n, dtype=np.int64)
    for s in range(0, n, chunk):
        k3 = (sq[s : s + chunk, None] + sq[None, :] + 2 * e[s : s + chunk] @ e.T).clamp_min(0).sqrt()
        ppk = logc[s : s + chunk, None] + logc[None, :] - log_vmf_norm(k3, d)
        ppk[torch.arange(len(ppk)), torch.arange(s, s + len(ppk))] = -float("inf")
        out[s : s + chunk] = ppk.argmax(dim=1).numpy()
    return out


def rejection_curve(certainty: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rejected share [N], Recall@1 of the kept queries [N]): keep the n most certain, n = N..1."""
    order = np.argsort(-certainty, kind="stable")
    kept_recall = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    n = len(order)
    return 1.0 - np.arange(1, n + 1) / n, kept_recall


def nn_correct(ctx: Context, geometry: str) -> np.ndarray:
    return ctx.hits(geometry)[:, 0]


@register("norms", paper=PAPER, form="norms@<q>")
class Norms(Metric):
    arg_kind = "int"

    def __init__(self, name, geometry, q):
        if q > 100:
            raise UserError(f"metric '{name}': the percentile must be in 1..100")
        self.name, self.q = name, q
        self.requires = Requires(embeddings=True)

    def __call__(self, ctx):
        return float(np.percentile(norms_of(ctx), self.q))


@register("unc_auroc_cos", paper=PAPER, geometry="cosine")
@register("unc_auroc_l2", paper=PAPER, geometry="euclidean")
class UncAuroc(Metric):
    def __init__(self, name, geometry, arg):
        self.name = name
        self.requires = Requires(geometry=geometry, k=1, embeddings=True)

    def __call__(self, ctx):
        keep = ctx.not_lone
        return auroc(norms_of(ctx)[keep], nn_correct(ctx, self.requires.geometry)[keep])


@register("unc_auroc_ppk", paper=PAPER)
class UncAurocPpk(Metric):
    def __init__(self, name, geometry, arg):
        self.name = name
        self.requires = Requires(embeddings=True)

    def __call__(self, ctx):
        nn = ppk_nearest_neighbour(ctx.embeddings)
        correct = ctx.labels[nn] == ctx.labels
        keep = ctx.not_lone
        return auroc(norms_of(ctx)[keep], correct[keep])


@register("unc_spearman", paper=PAPER, geometry="cosine")
class UncSpearman(Metric):
    def __init__(self, name, geometry, arg):
        self.name = name
        self.requires = Requires(geometry=geometry, k=1, embeddings=True)

    def __call__(self, ctx):
        keep = ctx.not_lone
        correct = nn_correct(ctx, "cosine")[keep]
        if correct.all() or not correct.any():
            return float("nan")
        return float(spearmanr(norms_of(ctx)[keep], correct).statistic)


@register("unc_recall_area", paper=PAPER, geometry="cosine")
class UncRecallArea(Metric):
    def __init__(self, name, geometry, arg):
        self.name = name
        self.requires = Requires(geometry=geometry, k=1, embeddings=True)

    def __call__(self, ctx):
        keep = ctx.not_lone
        if not keep.any():
            return float("nan")
        _, rec = rejection_curve(norms_of(ctx)[keep], nn_correct(ctx, "cosine")[keep].astype(np.float64))
        return float(rec.mean())


def neighbour_label_probability(ctx: Context, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(argmax class == label [N], log p_i(y_i) [N]) from the k cosine neighbours weighted by their norms."""
    ids = ctx.neighbours["cosine"][:, :k]
    classes, y = np.unique(ctx.labels, return_inverse=True)
    w = norms_of(ctx)[ids]  # [N, k]
    probs = np.full((len(ids), len(classes)), EPS)
    np.add.at(probs, (np.repeat(np.arange(len(ids)), ids.shape[1]), y[ids].ravel()), w.ravel())
    probs /= probs.sum(axis=1, keepdims=True)
    return probs.argmax(1) == y, np.log(probs[np.arange(len(y)), y])


@register("unc_nw_acc", paper=PAPER, geometry="cosine", form="unc_nw_acc@<k>")
@register("unc_nw_ll", paper=PAPER, geometry="cosine", form="unc_nw_ll@<k>")
class NeighbourWeighted(Metric):
    arg_kind = "int"

    def __init__(self, name, geometry, k):
        self.name, self.k = name, k
        self.requires = Requires(geometry=geometry, k=k, embeddings=True)

    def __call__(self, ctx):
        acc, ll = neighbour_label_probability(ctx, self.k)
        keep = ctx.not_lone
        vals = acc if self.name.startswith("unc_nw_acc") else ll
        return float(np.mean(vals[keep])) if keep.any() else float("nan")
