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
    if equal_mass:
        order = sorted(range(n), key=lambda i: (conf[i], i))
        start = 0
        for b in range(15):
            size = n // 15 + (1 if b < n % 15 else 0)
            idx = order[start : start + size]
            start += size
            acc = sum(pred[i] == labels[i] for i in idx) / size
            total += size / n * (acc - sum(conf[i] for i in idx) / size) ** 2
        return math.sqrt(total)
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


# --------------------------------------------------------------------------- end-to-end runs
MNIST_RECIPE = ["--loss", "vmf_softmax", "--optim", "sgd", "--lr", "1.0", "--nesterov", "--momentum", "0.99",
                "--temp_lr", "0.001", "--embed_dim", "3", "--learn_temp", "--data_sampler", "episodic",
                "--n_episodes", "5", "--episode_classes", "10", "--episode_samples", "13", "--dataset", "digits",
                "--digits_split", "classification", "--n_epochs", "1", "--no_progress", "--no_train_metrics",
                "--evaluation_metrics", "e_recall@1"]  # fmt: skip


def run_dir(tmp_path):
    (d,) = list((tmp_path / "runs" / "digits").iterdir())
    return d


def test_mnist_recipe_runs_and_reports_vmf_metrics(tmp_path):
    assert main.main(["--save_path", str(tmp_path / "runs"), *MNIST_RECIPE]) == 0
    d = run_dir(tmp_path)
    header = (d / "metrics_testing.csv").read_text().splitlines()[0].split(",")
    for key in ("accuracy", "ece", "ece_rms", "vmf_recall@1", "vmf_map_at_r", "vmf_mean_kappa"):
        assert key in header
    npz = np.load(d / "embeddings_testing.npz")
    assert npz["class_weights"].shape == (10, 3) and npz["vmf_scale"] > 0 and npz["temperature"] > 0
    state = torch.load(d / "checkpoint_last.pth", weights_only=False)
    assert state["criterion"]["scale"].item() == pytest.approx(float(npz["vmf_scale"]))


@pytest.mark.slow
def test_cifar_recipe_resnet50_runs(tmp_path):
    args = ["--loss", "vmf_softmax", "--optim", "sgd", "--lr", "0.5", "--momentum", "0.9", "--temp_lr", "0.001",
            "--decay", "0.0001", "--arch", "resnet50", "--first_conv_3x3", "--not_pretrained", "--embed_dim", "128",
            "--learn_temp", "--data_sampler", "episodic", "--n_episodes", "1", "--episode_classes", "10",
            "--episode_samples", "26", "--dataset", "digits", "--digits_split", "classification", "--n_epochs", "1",
            "--no_progress", "--no_train_metrics", "--evaluation_metrics", "e_recall@1"]  # fmt: skip
    assert main.main(["--save_path", str(tmp_path / "runs"), *args]) == 0


def test_kappa_learns_corruption_uncertainty(tmp_path):
    """Trained on corrupted digits, kappa falls with the corruption strength: Spearman <= -0.3, and clearly
    below the untrained network's (whose norms already fall with blur, about -0.33 here)."""
    args = ["--loss", "vmf_softmax", "--optim", "adam", "--lr", "0.003", "--learn_temp", "--embed_dim", "8",
            "--dataset", "digits", "--digits_split", "classification", "--digits_corruption", "0.5",
            "--data_sampler", "episodic", "--n_episodes", "20", "--episode_classes", "10", "--episode_samples", "13",
            "--n_epochs", "2", "--no_progress", "--no_train_metrics", "--evaluation_metrics", "e_recall@1"]  # fmt: skip
    opt = parameters.parse_args(["--save_path", str(tmp_path / "runs"), *args])
    trainer = Trainer(opt)
    test = trainer.data["testing"]
    emb, _ = extract_embeddings(trainer.model, eval_loader(test, opt), trainer.device, progress=False)
    rho_untrained = spearmanr(emb.norm(dim=1).numpy(), test.corruption).statistic
    trainer.fit()
    npz = np.load(run_dir(tmp_path) / "embeddings_testing.npz")
    kappa = npz["norms"] * npz["vmf_scale"]
    rho = spearmanr(kappa, test.corruption).statistic
    assert rho <= -0.3 and rho < rho_untrained - 0.05, (rho, rho_untrained)
