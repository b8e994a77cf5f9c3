"""vMF softmax (Scott et al. 2021): loss vs naive loops / scipy / mpmath, scale, param groups, ECE, recall, runs."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from scipy.special import ive
from scipy.stats import spearmanr
from torch import nn

import criteria
import main
import parameters
from criteria._vmf_eval import ece_l1, ece_rms, majority_vote_recall_at_1
from criteria.vmf_softmax import kappa_sigma
from evaluation import extract_embeddings
from utilities.trainer import Trainer, build_optimizer, eval_loader, model_param_groups


def make(extra=(), n_classes=4):
    opt = parameters.parse_args(["--loss", "vmf_softmax", *extra])
    opt.n_classes = n_classes
    return opt, criteria.select("vmf_softmax", opt)


def unit_samples(s, b, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(s, b, d, generator=g, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


# --------------------------------------------------------------------------- loss vs naive formula
def log_c3(k):  # d = 3: I_{1/2}(k) = sqrt(2 / (pi k)) sinh k, so log C_3(k) = log k - log(4 pi) - log sinh k
    return torch.log(k) - math.log(4 * math.pi) - (k + torch.log1p(-torch.exp(-2 * k)) - math.log(2.0))


def a3(k):  # A_3(k) = coth k - 1/k
    return 1.0 / torch.tanh(k) - 1.0 / k


def naive_loss_d3(z_raw, labels, w, temp, scale, samples):
    """Per-example loop of the paper's formula with the d = 3 closed forms (independent of utilities.vmf)."""
    beta = torch.exp(-temp)
    total = 0.0
    for i in range(len(labels)):
        z = scale * z_raw[i]
        k, mu = z.norm(), z / z.norm()
        lse = []
        for s in range(samples.shape[0]):
            t = torch.stack([log_c3(w[c].norm()) - log_c3((w[c] + beta * samples[s, i]).norm()) for c in range(len(w))])
            mx = t.max()
            lse.append(mx + torch.log(torch.exp(t - mx).sum()))
        wy = w[labels[i]]
        total = total + torch.stack(lse).mean() - beta * a3(k) * a3(wy.norm()) * (mu @ (wy / wy.norm()))
    return total / len(labels)


