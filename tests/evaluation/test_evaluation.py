"""k-NN search, metric orchestration and embedding extraction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from torch.utils.data import DataLoader, Dataset

import evaluation
from evaluation import compute_metrics, extract_embeddings
from evaluation.knn import knn, max_neighbours, search, smallest_k
from utilities.errors import UserError


def random_points(n=300, dim=12, seed=0):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_excludes_self_even_with_duplicates(metric, backend):
    base = random_points(40, 5, seed=1)
    x = np.concatenate([base, base, base])  # every point has two exact copies
    k = 6
    dists, ids = knn(x, k, metric, backend=backend, chunk_size=17)
    n = len(x)
    assert ids.shape == (n, k) and dists.shape == (n, k) and ids.dtype == np.int64
    assert not np.any(ids == np.arange(n)[:, None])
    # the two copies of each point (distance 0) are its two nearest neighbours
    copies = np.sort(ids[:, :2], axis=1)
    expected = np.sort(np.stack([(np.arange(n) + 40) % n, (np.arange(n) + 80) % n], 1), axis=1)
    assert np.array_equal(copies, expected)
    assert np.allclose(dists[:, :2], 0.0, atol=1e-5)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_matches_naive_full_ranking(metric):
    x = random_points(200, 8, seed=2)
    dists, ids = knn(x, 10, metric)
    d = cdist(x.astype(np.float64), x.astype(np.float64), "sqeuclidean" if metric == "euclidean" else "cosine")
    np.fill_diagonal(d, np.inf)
    assert np.array_equal(ids, np.argsort(d, axis=1)[:, :10])
    assert np.allclose(dists, np.take_along_axis(d, ids, 1), atol=1e-4)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_torch_chunked_path_equals_faiss_path(metric):
    x = random_points(500, 16, seed=3) + 0.3
    d_faiss, i_faiss = knn(x, 25, metric, backend="faiss")
    for chunk in (1, 37, None):  # several blocks, a ragged last block, one block
        d_torch, i_torch = knn(torch.from_numpy(x), 25, metric, device="cpu", backend="torch", chunk_size=chunk)
        assert np.array_equal(i_torch, i_faiss)
        assert np.allclose(d_torch, d_faiss, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("as_tensor", [False, True])  # numpy: the CPU path; tensors: the CUDA path, run on the CPU
def test_smallest_k_is_the_head_of_a_stable_argsort(as_tensor):
    rng = np.random.default_rng(4)
    cases = []
    for m in (7, 300, 5000):
        s = rng.integers(-60, 60, size=(23, m)).astype(np.float32)  # many exact ties
        s[0, :6], s[0, 6:12] = -0.0, 0.0  # signed zeros are equal values
        s[1, :] = 3.0  # a constant row
        s[2, 1::2] = np.inf  # a row half inf
        cases += [(s, k) for k in {0, 1, 5, m // 2, m}]
    tricky = np.full((4, 4096), 5.0, dtype=np.float32) + rng.random((4, 4096), dtype=np.float32)
    tricky[:, ::8] = 0.0  # every sampled entry is the smallest: the sample's threshold admits 512 < k entries
    cases.append((tricky, 1000))
    for s, k in cases:
        values, cols = smallest_k(torch.from_numpy(s) if as_tensor else s, k)
        values, cols = np.asarray(values), np.asarray(cols)
        want = np.argsort(s, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(cols, want)
        np.testing.assert_array_equal(values, np.take_along_axis(s, want, 1))


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_search_queries_against_a_gallery_matches_the_naive_ranking(metric, backend):
    x = random_points(400, 10, seed=6) * np.random.default_rng(1).uniform(0.3, 3, (400, 1)).astype(np.float32)
    d = cdist(x.astype(np.float64), x.astype(np.float64), "sqeuclidean" if metric == "euclidean" else "cosine")
    rng = np.random.default_rng(2)
    splits = [(None, None), (np.arange(0, 400, 3), None), (None, np.arange(150, 400)),  # subsets, disjoint or not
              (np.arange(0, 200), np.arange(200, 400)), (rng.random(400) < 0.3, rng.random(400) < 0.6)]  # fmt: skip
    for queries, gallery in splits:
        q = np.arange(400) if queries is None else np.flatnonzero(queries) if queries.dtype == bool else queries
        g = np.arange(400) if gallery is None else np.flatnonzero(gallery) if gallery.dtype == bool else gallery
        dists, ids = search(x, {metric: 20}, queries=queries, gallery=gallery, backend=backend, block_rows=33,
                            distances=True)[metric]  # fmt: skip
        for row, i in enumerate(q):
            others = g[g != i]
            want = others[np.argsort(d[i, others], kind="stable")][:20]
            np.testing.assert_array_equal(ids[row], want)
            np.testing.assert_allclose(dists[row], d[i, want], atol=1e-4)
    assert max_neighbours(np.arange(3), np.arange(2, 9), 10) == 6  # query 2 is in the gallery of 7
    assert max_neighbours(np.arange(2), np.arange(2, 9), 10) == 7
    with pytest.raises(ValueError):
        search(x, {metric: 7}, queries=np.arange(3), gallery=np.arange(2, 9))


def test_search_selecting_with_torch_as_on_cuda_gives_the_same_neighbours(monkeypatch):
    """The CUDA path selects with torch ops on the score block; run it on the CPU against the numpy selection."""
    import evaluation.knn as knn_module

    x = random_points(3000, 12, seed=8)
    split = {"queries": np.arange(0, 3000, 2), "gallery": np.arange(500, 3000)}
    want = search(x, {"euclidean": 300, "cosine": 40}, **split, block_rows=700, distances=True)
    monkeypatch.setattr(knn_module, "_select_with_numpy", lambda device: False)
    got = search(x, {"euclidean": 300, "cosine": 40}, **split, block_rows=700, distances=True)
    for geometry in want:
        np.testing.assert_array_equal(got[geometry][1], want[geometry][1])
        np.testing.assert_array_equal(got[geometry][0], want[geometry][0])


def test_torch_and_faiss_backends_give_the_same_metrics():
    """Every neighbour metric of both geometries, self retrieval and a query/gallery split: the torch search (one
    Gram block for both geometries, the default) and faiss (a search per geometry) give the same numbers."""
    rng = np.random.default_rng(9)
    y = np.repeat(np.arange(90), rng.integers(1, 13, 90))
    x = (rng.normal(size=(90, 24))[y] + 1.2 * rng.normal(size=(len(y), 24))).astype(np.float32)
    x *= rng.uniform(0.5, 2, (len(y), 1)).astype(np.float32)
    names = (
        [f"{g}_recall@{k}" for g in "ec" for k in (1, 2, 4, 8)]
        + [f"{p}{m}" for p in ("", "c_") for m in ("map_at_r", "r_precision", "mAP_1000", "mAP_c", "mAP_lim")]
        + ["unc_auroc_cos", "unc_auroc_l2", "unc_spearman", "unc_recall_area", "unc_nw_acc@4", "unc_nw_ll@4"]
    )
    for split in ({}, {"queries": np.arange(0, len(y), 2), "gallery": np.arange(len(y) // 3, len(y))}):
        ours = compute_metrics(x, y, names, **split)
        assert compute_metrics(x, y, names, backend="faiss", **split) == pytest.approx(ours, abs=1e-12)
        assert 0.1 < ours["c_map_at_r"] < 0.9


# Values of the implementation before the one-pass search (faiss per geometry, commit 32d6fdf) on
# ``previous_values_set()``: the search, the metrics and their averages changed since; the numbers must not.
PREVIOUS_VALUES = {
    "e_recall@1": 0.39892665474060823, "e_recall@2": 0.5098389982110912, "e_recall@4": 0.6261180679785331,
    "e_recall@8": 0.7459749552772809, "c_recall@1": 0.4669051878354204, "c_recall@2": 0.59391771019678,
    "c_recall@4": 0.738819320214669, "c_recall@8": 0.853309481216458, "map_at_r": 0.16307086178789088,
    "r_precision": 0.22725020457578596, "mAP_1000": 0.23466623437152764, "mAP_c": 0.14478606511986258,
    "mAP_lim": 0.19956193304453762, "nmi": 0.6629505148035741, "f1": 0.1633408763628883,
    "c_map_at_r": 0.22480794906924978, "c_r_precision": 0.3058935250795716, "c_mAP_1000": 0.34060897662184536,
    "c_mAP_c": 0.20365255198114832, "c_mAP_lim": 0.2925921783828477, "c_nmi": 0.7040763713008024, "c_f1": 0.2112,
    "unc_auroc_cos": 0.5471212939391602, "unc_auroc_l2": 0.6282698056801196, "unc_spearman": 0.08143763967266279,
    "unc_recall_area": 0.5188899881745755, "unc_nw_acc@3": 0.4543828264758497, "unc_nw_ll@3": -3.67623348463978,
}  # fmt: skip


def previous_values_set():
    """565 items in 90 classes of 1..12, 16 dimensions, norms 0.5..2, ten exact duplicates (with their labels)."""
    rng = np.random.default_rng(2024)
    sizes = np.concatenate([rng.integers(2, 13, 84), np.ones(6, int)])
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = (rng.normal(size=(len(sizes), 16))[labels] + 1.1 * rng.normal(size=(len(labels), 16))).astype(np.float32)
    x *= rng.uniform(0.5, 2.0, size=(len(labels), 1)).astype(np.float32)
    src, dst = rng.choice(len(x), (2, 10), replace=False)
    x[dst], labels[dst] = x[src], labels[src]
    perm = rng.permutation(len(x))
    return x[perm], labels[perm]


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_values_equal_the_previous_implementation(backend):
    x, y = previous_values_set()
    out = compute_metrics(x, y, list(PREVIOUS_VALUES), backend=backend)
    assert out == pytest.approx(PREVIOUS_VALUES, rel=1e-12, abs=1e-15)


def test_knn_rejects_bad_k():
    with pytest.raises(ValueError):
        knn(random_points(5, 3), 5)


def test_compute_metrics_runs_one_knn_search_for_both_geometries_with_the_largest_k(monkeypatch):
    calls = []
    original = evaluation.knn_search

    def spy(x, ks, **kwargs):
        calls.append(dict(ks))
        return original(x, ks, **kwargs)

    monkeypatch.setattr(evaluation, "knn_search", spy)
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(20), rng.integers(1, 10, 20))  # largest class size <= 9
    x = rng.normal(size=(len(y), 6)).astype(np.float32)
    timings = {}
    names = ["e_recall@1", "e_recall@4", "e_recall@16", "map_at_r", "c_recall@2", "c_map_at_r", "nmi", "dists@intra"]
    out = compute_metrics(torch.from_numpy(x), torch.from_numpy(y), names, timings=timings)
    r_max = np.bincount(y).max() - 1
    assert calls == [{"euclidean": 16, "cosine": max(2, r_max)}]  # one search, one Gram block per query block
    assert list(out) == names and all(isinstance(v, float) for v in out.values())
    assert {"knn", "kmeans_euclidean", "metrics"} <= set(timings)
    # the same numbers from a numpy array and from separate calls (one metric at a time)
    for name in names:
        assert compute_metrics(x.astype(np.float64), y, [name])[name] == pytest.approx(out[name], abs=1e-12)


def test_compute_metrics_caps_k_at_split_size():
    x, y = random_points(6, 3), np.array([0, 0, 0, 1, 1, 1])
    out = compute_metrics(x, y, ["e_recall@32", "mAP_1000"])
    assert out["e_recall@32"] == 1.0  # every query sees all 5 others
    assert 0.0 < out["mAP_1000"] <= 1.0


def test_compute_metrics_input_errors_and_nan_embeddings():
    x = random_points(10, 3)
    with pytest.raises(UserError):
        compute_metrics(x, np.zeros(9, int), ["e_recall@1"])
    with pytest.raises(UserError):
        compute_metrics(x, np.zeros(10), ["e_recall@1"])  # float labels
    with pytest.raises(UserError, match="unknown metric 'bogus'"):
        compute_metrics(x, np.zeros(10, int), ["bogus"])
    x[3, 1] = np.nan
    with pytest.warns(UserWarning, match="NaN"):
        out = compute_metrics(x, np.arange(10) % 2, ["e_recall@1", "nmi"])
    assert all(math.isnan(v) for v in out.values())


# ---------------------------------------------------------------- extraction


class Indexed(Dataset):
    def __init__(self, n=37):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = torch.arange(n) % 5

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i], i


class TupleNet(torch.nn.Module):
    """Returns (embedding, features); dropout + batch norm make train and eval outputs differ."""

    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(4)
        self.drop = torch.nn.Dropout(0.5)
        self.fc = torch.nn.Linear(4, 3).double()

    def forward(self, x):
        feats = self.drop(self.bn(x))
        return self.fc(feats.double()), feats


def test_extract_embeddings_eval_mode_dataset_order_float32():
    torch.manual_seed(0)
    data, model = Indexed(), TupleNet()
    model.train()
    loader = DataLoader(data, batch_size=8, shuffle=True)
    emb, labels = extract_embeddings(model, loader, "cpu", amp="bf16", progress=False)  # amp is ignored on CPU
    assert model.training  # mode restored
    assert emb.dtype == torch.float32 and emb.device.type == "cpu" and labels.dtype == torch.long
    model.eval()
    with torch.no_grad():
        expected = model(data.x)[0].float()
    assert torch.allclose(emb, expected, atol=1e-6)  # eval-mode output, rows in dataset order
    assert torch.equal(labels, data.y)
    assert not emb.requires_grad
    # an (images, labels) loader keeps its own order
    pairs = DataLoader(torch.utils.data.TensorDataset(data.x.flip(0), data.y.flip(0)), batch_size=8)
    emb2, labels2 = extract_embeddings(model, pairs, "cpu", progress=False)
    assert torch.allclose(emb2, expected.flip(0), atol=1e-6) and torch.equal(labels2, data.y.flip(0))


def test_extract_embeddings_drops_repeated_indices():
    """A sampler that pads with repeats (as DistributedSampler does) must not duplicate rows."""
    data, model = Indexed(11), TupleNet().eval()
    order = [3, 7, 0, 10, 1, 2, 4, 5, 6, 8, 9, 3, 7]  # 3 and 7 twice
    emb, labels = extract_embeddings(model, DataLoader(data, batch_size=4, sampler=order), "cpu", progress=False)
    with torch.no_grad():
        expected = model(data.x)[0].float()
    assert emb.shape == (11, 3) and torch.allclose(emb, expected, atol=1e-6)
    assert torch.equal(labels, data.y)


def _ddp_worker(rank: int, world: int, port: int, out: str):
    import torch.distributed as dist
    from torch.utils.data.distributed import DistributedSampler

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        data, model = Indexed(37), TupleNet()  # 37 items on 2 ranks: the sampler pads one duplicate
        loader = DataLoader(data, batch_size=5, sampler=DistributedSampler(data, shuffle=True, seed=1))
        emb, labels = extract_embeddings(model, loader, "cpu", progress=False)
        if rank == 0:
            torch.save((emb, labels, model.eval()(data.x)[0].float().detach()), out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned gloo processes: ~15 s on 2 cores
def test_extract_embeddings_gathers_ddp_shards(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_ddp_worker, args=(2, port, out), nprocs=2, join=True)
    emb, labels, expected = torch.load(out)
    assert emb.shape == (37, 3)  # padding duplicate dropped, both shards present
    assert torch.allclose(emb, expected, atol=1e-6)
    assert torch.equal(labels, Indexed(37).y)
