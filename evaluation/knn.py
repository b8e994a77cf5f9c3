"""Exact k-nearest-neighbour search: queries against a gallery (by default every item against every other).

``search`` is the engine behind every neighbour metric: ONE pass over row blocks of the queries serves every
geometry asked for. Each block computes one Gram block ``G = X[queries] @ X[gallery].T`` (float32, TF32 off)
and ranks the gallery in each geometry from it:

* 'euclidean' (raw embeddings): by ``||g||^2 - 2 <q, g>`` (the squared distance less the query's own constant);
* 'cosine' (L2-normalised embeddings): by ``-<q, g> / ||g||`` (the cosine distance up to the query's positive
  factor ``1 / ||q||``; a zero row stays zero, as ``utilities.distances.l2_normalize``).

A query never retrieves itself: when it is in the gallery its own column is set to +inf before the selection
(so exact duplicates of it still count as neighbours). ``smallest_k`` selects each row's k smallest scores,
ascending, ties to the lower gallery position (the result of a stable argsort of the row), without sorting the
row: a threshold from a strided sample of the row bounds the k-th smallest value from above, every entry up to
it is a candidate, and only the candidates are sorted (a row whose sample threshold admits fewer than k
candidates falls back to its exact k-th value, so the result is exact in every case).

backend 'torch' (the default, CPU and CUDA) runs the above; 'faiss' runs ``faiss.knn`` per geometry on the CPU
(the suite's previous path, kept for cross-checks; it ranks by faiss's own float32 distances).
Memory: the embeddings, a few [block, G] score blocks (about 64 MB each on the CPU, 256 MB on CUDA) and the
[Q, k] outputs; never Q x G. ``knn_poincare`` searches points of a Poincare ball (the hyperbolic softmax's
geometry) the same way.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from metrics import GEOMETRIES
from utilities.distances import EPS, l2_normalize

SAMPLE_STRIDE = 8  # every 8th score of a row estimates its k-th smallest one


def as_numpy_float32(embeddings) -> np.ndarray:
    """[N, D] float32 C-contiguous numpy copy/view of a tensor or array."""
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(embeddings, dtype=np.float32)


def drop_self(dists: np.ndarray, ids: np.ndarray, first_row: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove each query's own index from its k+1 neighbours (the last one if self is absent).

    The queries are the rows ``first_row, first_row + 1, ...`` (an int) or the given row indices (an array).
    Dropping the index, not column 0, keeps exact duplicates of the query as neighbours
    even when the search returns one of them before the query itself.
    """
    n, k1 = ids.shape
    own = np.arange(first_row, first_row + n) if np.isscalar(first_row) else np.asarray(first_row)
    is_self = ids == own[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    return dists[keep].reshape(n, k1 - 1), ids[keep].reshape(n, k1 - 1)


@contextlib.contextmanager
def _exact_float32_matmul():
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _sample_threshold(k: int, m: int) -> int | None:
    """Rank (1-based) in a row's ``SAMPLE_STRIDE`` sample whose value about 1.25 k + 128 entries of the row do
    not exceed; None where the sample is too small to be worth it (then the exact k-th value is used)."""
    in_sample = -(-m // SAMPLE_STRIDE)
    rank = math.ceil(1.25 * k * in_sample / m) + 16
    return rank if m >= 2048 and rank < in_sample // 2 else None


def _order_keys(values: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """int64 keys that sort as (float32 value, column): the value's bits made order-preserving, then the column."""
    bits = (values + np.float32(0.0)).view(np.int32)  # + 0.0 turns -0.0 into +0.0 (equal values, equal keys)
    key = bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))
    return (key.astype(np.int64) << 32) | cols


def _key_values(keys: np.ndarray) -> np.ndarray:
    key = (keys >> 32).astype(np.int32)
    return (key ^ ((key >> 31) & np.int32(0x7FFFFFFF))).view(np.float32)


def _candidates_numpy(scores: np.ndarray, threshold: np.ndarray, mask: np.ndarray):
    np.less_equal(scores, threshold[:, None], out=mask)
    return np.divmod(np.flatnonzero(mask), scores.shape[1])  # (rows, columns), row-major


def _smallest_k_numpy(scores: np.ndarray, k: int, mask: np.ndarray | None = None):
    b, m = scores.shape
    mask = np.empty((b, m), bool) if mask is None else mask[:b]
    rank = _sample_threshold(k, m)
    if rank is None:
        threshold = np.partition(scores, k - 1, axis=1)[:, k - 1]
    else:
        threshold = np.partition(scores[:, ::SAMPLE_STRIDE], rank - 1, axis=1)[:, rank - 1]
    rows, cols = _candidates_numpy(scores, threshold, mask)
    counts = np.bincount(rows, minlength=b)
    short = np.flatnonzero(counts < k)
    if len(short):  # rare: the sample's threshold fell below the k-th value; those rows use the exact one
        sub = scores[short]
        sub_rows, sub_cols = _candidates_numpy(sub, np.partition(sub, k - 1, axis=1)[:, k - 1], mask[: len(short)])
        keep = counts[rows] >= k
        rows, cols = np.concatenate([rows[keep], short[sub_rows]]), np.concatenate([cols[keep], sub_cols])
        order = np.argsort(rows, kind="stable")
        rows, cols = rows[order], cols[order]
        counts = np.bincount(rows, minlength=b)
    slot = np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]
    keys = np.full((b, int(counts.max())), np.iinfo(np.int64).max, dtype=np.int64)
    keys[rows, slot] = _order_keys(scores[rows, cols], cols)
    keys = np.sort(keys, axis=1)[:, :k]  # distinct keys: the order is (value, column)
    return _key_values(keys), keys & 0xFFFFFFFF