def test_loss_and_gradients_match_naive_loop_d3():
    opt, crit = make(["--embed_dim", "3", "--learn_temp", "--init_temp", "-0.3"], n_classes=4)
    crit = crit.double()
    crit.scale.fill_(2.5)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    samples = unit_samples(4, 6, 3, 1)
    loss = crit(z, y, samples=samples)
    loss.backward()
    w = crit.class_weights.detach().clone().requires_grad_(True)
    temp = crit.temp.detach().clone().requires_grad_(True)
    z2 = z.detach().clone().requires_grad_(True)
    ref = naive_loss_d3(z2, y, w, temp, 2.5, samples)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    torch.testing.assert_close(z.grad, z2.grad, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(crit.class_weights.grad, w.grad, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(crit.temp.grad, temp.grad, rtol=1e-8, atol=1e-12)


def test_loss_matches_scipy_for_d5():
    d = 5
    _, crit = make(["--embed_dim", str(d), "--init_temp", "0.4"], n_classes=3)
    crit = crit.double()
    crit.scale.fill_(1.7)
    z = torch.randn(5, d, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 1, 0])
    samples = unit_samples(3, 5, d, 3)
    got = crit(z, y, samples=samples).item()

    v = d / 2 - 1

    def log_c(k):
        return v * np.log(k) - d / 2 * np.log(2 * np.pi) - np.log(ive(v, k)) - k

    def a(k):
        return ive(d / 2, k) / ive(v, k)

    w, s, beta = crit.class_weights.detach().numpy(), samples.numpy(), crit.beta.item()
    total = 0.0
    for i in range(5):
        zi = 1.7 * z[i].numpy()
        k = np.linalg.norm(zi)
        lse = [np.logaddexp.reduce([log_c(np.linalg.norm(wc)) - log_c(np.linalg.norm(wc + beta * s[j, i])) for wc in w])
               for j in range(3)]  # fmt: skip
        wy = w[y[i]]
        total += np.mean(lse) - beta * a(k) * a(np.linalg.norm(wy)) * (zi / k) @ (wy / np.linalg.norm(wy))
    assert got == pytest.approx(total / 5, rel=1e-10)


def test_log_partition_matches_mpmath():
    d = 4
    _, crit = make(["--embed_dim", str(d), "--init_temp", "-1.0"], n_classes=3)
    crit = crit.double()
    with torch.no_grad():
        crit.class_weights.mul_(4.0)
    samples = unit_samples(2, 2, d, 5)
    got = crit.log_partition(samples)
    mpmath.mp.dps = 30
    v = d / 2 - 1

    def log_c(k):
        k = mpmath.mpf(float(k))
        return v * mpmath.log(k) - d / 2 * mpmath.log(2 * mpmath.pi) - mpmath.log(mpmath.besseli(v, k))

    beta = crit.beta.item()
    w = crit.class_weights.detach()
    for s in range(2):
        for b in range(2):
            ref = mpmath.log(sum(mpmath.exp(log_c(wc.norm()) - log_c((wc + beta * samples[s, b]).norm())) for wc in w))
            assert got[s, b].item() == pytest.approx(float(ref), rel=1e-12)


# --------------------------------------------------------------------------- scale, groups, state
def test_prepare_sets_scale_from_mean_absolute_coordinate():
    _, crit = make(["--embed_dim", "3", "--kappa_confidence", "0.4"])
    outs = [torch.tensor([[1.0, -2.0, 3.0], [0.0, 0.5, -0.5]]), torch.tensor([[-1.0, 1.0, 1.0]])]
    loader = [(o, torch.zeros(len(o)), torch.arange(len(o))) for o in outs]
    crit.prepare(nn.Identity(), loader, torch.device("cpu"))
    m = (1 + 2 + 3 + 0 + 0.5 + 0.5 + 1 + 1 + 1) / 9
    expected = (1 / m) * 0.4 / (1 - 0.16) * 2 / math.sqrt(3)
    assert crit.scale.item() == pytest.approx(expected, rel=1e-6)
    assert "scale" in crit.state_dict() and "temp" in crit.state_dict()  # buffers: saved with the model
    # class-weight init: N(0, sigma^2), sigma = r/(1-r^2)(d-1)/sqrt(d)
    _, big = make(["--embed_dim", "16", "--kappa_confidence", "0.7"], n_classes=2000)
    sigma = 0.7 / (1 - 0.49) * 15 / 4
    assert big.class_weights.std().item() == pytest.approx(sigma, rel=0.02)


class BNNet(nn.Module):
    """Linear -> BatchNorm1d -> ReLU -> Linear, with a dropout-free train mode."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(4)
        self.fc1, self.bn, self.fc2 = nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)
        with torch.no_grad():
            for p in (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias, self.bn.weight, self.bn.bias):
                p.copy_(torch.randn(p.shape, generator=g))
            self.bn.running_mean.fill_(0.3)
            self.bn.running_var.fill_(2.0)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def by_hand_batch_stats(net, x):
    """f(x) with BatchNorm using the batch's mean and biased variance (eps 1e-5), numpy."""
    w1, b1 = net.fc1.weight.detach().numpy(), net.fc1.bias.detach().numpy()
    w2, b2 = net.fc2.weight.detach().numpy(), net.fc2.bias.detach().numpy()
    gamma, beta = net.bn.weight.detach().numpy(), net.bn.bias.detach().numpy()
    h = x @ w1.T + b1
    h = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5) * gamma + beta
    return np.maximum(h, 0) @ w2.T + b2


