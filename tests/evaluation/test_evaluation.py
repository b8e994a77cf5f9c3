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
from evaluation.knn import knn
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


def test_knn_rejects_bad_k():
    with pytest.raises(ValueError):
        knn(random_points(5, 3), 5)


def test_compute_metrics_runs_one_knn_per_geometry_with_the_largest_k(monkeypatch):
    calls = []
    original = evaluation._knn

    def spy(x, k, metric, device):
        calls.append((metric, k))
        return original(x, k, metric, device)

    monkeypatch.setattr(evaluation, "_knn", spy)
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(20), rng.integers(1, 10, 20))  # largest class size <= 9
    x = rng.normal(size=(len(y), 6)).astype(np.float32)
    timings = {}
    names = ["e_recall@1", "e_recall@4", "e_recall@16", "map_at_r", "c_recall@2", "c_map_at_r", "nmi", "dists@intra"]
    out = compute_metrics(torch.from_numpy(x), torch.from_numpy(y), names, timings=timings)
    r_max = np.bincount(y).max() - 1
    assert sorted(calls) == [("cosine", max(2, r_max)), ("euclidean", 16)]
    assert list(out) == names and all(isinstance(v, float) for v in out.values())
    assert {"knn_euclidean", "knn_cosine", "kmeans_euclidean", "metrics"} <= set(timings)
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