def _smallest_k_torch(scores: torch.Tensor, k: int):
    b, m = scores.shape
    rank = _sample_threshold(k, m)
    if rank is None:
        threshold = torch.topk(scores, k, dim=1, largest=False, sorted=False).values.amax(dim=1)
    else:
        sample = scores[:, ::SAMPLE_STRIDE]
        threshold = torch.topk(sample, rank, dim=1, largest=False, sorted=False).values.amax(dim=1)
    counts = (scores <= threshold[:, None]).sum(dim=1)
    short = counts < k  # rare: the sample's threshold fell below the k-th value; those rows use the exact one
    if bool(short.any()):
        threshold[short] = torch.topk(scores[short], k, dim=1, largest=False, sorted=False).values.amax(dim=1)
    rows, cols = (scores <= threshold[:, None]).nonzero(as_tuple=True)
    counts = torch.bincount(rows, minlength=b)
    slot = torch.arange(len(rows), device=scores.device) - (torch.cumsum(counts, 0) - counts)[rows]
    values = torch.full((b, int(counts.max())), math.inf, dtype=scores.dtype, device=scores.device)
    columns = torch.full(values.shape, m, dtype=torch.long, device=scores.device)
    values[rows, slot] = scores[rows, cols]
    columns[rows, slot] = cols
    values, order = torch.sort(values, dim=1, stable=True)  # candidates are in column order: ties by column
    return values[:, :k], columns.gather(1, order[:, :k])


def smallest_k(scores, k: int, mask: np.ndarray | None = None):
    """(values, columns) [B, k] of the k smallest entries of every row of ``scores`` [B, M] (numpy array or torch
    tensor, float32, no NaN, k <= M), ascending, ties to the lower column: the first k of a stable argsort of
    each row, without sorting the rows.

    Candidates are the entries <= a per-row threshold: an order statistic of every ``SAMPLE_STRIDE``-th entry,
    chosen so that about 1.25 k + 128 entries of the row fall below it (or the row's exact k-th value, where the
    row is short or the sample's threshold admitted fewer than k entries). Every entry <= the threshold is a
    candidate, so the k smallest are among them, and only the candidates are sorted. numpy arrays (the CPU path:
    numpy's comparisons and partitions are several times faster than torch's there) use an int64 key per
    candidate, (order-preserving bits of the value) << 32 | column; tensors (CUDA) a stable sort.
    ``mask``: an optional bool buffer of at least [B, M] for the numpy path.
    """
    b, m = scores.shape
    if not 0 <= k <= m:
        raise ValueError(f"k must be in [0, {m}], got {k}")
    if isinstance(scores, torch.Tensor):
        if k == 0 or b == 0:
            return scores.new_empty((b, k)), torch.empty((b, k), dtype=torch.long, device=scores.device)
        return _smallest_k_torch(scores, k)
    if k == 0 or b == 0:
        return np.empty((b, k), scores.dtype), np.empty((b, k), np.int64)
    return _smallest_k_numpy(scores, k, mask)