@pytest.mark.parametrize("start_mode", ["eval", "train"])
def test_prepare_uses_batch_statistics_in_batches_of_256_and_restores_bn(start_mode):
    """As the original's set_z_kappa_mult_vmf (arch.train(True), sequential batches of 256): m from train-mode
    BatchNorm. Here 600 images arrive in loader batches of 100 and are regrouped 256, 256, 88."""
    _, crit = make(["--embed_dim", "3", "--kappa_confidence", "0.4"])
    net = BNNet().train(start_mode == "train")
    x = torch.randn(600, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64).float() * 3 + 2
    loader = [(x[i : i + 100], torch.zeros(100), torch.arange(100)) for i in range(0, 600, 100)]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    crit.prepare(net, loader, torch.device("cpu"))
    xs = x.double().numpy()
    outs = [by_hand_batch_stats(net, xs[a:b]) for a, b in ((0, 256), (256, 512), (512, 600))]
    m = np.abs(np.concatenate(outs)).mean()
    assert crit.scale.item() == pytest.approx(0.4 / (1 - 0.16) * 2 / math.sqrt(3) / m, rel=1e-5)
    with torch.no_grad():
        m_eval = net.eval()(x).abs().mean().item()
    assert abs(m_eval / m - 1) > 0.2  # eval-mode statistics would give another scale
    net.train(start_mode == "train")
    for k, v in net.state_dict().items():  # running statistics (and num_batches_tracked) untouched
        assert torch.equal(v, before[k]), k
    assert net.training == (start_mode == "train") and net.bn.training == (start_mode == "train")


def test_prepare_merges_a_last_single_image_and_keeps_frozen_bn():
    """257 images: one batch of 257 (a BatchNorm1d batch of one is impossible); a BN layer kept in eval mode
    by the architecture (``--set_bn_eval``) keeps using its running statistics."""
    _, crit = make(["--embed_dim", "3"])
    net = BNNet()
    x = torch.randn(257, 4, generator=torch.Generator().manual_seed(6))
    crit.prepare(net, [(x, None)], torch.device("cpu"))
    m = np.abs(by_hand_batch_stats(net, x.double().numpy())).mean()
    assert crit.scale.item() == pytest.approx(kappa_sigma(0.4, 3) / m, rel=1e-5)

    class FrozenBN(BNNet):
        def train(self, mode=True):
            super().train(mode)
            self.bn.eval()
            return self

    frozen = FrozenBN()
    crit.prepare(frozen, [(x, None)], torch.device("cpu"))
    with torch.no_grad():
        m_eval = frozen.eval()(x).abs().mean().item()
    assert crit.scale.item() == pytest.approx(kappa_sigma(0.4, 3) / m_eval, rel=1e-5)


def test_param_groups_decay_lr_and_momentum():
    opt, crit = make(["--embed_dim", "3", "--learn_temp", "--optim", "sgd", "--lr", "0.5", "--temp_lr", "0.01",
                      "--momentum", "0.9", "--decay", "0.1"])  # fmt: skip
    model = nn.Linear(2, 3)
    optimizer = build_optimizer(model_param_groups(model, opt) + crit.param_groups(), opt)
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert by_name["backbone"]["weight_decay"] == 0.1 and by_name["backbone"]["momentum"] == 0.9
    assert by_name["vmf_class_weights"]["weight_decay"] == 0.0 and by_name["vmf_class_weights"]["lr"] == 0.5
    temp = by_name["temperature"]
    assert temp["lr"] == 0.01 and temp["momentum"] == 0.0 and temp["weight_decay"] == 0.0
    assert temp["params"][0] is crit.temp
    for _ in range(3):  # no momentum: every step moves temp by exactly lr * grad
        before = crit.temp.item()
        optimizer.zero_grad()
        (2.0 * crit.temp).backward()
        optimizer.step()
        assert crit.temp.item() == pytest.approx(before - 0.01 * 2.0, abs=1e-7)
    _, fixed = make(["--embed_dim", "3"])
    assert [g["name"] for g in fixed.param_groups()] == ["vmf_class_weights"]


# --------------------------------------------------------------------------- evaluation helpers
def naive_ece(probs, labels, equal_mass):
    conf, pred = probs.max(1), probs.argmax(1)
    n = len(conf)
    total = 0.0
    if equal_mass:  # the original's calc_ece_em_quant: i-th smallest confidence -> bin min(14, floor(i / n * 15))
        order = sorted(range(n), key=lambda i: (conf[i], i))
        bins = {}
        for rank, i in enumerate(order):
            bins.setdefault(min(14, math.floor(rank / n * 15)), []).append(i)
        for idx in bins.values():
            acc = sum(pred[i] == labels[i] for i in idx) / len(idx)
            total += len(idx) * abs(acc - sum(conf[i] for i in idx) / len(idx)) ** 2
        return math.sqrt(total / n)
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        idx = [i for i in range(n) if (lo < conf[i] <= hi) or (b == 0 and conf[i] == 0)]
        if idx:
            acc = sum(pred[i] == labels[i] for i in idx) / len(idx)
            total += len(idx) / n * abs(acc - sum(conf[i] for i in idx) / len(idx))
    return total


