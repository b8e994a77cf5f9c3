"""vMF softmax (Scott et al. 2021): loss vs naive loops / scipy / mpmath, scale, param groups, the views it gives the
metrics (sampled class probabilities, sampled embedding sets, per-image concentrations), export, runs. (The ECE and
majority-vote metrics themselves: tests/metrics/test_classification.py and test_vmf_sampled.py.)"""

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
import evaluation
import main
import metrics
from criteria.vmf_softmax import kappa_sigma
from metrics.vmf_sampled import SAMPLED_SETS
from training import Trainer
from training.build import build_optimizer, model_param_groups


@pytest.fixture
def make(make_opt, build_criterion):
    """``make(extra=(), n_classes=4) -> (opt, criterion)`` of ``--loss vmf_softmax *extra``."""

    def build(extra=(), n_classes=4):
        opt = make_opt("--loss", "vmf_softmax", *extra)
        return opt, build_criterion("vmf_softmax", opt, n_classes=n_classes)

    return build


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


def test_loss_and_gradients_match_naive_loop_d3(make):
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


def test_loss_matches_scipy_for_d5(make):
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


def test_log_partition_matches_mpmath(make):
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
def test_prepare_sets_scale_from_mean_absolute_coordinate(make):
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
def test_prepare_uses_batch_statistics_in_batches_of_256_and_restores_bn(start_mode, make):
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


def test_prepare_merges_a_last_single_image_and_keeps_frozen_bn(make):
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


def test_param_groups_decay_lr_and_momentum(make):
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


# --------------------------------------------------------------------------- views for the metrics
def view_crit(make, scale=2.0, dim=3, n_classes=4):
    _, crit = make(["--embed_dim", str(dim)], n_classes=n_classes)
    crit.scale.fill_(scale)
    return crit


def test_gives_its_views_and_their_metrics_by_default(make_opt):
    """The loss offers every view but the Poincare ball, and its default --evaluation_metrics add the paper's metrics
    that read them."""
    cls = criteria.get_class("vmf_softmax")
    assert [view for view in metrics.VIEWS if cls.provides(view)] == ["probabilities", "samples", "kappa"]
    assert cls.norm_is_certainty
    got = make_opt("--loss", "vmf_softmax").evaluation_metrics
    assert got == [*metrics.DEFAULT_EVALUATION_METRICS, "accuracy", "ece", "ece_rms", "vmf_recall@1", "vmf_map_at_r",
                   "vmf_mean_kappa"]  # fmt: skip