def as_index(items, n: int, what: str) -> np.ndarray | None:
    """None (every item), a boolean mask [n] or item indices -> int64 indices (None stays None)."""
    if items is None:
        return None
    items = items.detach().cpu().numpy() if isinstance(items, torch.Tensor) else np.asarray(items)
    items = items.reshape(-1)
    if items.dtype == bool:
        if len(items) != n:
            raise ValueError(f"{what}: a boolean mask needs one entry per item ({n}), got {len(items)}")
        return np.flatnonzero(items)
    if len(items) and not np.issubdtype(items.dtype, np.integer):
        raise ValueError(f"{what}: needs a boolean mask or integer item indices, got dtype {items.dtype}")
    items = items.astype(np.int64)
    if len(items) and (items.min() < 0 or items.max() >= n):
        raise ValueError(f"{what}: item indices must be in [0, {n}), got {items.min()}..{items.max()}")
    return items


def self_columns(queries: np.ndarray | None, gallery: np.ndarray | None, n: int) -> np.ndarray:
    """[Q] the gallery position of each query's own item, -1 where the query is not in the gallery."""
    if gallery is None:
        return np.arange(n) if queries is None else queries.copy()
    position = np.full(n, -1, dtype=np.int64)
    position[gallery] = np.arange(len(gallery))
    return position if queries is None else position[queries]


def max_neighbours(queries: np.ndarray | None, gallery: np.ndarray | None, n: int) -> int:
    """The most neighbours every query can have: the gallery size, less one if some query is in the gallery."""
    size = n if gallery is None else len(gallery)
    return max(0, size - int((self_columns(queries, gallery, n) >= 0).any()))


def _select_with_numpy(device: torch.device) -> bool:
    """Whether the k smallest of a score block are selected by numpy (the CPU) or by torch (CUDA)."""
    return device.type == "cpu"