def test_ece_forms_match_naive_loops():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(5, 0.4), size=203)
    labels = np.where(rng.random(203) < 0.6, probs.argmax(1), rng.integers(0, 5, 203))
    assert ece_l1(probs, labels) == pytest.approx(naive_ece(probs, labels, False), abs=1e-12)
    assert ece_rms(probs, labels) == pytest.approx(naive_ece(probs, labels, True), abs=1e-12)
    assert ece_l1(probs, labels) > 0.01
    # 203 = 15 * 13 + 8: the original's bins hold 13 or 14 items in an interleaved pattern, unlike
    # np.array_split's 8 bins of 14 first; the two binnings give different values here.
    conf, correct = probs.max(1), (probs.argmax(1) == labels).astype(float)
    chunks = np.array_split(np.argsort(conf, kind="stable"), 15)
    split_rms = math.sqrt(sum(len(c) / 203 * (correct[c].mean() - conf[c].mean()) ** 2 for c in chunks))
    assert abs(ece_rms(probs, labels) - split_rms) > 1e-4


def test_majority_vote_recall_ties_count_wrong():
    def circle(deg):
        r = np.deg2rad(np.asarray(deg, dtype=np.float64))
        return np.stack([np.cos(r), np.sin(r)], 1).astype(np.float32)

    labels = np.array([0, 0, 1, 1])
    good = circle([0, 10, 90, 100])  # every nearest neighbour has the query's label
    bad = circle([0, 90, 10, 100])  # every nearest neighbour has the other label
    assert majority_vote_recall_at_1([good], labels) == 1.0
    assert majority_vote_recall_at_1([good, bad], labels) == 0.0  # 1:1 tie -> wrong
    assert majority_vote_recall_at_1([good, bad, good], labels) == 1.0
    assert majority_vote_recall_at_1([bad, bad, good], labels) == 0.0
    mixed = circle([0, 10, 60, 150])  # query 2 (60 deg) -> query 1 (10 deg): wrong; query 3 -> query 2: right
    # votes: q0 [T,F,T] q1 [T,F,T] q2 [T,F,F] q3 [T,F,T]
    assert majority_vote_recall_at_1([good, bad, mixed], labels) == 0.75


def nn_labels_by_loop(points, labels):
    """Label of each point's nearest other point by cosine similarity (plain loop)."""
    out = []
    for i, p in enumerate(points):
        sims = [
            -np.inf if j == i else float(p @ q / np.linalg.norm(p) / np.linalg.norm(q)) for j, q in enumerate(points)
        ]
        out.append(labels[int(np.argmax(sims))])
    return np.array(out)


def test_majority_vote_is_the_mode_of_per_set_correctness():
    """The original (evaluate.open_set_val_loop, compute_vmf_performance_metrics.recall_at_1): per set, is the
    nearest neighbour's label right; then scipy.stats.mode over the sets (ties -> False) and the mean."""
    from scipy.stats import mode

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(4), 6)  # 4 classes
    centres = rng.normal(size=(4, 3))
    base = centres[labels] + 0.9 * rng.normal(size=(24, 3))
    sets = [(base + 0.9 * rng.normal(size=base.shape)).astype(np.float32) for _ in range(10)]
    retrieved = np.stack([nn_labels_by_loop(s, labels) for s in sets])  # [10, N]
    reference = float(np.mean(mode((retrieved == labels).astype(int), axis=0).mode))  # ties -> 0 (False)
    assert majority_vote_recall_at_1(sets, labels) == pytest.approx(reference, abs=1e-12)
    # the data contain queries where the two rules differ: a plurality of right labels without a majority
    plurality = []
    for row, y in zip(retrieved.T, labels, strict=True):
        values, counts = np.unique(row, return_counts=True)
        top = counts == counts.max()
        plurality.append(top.sum() == 1 and values[top][0] == y)
    assert np.mean(plurality) > reference


