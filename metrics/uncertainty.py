"""Uncertainty metrics of probabilistic embeddings (Kirchhof et al. 2022; docs/running.md, metrics).

The certainty of an item is its embedding norm (= the vMF concentration kappa of EL-nivMF). "Correct" means the
query's nearest gallery neighbour (self excluded) shares its label; lone queries (no relevant gallery item) are
left out. The neighbour metrics below rate the queries of the split (``compute_metrics(..., queries=, gallery=)``,
by default every item); ``norms@q`` describes every item.

* ``norms@q``: the q-th percentile (1..100) of the embedding norms (every item).
* ``unc_auroc_cos`` / ``unc_auroc_l2`` / ``unc_auroc_ppk``: AUROC of the certainty for predicting a correct nearest
  neighbour under cosine / Euclidean / log-PPK (rho = 1 between vMF(e/||e||, ||e||) pairs, computed in row chunks
  sized to a 256 MB budget, but O(N^2) log-normaliser evaluations: opt-in, not in the EL-nivMF family's defaults)
  neighbours. NaN if every query is correct or every one wrong.
* ``unc_spearman``: Spearman correlation of certainty and cosine 1-NN correctness.
* ``unc_recall_area``: cosine Recall@1 of the kept queries after rejecting the x% least certain, averaged over
  keeping the n = 1..N most certain ones (area under the rejection curve; curve: ``rejection_curve``).
* ``unc_nw_acc@k`` / ``unc_nw_ll@k``: neighbour-weighted label probabilities from the k cosine neighbours,
  p_i(c) = (sum_{j in kNN(i)} ||e_j|| [y_j = c] + eps) / (sum_j ||e_j|| + eps * C) (eps = 1e-3, C = classes of
  the whole split): accuracy of argmax_c p_i(c) and mean log p_i(y_i).
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
    """[N] embedding norms of every item (of a ``Context`` or an [N, D] array)."""
    if isinstance(ctx_or_emb, Context):
        return ctx_or_emb.norms  # computed once per evaluated set
    return np.linalg.norm(np.asarray(ctx_or_emb, dtype=np.float64), axis=1)


def query_certainty(ctx: Context) -> np.ndarray:
    """[Q] the certainty (embedding norm) of each query."""
    return norms_of(ctx)[ctx.queries]


# Peak bytes of one row-chunk's temporaries per (query, item) pair: float64 k3 and PPK matrices plus the
# log-normaliser's internals (order broadcast, region masks, Debye terms). Measured about 100 B/pair (d = 32, norms
# over every region; up to ~150 with allocator slack, d = 8..512); tests/test_uncertainty_metrics.py checks the
# budget holds in a fresh process. 192 leaves a margin.
PPK_BYTES_PER_PAIR = 192
PPK_MAX_BYTES = 256 * 2**20  # memory budget of one chunk


def ppk_chunk_rows(n_items: int, max_bytes: int = PPK_MAX_BYTES) -> int:
    """Rows per chunk so that one chunk's temporaries (rows x n_items pairs) stay within ``max_bytes``."""
    return max(1, int(max_bytes) // (PPK_BYTES_PER_PAIR * max(1, int(n_items))))


def ppk_nearest_neighbour(embeddings: np.ndarray, max_bytes: int = PPK_MAX_BYTES, queries=None,
                          gallery=None) -> np.ndarray:  # fmt: skip
    """[Q] item index of the gallery item with the largest log PPK (rho = 1) to each query, the query excluded.

    log PPK(i, j) = log C_d(k_i) + log C_d(k_j) - log C_d(||e_i + e_j||) with k = ||e||. ``queries`` /
    ``gallery``: sorted item indices (None: every item). Row chunks of ``ppk_chunk_rows(G, max_bytes)`` rows bound
    the memory (256 MB by default: 29 rows at SOP's N = 60502); the compute stays O(Q G) log-normaliser
    evaluations (about 2.5e5 - 1e6 pairs/s on one CPU thread, so hours on SOP).
    """
    from utilities.vmf import log_vmf_norm

    e = torch.as_tensor(np.asarray(embeddings, dtype=np.float64))
    n, d = e.shape
    queries = np.arange(n) if queries is None else np.asarray(queries, dtype=np.int64)
    gallery = np.arange(n) if gallery is None else np.asarray(gallery, dtype=np.int64)
    column = np.full(n, -1)
    column[gallery] = np.arange(len(gallery))
    own = column[queries]  # the query's own gallery column, -1 when it is not in the gallery
    eg = e[torch.from_numpy(gallery)]
    chunk = ppk_chunk_rows(len(gallery), max_bytes)
    k = torch.linalg.vector_norm(eg, dim=1)
    logc = log_vmf_norm(k, d)
    sq, sq_q = k.pow(2), torch.linalg.vector_norm(e, dim=1).pow(2)
    out = np.empty(len(queries), dtype=np.int64)
    with torch.no_grad():
        for s in range(0, len(queries), chunk):
            rows = torch.from_numpy(queries[s : s + chunk])
            k3 = torch.addmm(sq_q[rows, None] + sq[None, :], e[rows], eg.T, alpha=2).clamp_min_(0).sqrt_()
            ppk = log_vmf_norm(k3, d).neg_().add_(logc[None, :])  # log C(k_i) is constant along the row
            del k3
            own_b = own[s : s + chunk]
            in_gallery = np.flatnonzero(own_b >= 0)
            ppk[in_gallery, own_b[in_gallery]] = -float("inf")
            out[s : s + chunk] = gallery[ppk.argmax(dim=1).numpy()]
    return out


def rejection_curve(certainty: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rejected share [N], Recall@1 of the kept queries [N]): keep the n most certain, n = N..1."""
    order = np.argsort(-certainty, kind="stable")
    kept_recall = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    n = len(order)
    return 1.0 - np.arange(1, n + 1) / n, kept_recall


def nn_correct(ctx: Context, geometry: str) -> np.ndarray:
    """[Q] bool: the query's nearest gallery neighbour in ``geometry`` shares its label."""
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
        return auroc(query_certainty(ctx)[keep], nn_correct(ctx, self.requires.geometry)[keep])


@register("unc_auroc_ppk", paper=PAPER)
class UncAurocPpk(Metric):
    def __init__(self, name, geometry, arg):
        self.name = name
        self.requires = Requires(embeddings=True)

    def __call__(self, ctx):
        nn = ppk_nearest_neighbour(ctx.embeddings, queries=ctx.queries, gallery=ctx.gallery)
        correct = ctx.labels[nn] == ctx.query_labels
        keep = ctx.not_lone
        return auroc(query_certainty(ctx)[keep], correct[keep])


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
        return float(spearmanr(query_certainty(ctx)[keep], correct).statistic)


@register("unc_recall_area", paper=PAPER, geometry="cosine")
class UncRecallArea(Metric):
    def __init__(self, name, geometry, arg):
        self.name = name
        self.requires = Requires(geometry=geometry, k=1, embeddings=True)

    def __call__(self, ctx):
        keep = ctx.not_lone
        if not keep.any():
            return float("nan")
        _, rec = rejection_curve(query_certainty(ctx)[keep], nn_correct(ctx, "cosine")[keep].astype(np.float64))
        return float(rec.mean())


def neighbour_label_probability(ctx: Context, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(argmax class == label [Q], log p_i(y_i) [Q]) from the k cosine neighbours weighted by their norms."""
    ids = ctx.neighbours["cosine"][:, :k]
    classes, item_class = np.unique(ctx.labels, return_inverse=True)
    y = item_class[ctx.queries]
    w = norms_of(ctx)[ids]  # [Q, k]
    probs = np.full((len(ids), len(classes)), EPS)
    np.add.at(probs, (np.repeat(np.arange(len(ids)), ids.shape[1]), item_class[ids].ravel()), w.ravel())
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