def test_class_probabilities_are_the_seeded_sampled_prediction(make):
    """``class_probabilities`` = ``predict_proba`` (mean over S samples of z and of the class directions of
    softmax(beta z^T v)): float64 rows summing to 1, the same draws for the same generator seed, others for another."""
    crit = view_crit(make)
    z = torch.randn(9, 3, generator=torch.Generator().manual_seed(0))
    probs = crit.class_probabilities(z, generator=torch.Generator().manual_seed(7))
    assert probs.shape == (9, 4) and probs.dtype == torch.float64
    torch.testing.assert_close(probs.sum(1), torch.ones(9, dtype=torch.float64))
    again = crit.predict_proba(z, generator=torch.Generator().manual_seed(7))
    assert torch.equal(probs, again)
    other = crit.class_probabilities(z, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(probs, other)


def test_class_probabilities_at_high_concentration_are_the_softmax_of_the_mean_directions(make):
    """kappa -> inf for images and classes: every sample is its mean direction, so the prediction tends to
    softmax(beta mu_z^T mu_c) (a naive loop here); deviations of order 1/sqrt(kappa)."""
    crit = view_crit(make, scale=1e7)
    with torch.no_grad():
        crit.class_weights.mul_(1e7 / crit.class_weights.norm(dim=1, keepdim=True))
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    probs = crit.class_probabilities(z, generator=torch.Generator().manual_seed(0)).numpy()
    beta = crit.beta.item()
    w = crit.class_weights.detach().double().numpy()
    for i, zi in enumerate(z.double().numpy()):
        logits = [beta * (zi @ wc) / np.linalg.norm(zi) / np.linalg.norm(wc) for wc in w]
        ref = [math.exp(v) / sum(math.exp(u) for u in logits) for v in logits]
        np.testing.assert_allclose(probs[i], ref, atol=2e-3)


def test_embedding_samples_are_seeded_unit_vectors_around_the_mean_direction(make):
    crit = view_crit(make, scale=50.0)
    z = torch.randn(8, 3, generator=torch.Generator().manual_seed(2))
    sets = crit.embedding_samples(z, 5, generator=torch.Generator().manual_seed(3))
    assert sets.shape == (5, 8, 3) and sets.device.type == "cpu"
    torch.testing.assert_close(sets.norm(dim=-1), torch.ones(5, 8))
    assert torch.equal(sets, crit.embedding_samples(z, 5, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(sets, crit.embedding_samples(z, 5, generator=torch.Generator().manual_seed(4)))
    assert not torch.equal(sets[0], sets[1])  # one independent draw per set
    # kappa = 50 ||z|| (>= ~20 here): E[cos(z_s, mu)] = A_3(kappa) = coth(kappa) - 1/kappa
    kappa = 50 * z.norm(dim=1)
    cos = (sets * (z / z.norm(dim=1, keepdim=True))).sum(-1)
    assert (cos > 0.5).all()
    many = crit.embedding_samples(z, 4000, generator=torch.Generator().manual_seed(5))
    mean_cos = (many * (z / z.norm(dim=1, keepdim=True))).sum(-1).mean(0)
    torch.testing.assert_close(mean_cos, 1 / torch.tanh(kappa) - 1 / kappa, atol=3e-3, rtol=0)


def test_image_concentrations_are_the_scaled_norms_in_float64(make):
    crit = view_crit(make, scale=2.5, dim=4, n_classes=3)
    emb = torch.tensor([[3.0, 0.0, 4.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    kappa = crit.image_concentrations(emb)
    assert kappa.dtype == torch.float64
    torch.testing.assert_close(kappa, torch.tensor([12.5, 5.0], dtype=torch.float64))


def test_loss_views_feed_the_vmf_metrics_reproducibly(make):
    """Through ``evaluation.loss_views`` (one generator seeded with the run's seed): SAMPLED_SETS sets, the same
    metrics for the same seed; ``vmf_mean_kappa`` = mean of s ||f(x)||; no probabilities on an open-set split."""
    crit = view_crit(make, scale=3.0)
    g = torch.Generator().manual_seed(6)
    labels = torch.arange(4).repeat_interleave(5)
    z = torch.randn(4, 3, generator=g)[labels] + 0.5 * torch.randn(20, 3, generator=g)
    names = ["vmf_recall@1", "vmf_map_at_r", "vmf_mean_kappa", "accuracy"]
    views = evaluation.loss_views(crit, z, closed_set=False, seed=1)
    sets = views("samples")
    assert sets.shape == (SAMPLED_SETS, 20, 3) and views("probabilities") is None
    assert torch.equal(sets, evaluation.loss_views(crit, z, closed_set=False, seed=1)("samples"))
    assert not torch.equal(sets, evaluation.loss_views(crit, z, closed_set=False, seed=2)("samples"))
    first = evaluation.compute_metrics(z, labels, names, views=evaluation.loss_views(crit, z, False, seed=1))
    assert set(first) == {"vmf_recall@1", "vmf_map_at_r", "vmf_mean_kappa"}
    assert first == evaluation.compute_metrics(z, labels, names, views=evaluation.loss_views(crit, z, False, seed=1))
    assert first["vmf_mean_kappa"] == pytest.approx(3.0 * np.mean([float(row.norm()) for row in z.double()]))
    closed = evaluation.compute_metrics(z, labels, names, views=evaluation.loss_views(crit, z, True, seed=1))
    assert set(closed) == set(names)


# --------------------------------------------------------------------------- end-to-end runs
MNIST_RECIPE = ["--loss", "vmf_softmax", "--optim", "sgd", "--lr", "1.0", "--nesterov", "--momentum", "0.99",
                "--temp_lr", "0.001", "--embed_dim", "3", "--learn_temp", "--data_sampler", "episodic",
                "--n_episodes", "5", "--episode_classes", "10", "--episode_samples", "13", "--dataset", "digits",
                "--digits_split", "classification", "--n_epochs", "1", "--no_progress", "--no_train_metrics"]  # fmt: skip
VMF_METRICS = ["accuracy", "ece", "ece_rms", "vmf_recall@1", "vmf_map_at_r", "vmf_mean_kappa"]


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, plots_off):
    """The MNIST recipe for one short epoch, with the paper's metrics; its run folder."""
    runs = tmp_path_factory.mktemp("mnist_recipe") / "runs"
    with plots_off():
        assert main.main(["--save_path", str(runs), *MNIST_RECIPE, "--evaluation_metrics", "e_recall@1",
                          *VMF_METRICS]) == 0  # fmt: skip
    (run,) = list((runs / "digits").iterdir())
    return run


def test_mnist_recipe_runs_and_reports_vmf_metrics(mnist_run):
    d = mnist_run
    for split in ("validation", "testing"):  # closed-set splits: the classifier metrics too
        header = (d / f"metrics_{split}.csv").read_text().splitlines()[0].split(",")
        assert set(VMF_METRICS) <= set(header), (split, header)
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


def test_export_per_image_kappa_and_class_kappa(make):
    _, crit = make(["--embed_dim", "4"], n_classes=3)
    crit.scale.fill_(2.5)
    emb = torch.tensor([[3.0, 0.0, 4.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_allclose(crit.export_embeddings(emb)["kappa"], [12.5, 5.0], rtol=1e-6)
    out = crit.export()
    w = crit.class_weights.detach().double().numpy()
    np.testing.assert_allclose(out["class_kappa"], [math.sqrt(sum(v * v for v in row)) for row in w], rtol=1e-6)
    assert out["vmf_scale"] == pytest.approx(2.5)


CIFAR_RECIPE = ["--loss", "vmf_softmax", "--optim", "sgd", "--lr", "0.5", "--momentum", "0.9", "--temp_lr", "0.001",
                "--decay", "0.0001", "--arch", "resnet50", "--first_conv_3x3", "--not_pretrained", "--embed_dim", "128",
                "--learn_temp", "--data_sampler", "episodic", "--n_episodes", "1", "--episode_classes", "10",
                "--episode_samples", "26", "--dataset", "digits", "--digits_split", "classification", "--n_epochs",
                "1", "--no_progress", "--no_train_metrics", "--evaluation_metrics", "e_recall@1"]  # fmt: skip


def test_cifar_recipe_resnet50_runs_small(run_main, small_digits, no_plots):
    """The CIFAR10 recipe (ResNet50, 3x3 stem, d = 128) for one tiny episode (10 x 2) on 300 digits. (The full
    10 x 26 episode runs in tests/docs/test_protocol_tables.py, slow, from docs/protocols.md's CIFAR10 row.)"""
    args = list(CIFAR_RECIPE)
    args[args.index("--episode_samples") + 1] = "2"
    assert run_main(*args) == 0
    npz = np.load(run_main.run_dir() / "embeddings_testing.npz")
    assert npz["embeddings"].shape == (60, 128) and npz["class_weights"].shape == (10, 128)


def test_kappa_learns_corruption_uncertainty(tmp_path, make_opt, no_plots):
    """Trained on corrupted digits, kappa falls with the corruption strength: Spearman <= -0.3, and clearly
    below the untrained network's (whose norms already fall with blur, about -0.33 here)."""
    args = ["--loss", "vmf_softmax", "--optim", "adam", "--lr", "0.003", "--learn_temp", "--embed_dim", "8",
            "--dataset", "digits", "--digits_split", "classification", "--digits_corruption", "0.5",
            "--data_sampler", "episodic", "--n_episodes", "20", "--episode_classes", "10", "--episode_samples", "13",
            "--n_epochs", "2", "--no_progress", "--no_train_metrics", "--evaluation_metrics", "e_recall@1"]  # fmt: skip
    trainer = Trainer.from_options(make_opt(*args, save_path=tmp_path / "runs"))
    test = trainer.run.data["testing"]
    emb, _ = trainer.embed_split(test)
    rho_untrained = spearmanr(emb.norm(dim=1).numpy(), test.corruption).statistic
    run_dir = trainer.fit()
    npz = np.load(run_dir / "embeddings_testing.npz")
    kappa = npz["norms"] * npz["vmf_scale"]
    rho = spearmanr(kappa, test.corruption).statistic
    assert rho <= -0.3 and rho < rho_untrained - 0.05, (rho, rho_untrained)