def test_majority_vote_plurality_without_majority_is_wrong():
    """3 classes, points in tight pairs (nearest neighbour = pair partner). With 4 sets A0 retrieves labels
    0, 0, 1, 2: the label plurality is right, but only 2 of 4 sets are correct (a tie) -> wrong."""
    names = ["A0", "A1", "B0", "B1", "C0", "C1"]
    labels = np.array([0, 0, 1, 1, 2, 2])

    def pairing(*pairs):
        x = np.zeros((6, 2), dtype=np.float32)
        for k, (p, q) in enumerate(pairs):
            for name, deg in ((p, 120 * k), (q, 120 * k + 5)):
                x[names.index(name)] = [np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))]
        return x

    same = pairing(("A0", "A1"), ("B0", "B1"), ("C0", "C1"))
    mix1 = pairing(("A0", "B0"), ("A1", "C0"), ("B1", "C1"))
    mix2 = pairing(("A0", "C0"), ("A1", "B0"), ("B1", "C1"))
    assert list(nn_labels_by_loop(mix1, labels)[:2]) == [1, 2] and list(nn_labels_by_loop(mix2, labels)[:2]) == [2, 1]
    # every query is right in 2 of 4 sets: a tie, wrong (a label plurality vote would give A0, A1 right: 1/3)
    assert majority_vote_recall_at_1([same, same, mix1, mix2], labels) == 0.0
    assert majority_vote_recall_at_1([same, same, same, mix1, mix2], labels) == 1.0  # 3 of 5: right
    assert majority_vote_recall_at_1([same, mix1, mix2], labels) == 0.0  # 1 of 3


# --------------------------------------------------------------------------- end-to-end runs
MNIST_RECIPE = ["--loss", "vmf_softmax", "--optim", "sgd", "--lr", "1.0", "--nesterov", "--momentum", "0.99",
                "--temp_lr", "0.001", "--embed_dim", "3", "--learn_temp", "--data_sampler", "episodic",
                "--n_episodes", "5", "--episode_classes", "10", "--episode_samples", "13", "--dataset", "digits",
                "--digits_split", "classification", "--n_epochs", "1", "--no_progress", "--no_train_metrics",
                "--evaluation_metrics", "e_recall@1"]  # fmt: skip


def run_dir(tmp_path):
    (d,) = list((tmp_path / "runs" / "digits").iterdir())
    return d


def no_plots(monkeypatch) -> None:
    """Skip the run-end figures (matplotlib, seconds per run; covered by the plotting tests)."""
    monkeypatch.setattr(Trainer, "plot", lambda self: None)
    monkeypatch.setattr(Trainer, "plot_uncertainty", lambda self: None)


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mnist_recipe")
    with pytest.MonkeyPatch.context() as mp:
        no_plots(mp)
        assert main.main(["--save_path", str(tmp / "runs"), *MNIST_RECIPE]) == 0
    return run_dir(tmp)


def test_mnist_recipe_runs_and_reports_vmf_metrics(mnist_run):
    d = mnist_run
    header = (d / "metrics_testing.csv").read_text().splitlines()[0].split(",")
    for key in ("accuracy", "ece", "ece_rms", "vmf_recall@1", "vmf_map_at_r", "vmf_mean_kappa"):
        assert key in header
    npz = np.load(d / "embeddings_testing.npz")
    assert npz["class_weights"].shape == (10, 3) and npz["vmf_scale"] > 0 and npz["temperature"] > 0
    np.testing.assert_allclose(npz["class_kappa"], np.linalg.norm(npz["class_weights"].astype(np.float64), axis=1),
                               rtol=1e-6)  # fmt: skip
    state = torch.load(d / "checkpoint_last.pth", weights_only=False)
    assert state["criterion"]["scale"].item() == pytest.approx(float(npz["vmf_scale"]))


def test_npz_holds_per_image_kappa(mnist_run):
    for split in ("validation", "testing"):
        npz = np.load(mnist_run / f"embeddings_{split}.npz")
        assert npz["kappa"].shape == npz["labels"].shape
        np.testing.assert_allclose(npz["kappa"], float(npz["vmf_scale"]) * npz["norms"], rtol=1e-5)