def _search_torch(x: np.ndarray, ks: dict, queries, gallery, device, block_rows, distances: bool) -> dict:
    n = len(x)
    xt = torch.from_numpy(x)
    xg = (xt if gallery is None else xt[torch.from_numpy(gallery)]).to(device)
    xq = xt if queries is None else xt[torch.from_numpy(queries)]
    own = torch.from_numpy(self_columns(queries, gallery, n))
    q, m = len(xq), len(xg)
    sq_g = (xg * xg).sum(dim=1)
    neg_inv_g = -1.0 / sq_g.sqrt().clamp_min(EPS)
    id_dtype = np.int32 if n < 2**31 else np.int64
    out = {g: (np.empty((q, k), np.float32) if distances else None, np.empty((q, k), id_dtype)) for g, k in ks.items()}
    budget = (1 << 26) if device.type == "cuda" else (1 << 24)  # elements of one [rows, G] score block
    step = max(1, min(q, block_rows or budget // max(1, m)))
    # score blocks reused from block to block (fresh pages of a new block would cost as much as the work on them)
    gram_buffer = torch.empty((step, m), dtype=torch.float32, device=device)
    scores_buffer = torch.empty((step, m), dtype=torch.float32, device=device) if "euclidean" in ks else None
    mask = np.empty((step, m), dtype=bool) if _select_with_numpy(device) else None
    with torch.no_grad(), _exact_float32_matmul():
        for s in range(0, q, step):
            xb = xq[s : s + step].to(device)
            b = len(xb)
            own_b = own[s : s + step].to(device)
            has_self = torch.nonzero(own_b >= 0).squeeze(1)
            gram = torch.mm(xb, xg.T, out=gram_buffer[:b])
            for geometry, k in ks.items():
                if geometry == "euclidean":
                    scores = torch.add(sq_g, gram, alpha=-2.0, out=scores_buffer[:b])
                else:  # cosine comes last (see ``search``): the Gram block is scaled in place
                    scores = gram.mul_(neg_inv_g)
                scores[has_self, own_b[has_self]] = math.inf
                if mask is None:
                    values, cols = smallest_k(scores, k)
                    values, cols = (values.cpu() if distances else None), cols.cpu().numpy()
                else:
                    values, cols = smallest_k(scores.numpy(), k, mask)
                    values = torch.from_numpy(values)
                out[geometry][1][s : s + b] = cols if gallery is None else gallery[cols]
                if distances:  # add back each query's own term (monotone, so the order stays)
                    xc = xb.cpu()
                    if geometry == "euclidean":
                        d = values.add_((xc * xc).sum(dim=1, keepdim=True)).clamp_min_(0.0)
                    else:
                        d = values.mul_(1.0 / torch.linalg.vector_norm(xc, dim=1, keepdim=True).clamp_min(EPS))
                        d = d.add_(1.0)
                    out[geometry][0][s : s + b] = d.numpy()
    return out


def _search_faiss(x: np.ndarray, ks: dict, queries, gallery, distances: bool) -> dict:
    import faiss  # only for this cross-check backend: a machine with only torch runs the default

    n = len(x)
    own_item = np.arange(n) if queries is None else queries
    extra = int((self_columns(queries, gallery, n) >= 0).any())  # one more, then drop the query itself
    out = {}
    for geometry, k in ks.items():
        xs = l2_normalize(x) if geometry == "cosine" else x
        xg = xs if gallery is None else np.ascontiguousarray(xs[gallery])
        xq = xs if queries is None else np.ascontiguousarray(xs[queries])
        faiss_metric = faiss.METRIC_INNER_PRODUCT if geometry == "cosine" else faiss.METRIC_L2
        dists = np.empty((len(xq), k), dtype=np.float32)
        ids = np.empty((len(xq), k), dtype=np.int64)
        rows = max(256, (1 << 22) // (k + 1))  # bounds the [rows, k+1] faiss outputs
        for s in range(0, len(xq), rows):
            d, i = faiss.knn(xq[s : s + rows], xg, k + extra, metric=faiss_metric)
            d = 1.0 - d if geometry == "cosine" else np.maximum(d, 0.0)
            i = i if gallery is None else gallery[i]
            if extra:
                d, i = drop_self(d, i, own_item[s : s + rows])
            dists[s : s + rows], ids[s : s + rows] = d, i
        out[geometry] = (dists if distances else None, ids)
    return out


def search(
    embeddings,
    ks: dict[str, int],
    *,
    queries=None,
    gallery=None,
    device: str | torch.device = "cpu",
    backend: str = "torch",
    block_rows: int | None = None,
    distances: bool = False,
) -> dict[str, tuple[np.ndarray | None, np.ndarray]]:
    """The k nearest gallery items of every query, in each geometry of ``ks`` (geometry -> k), in one pass.

    embeddings: [N, D] tensor or array. queries / gallery: None (every item), a boolean mask [N] or item
    indices; a query in the gallery never retrieves itself. device: where the torch backend runs. backend:
    'torch' or 'faiss' (CPU only; see the module docstring). block_rows: queries per block (default: a ~64 MB
    score block on the CPU, ~256 MB on CUDA). distances: also return the distances.

    Returns geometry -> (dists float32 [Q, k] or None, ids [Q, k] item indices, int32 below 2**31 items on the
    torch backend, int64 on faiss), nearest first, ties to the earlier gallery position: squared Euclidean
    distances for 'euclidean', cosine distances 1 - cos for 'cosine'. k may not exceed ``max_neighbours``.
    """
    for geometry in ks:
        if geometry not in GEOMETRIES:
            raise ValueError(f"metric must be one of {GEOMETRIES}, got {geometry!r}")
    x = as_numpy_float32(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {x.shape}")
    n = len(x)
    queries, gallery = as_index(queries, n, "queries"), as_index(gallery, n, "gallery")
    if gallery is not None and len(np.unique(gallery)) != len(gallery):
        raise ValueError("gallery: item indices must be distinct")
    available = max_neighbours(queries, gallery, n)
    for k in ks.values():
        if not 0 <= k <= available:
            raise ValueError(f"k must be in [0, {available}] (the neighbours every query can have), got {k}")
    device = torch.device(device)
    ks = {g: int(k) for g, k in ks.items() if g in GEOMETRIES}
    if backend == "faiss":
        return _search_faiss(x, ks, queries, gallery, distances)
    if backend == "torch":
        ordered = {g: ks[g] for g in GEOMETRIES if g in ks}  # euclidean first: cosine may scale the block in place
        return _search_torch(x, ordered, queries, gallery, device, block_rows, distances)
    raise ValueError(f"backend must be 'faiss' or 'torch', got {backend!r}")


def knn(
    embeddings,
    k: int,
    metric: str = "euclidean",
    device: str | torch.device = "cpu",
    *,
    backend: str | None = None,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of every row among the other rows (``search`` for one geometry).

    embeddings: [N, D] tensor or array. metric: 'euclidean' (raw vectors) or 'cosine'
    (L2-normalised vectors). backend: 'torch' (default) or 'faiss'. chunk_size: query rows per
    torch block (default: a ~64 MB block on CPU, ~256 MB on CUDA).

    Returns (dists float32 [N, k], ids int64 [N, k]), nearest first, self excluded:
    squared Euclidean distances for 'euclidean', cosine distances 1 - cos for 'cosine'.
    """
    if metric not in GEOMETRIES:
        raise ValueError(f"metric must be one of {GEOMETRIES}, got {metric!r}")
    x = as_numpy_float32(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {x.shape}")
    if not 0 <= k < len(x):
        raise ValueError(f"k must be in [0, N-1] = [0, {len(x) - 1}], got {k}")
    dists, ids = search(x, {metric: k}, device=device, backend=backend or "torch", block_rows=chunk_size,
                        distances=True)[metric]  # fmt: skip
    return dists, ids.astype(np.int64, copy=False)


def query_neighbours(embeddings, queries, k: int, metric: str = "euclidean") -> np.ndarray:
    """[len(queries), k] ids of the k nearest neighbours (self excluded) of the rows ``queries`` among all rows
    (``search``; 'euclidean' on the raw, 'cosine' on the L2-normalised embeddings); k is capped at N - 1."""
    if metric not in GEOMETRIES:
        raise ValueError(f"metric must be one of {GEOMETRIES}, got {metric!r}")
    x = as_numpy_float32(embeddings)
    queries = np.asarray(queries, dtype=np.int64).reshape(-1)
    ids = search(x, {metric: min(k, len(x) - 1)}, queries=queries)[metric][1]
    return ids.astype(np.int64, copy=False)


def knn_poincare(points: torch.Tensor, k: int, c: float, chunk: int | None = None, queries=None,
                 gallery=None) -> np.ndarray:  # fmt: skip
    """[Q, k] item indices of each query's k nearest gallery points (the query itself excluded) in the Poincare
    distance d(x, y) = 2/sqrt(c) artanh(sqrt(c) ||(-x) (+)_c y||), ranked by ||(-x) (+)_c y||^2 from the Gram
    matrix: with u = -x, v = y, ||(1 + 2c<u,v> + c||v||^2) u + (1 - c||u||^2) v||^2 / (1 + 2c<u,v> + c^2||u||^2||v||^2)^2.

    points: [N, d] inside the ball of curvature c (computed in float64). ``queries`` / ``gallery``: None (every
    point), a boolean mask or point indices; the rows follow ``queries``' order. Memory: a few [chunk, G] blocks.
    """
    x = torch.as_tensor(points).detach().cpu().double()
    n = len(x)
    queries, gallery = as_index(queries, n, "queries"), as_index(gallery, n, "gallery")
    rows = torch.arange(n) if queries is None else torch.from_numpy(queries)
    xg = x if gallery is None else x[torch.from_numpy(gallery)]
    own = torch.from_numpy(self_columns(queries, gallery, n))
    chunk = chunk or max(1, (1 << 21) // max(len(xg), 1))  # rows per block: a few [chunk, G] float64 temporaries
    sq, sq_g = (x * x).sum(1), (xg * xg).sum(1)
    out = np.empty((len(rows), k), dtype=np.int64)
    with torch.no_grad():
        for s in range(0, len(rows), chunk):
            block = rows[s : s + chunk]
            xy = x[block] @ xg.T  # [b, G]
            x2, y2 = sq[block, None], sq_g[None, :]
            a = 1 - 2 * c * xy + c * y2
            b = 1 - c * x2
            num = a * a * x2 - 2 * a * b * xy + b * b * y2
            den = 1 - 2 * c * xy + c * c * x2 * y2
            dist = num.clamp_min(0) / (den * den)
            own_b = own[s : s + chunk]
            has_self = torch.nonzero(own_b >= 0).squeeze(1)
            dist[has_self, own_b[has_self]] = math.inf
            cols = torch.topk(dist, k, dim=1, largest=False).indices.numpy()
            out[s : s + chunk] = cols if gallery is None else gallery[cols]
    return out