def test_export_per_image_kappa_and_class_kappa():
    _, crit = make(["--embed_dim", "4"], n_classes=3)
    crit.scale.fill_(2.5)
    emb = torch.tensor([[3.0, 0.0, 4.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_allclose(crit.export_embeddings(emb)["kappa"], [12.5, 5.0], rtol=1e-6)
    out = crit.export()
    w = crit.class_weights.detach().double().numpy()
    np.testing.assert_allclose(out["class_kappa"], [math.sqrt(sum(v * v for v in row)) for row in w], rtol=1e-6)
    assert out["vmf_scale"] == pytest.approx(2.5)


def small_digits(monkeypatch, per_class: int = 30) -> None:
    """--dataset digits reads only the first ``per_class`` images of each class (fast ResNet50 runs)."""
    from sklearn.datasets import load_digits
    from sklearn.utils import Bunch

    import datasets.digits

    full = load_digits()
    keep = np.concatenate([np.flatnonzero(full.target == c)[:per_class] for c in range(10)])
    monkeypatch.setattr(
        datasets.digits, "load_digits", lambda: Bunch(images=full.images[keep], target=full.target[keep])
    )


CIFAR_RECIPE = ["--loss", "vmf_softmax", "--optim", "sgd", "--lr", "0.5", "--momentum", "0.9", "--temp_lr", "0.001",
                "--decay", "0.0001", "--arch", "resnet50", "--first_conv_3x3", "--not_pretrained", "--embed_dim", "128",
                "--learn_temp", "--data_sampler", "episodic", "--n_episodes", "1", "--episode_classes", "10",
                "--episode_samples", "26", "--dataset", "digits", "--digits_split", "classification", "--n_epochs",
                "1", "--no_progress", "--no_train_metrics", "--evaluation_metrics", "e_recall@1"]  # fmt: skip


def test_cifar_recipe_resnet50_runs_small(tmp_path, monkeypatch):
    """The CIFAR10 recipe (ResNet50, 3x3 stem, d = 128) for one tiny episode (10 x 2) on 300 digits. (The full
    10 x 26 episode runs in tests/test_vmf_readme.py, slow, from docs/protocols.md's CIFAR10 row.)"""
    small_digits(monkeypatch)
    no_plots(monkeypatch)
    args = list(CIFAR_RECIPE)
    args[args.index("--episode_samples") + 1] = "2"
    assert main.main(["--save_path", str(tmp_path / "runs"), *args]) == 0
    npz = np.load(run_dir(tmp_path) / "embeddings_testing.npz")
    assert npz["embeddings"].shape == (60, 128) and npz["class_weights"].shape == (10, 128)


def test_kappa_learns_corruption_uncertainty(tmp_path, monkeypatch):
    """Trained on corrupted digits, kappa falls with the corruption strength: Spearman <= -0.3, and clearly
    below the untrained network's (whose norms already fall with blur, about -0.33 here)."""
    args = ["--loss", "vmf_softmax", "--optim", "adam", "--lr", "0.003", "--learn_temp", "--embed_dim", "8",
            "--dataset", "digits", "--digits_split", "classification", "--digits_corruption", "0.5",
            "--data_sampler", "episodic", "--n_episodes", "20", "--episode_classes", "10", "--episode_samples", "13",
            "--n_epochs", "2", "--no_progress", "--no_train_metrics", "--evaluation_metrics", "e_recall@1"]  # fmt: skip
    opt = parameters.parse_args(["--save_path", str(tmp_path / "runs"), *args])
    no_plots(monkeypatch)
    trainer = Trainer(opt)
    test = trainer.data["testing"]
    emb, _ = extract_embeddings(trainer.model, eval_loader(test, opt), trainer.device, progress=False)
    rho_untrained = spearmanr(emb.norm(dim=1).numpy(), test.corruption).statistic
    trainer.fit()
    npz = np.load(run_dir(tmp_path) / "embeddings_testing.npz")
    kappa = npz["norms"] * npz["vmf_scale"]
    rho = spearmanr(kappa, test.corruption).statistic
    assert rho <= -0.3 and rho < rho_untrained - 0.05, (rho, rho_untrained)
