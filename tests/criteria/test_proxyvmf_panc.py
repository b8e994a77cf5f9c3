"""EL-nivMF family: batched loss vs a naive loop of the paper's formula, gradients, closed forms vs Monte-Carlo,
KL sign, diagnostics, the warm start (unit and through the training loop's start), the default metrics, and a short
digits training run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import evaluation
import parameters
from training import Trainer, build_run
from utilities.vmf import log_vmf_norm, sample_vmf

ALL = ["proxyvmf_panc", "proxyvmf", "proxyvmf_kl", "proxynca_nivmf", "proxynca_l2", "proxynca_cos", "oproxy",
       "proxynca_pp"]  # fmt: skip


@pytest.fixture
def make(make_criterion):
    """``make(name, n_classes=5, dim=6, extra=())``: the criterion (built after ``torch.manual_seed(0)``) with
    non-constant concentrations (so the non-isotropic terms matter) and temperature 0.7."""

    def build(name, n_classes=5, dim=6, extra=()):
        crit = make_criterion(name, *extra, n_classes=n_classes, embed_dim=dim)
        with torch.no_grad():
            if hasattr(crit, "kappa"):
                crit.kappa.copy_(torch.rand_like(crit.kappa) * 8 + 0.5)
                crit.temp.fill_(0.7)
        return crit

    return build


def naive_loss(e, y, v, kappa, temp, samples, w, alpha=32.0, delta=0.1, kappa_min=0.1):
    """Per-image, per-class, per-sample loop of the paper's formulas (docs/methods.md) (nivMF density, tempered MC likelihood, ProxyAnchor)."""
    n_s, b, d = samples.shape
    c_n = v.shape[0]
    sims = []
    for i in range(b):
        row = []
        for c in range(c_n):
            u = v[c] / v[c].norm()
            k = torch.where(kappa[c] < kappa_min, torch.full_like(kappa[c], kappa_min), kappa[c])  # >= 0.1 clamp
            m = k * u
            r = m.norm()
            vals = torch.stack([(log_vmf_norm(r, d) + samples[s, i] @ m + k.log().sum() - r.log()) / temp
                                for s in range(n_s)])  # fmt: skip
            row.append(torch.logsumexp(vals, 0) - math.log(n_s))
        sims.append(torch.stack(row))
    sims = torch.stack(sims)
    el = torch.stack([-sims[i, y[i]] + torch.logsumexp(sims[i], 0) for i in range(b)]).mean()
    cos = torch.stack([torch.stack([F.cosine_similarity(e[i], v[c], dim=0) for c in range(c_n)]) for i in range(b)])
    pos = 0.0
    for j in range(b):
        terms = [torch.exp(-alpha * (cos[i, y[j]] - delta)) for i in range(b) if y[i] == y[j]]
        pos = pos + torch.log(1 + torch.stack(terms).sum())
    neg = 0.0
    for c in range(c_n):
        terms = [torch.exp(alpha * (cos[i, c] + delta)) for i in range(b) if y[i] != c]
        neg = neg + (torch.log(1 + torch.stack(terms).sum()) if terms else 0.0)
    return el + w * (pos / b + neg / c_n)


def test_batched_equals_naive_loop_values_and_gradients(make):
    """Includes concentrations below the 0.1 clamp: same loss as the loop (which clamps explicitly), and exactly
    zero gradient on the clamped entries (every other entry gets one)."""
    crit = make("proxyvmf_panc", extra=["--loss_proxyvmf_guidance_w", "0.5"]).double()
    low = torch.zeros_like(crit.kappa, dtype=torch.bool)
    low[0, 1] = low[1, 0] = low[1, 5] = low[4, 2] = True  # classes 0, 1 in the batch, class 4 not
    with torch.no_grad():
        crit.kappa[low] = 0.01
    torch.manual_seed(1)
    e = (torch.randn(7, 6, dtype=torch.float64) * 5).requires_grad_()
    y = torch.tensor([0, 0, 1, 1, 2, 3, 3])
    samples = sample_vmf(F.normalize(e, dim=1), e.norm(dim=1), 3)  # same fixed samples (kept in the graph)
    loss = crit(e, y, samples=samples)
    params = [e, crit.proxy_v, crit.kappa, crit.temp]
    g_fast = torch.autograd.grad(loss, params, retain_graph=True)
    ref = naive_loss(e, y, crit.proxy_v, crit.kappa, crit.temp, samples, 0.5)
    g_ref = torch.autograd.grad(ref, params)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    g_kappa = g_fast[2]
    assert (g_kappa[low] == 0).all() and (g_kappa[~low] != 0).all()
    unclamped = naive_loss(e, y, crit.proxy_v, crit.kappa, crit.temp, samples, 0.5, kappa_min=0.0)
    assert abs(unclamped.item() - ref.item()) > 1e-3  # the clamp matters for these entries


def test_subsample_keeps_batch_classes_and_equals_loop_on_the_subset(make):
    """--loss_proxyvmf_subsample_p 0.5, C = 20, 3 classes in the batch: 3 + int((0.5 - 3/20) * 17) = 8 proxies."""
    crit = make("proxyvmf_panc", n_classes=20, extra=["--loss_proxyvmf_subsample_p", "0.5"]).double()
    torch.manual_seed(2)
    e = torch.randn(6, 6, dtype=torch.float64) * 4
    y = torch.tensor([3, 3, 7, 7, 11, 11])
    samples = sample_vmf(F.normalize(e, dim=1), e.norm(dim=1), 2)
    torch.manual_seed(5)
    ids, target = crit.select_proxies(y)
    assert len(ids) == 8 and set(ids[:3].tolist()) == {3, 7, 11} and len(set(ids.tolist())) == 8
    assert (ids[target] == y).all()
    torch.manual_seed(5)
    loss = crit(e, y, samples=samples)
    ref = naive_loss(e, target, crit.proxy_v[ids], crit.kappa[ids], crit.temp, samples, 0.0)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)


def test_gradients_reach_backbone_proxies_concentrations_temperature(make):
    lr = 2e-4
    crit = make("proxyvmf_panc", extra=["--loss_proxyvmf_n_samples", "4", "--loss_proxyvmf_guidance_w", "1", "--lr",
                                        str(lr)])  # fmt: skip
    net = torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.ReLU(), torch.nn.Linear(8, 6))
    e = net(torch.randn(8, 10)) * 20
    crit(e, torch.tensor([0, 0, 1, 1, 2, 2, 4, 4])).backward()
    for p in [net[0].weight, crit.proxy_v, crit.kappa, crit.temp]:
        assert p.grad is not None and p.grad.abs().sum() > 0
    names = {g["name"]: g for g in crit.param_groups()}
    assert names["proxyvmf_proxies"]["lr"] == pytest.approx(lr * 5000)
    assert names["proxyvmf_concentrations"]["lr"] == pytest.approx(lr * 50000)
    assert names["proxyvmf_temperature"]["lr"] == pytest.approx(lr * 500)
    assert all(g["weight_decay"] == 0 for g in names.values())


@pytest.mark.parametrize("name", ALL)
def test_every_member_runs_and_backpropagates(name, make):
    crit = make(name)
    e = (torch.randn(6, 6) * 10).requires_grad_()
    loss = crit(e, torch.tensor([0, 0, 1, 1, 3, 3]))
    loss.backward()
    assert torch.isfinite(loss) and e.grad.abs().sum() > 0


def test_closed_form_ppk_matches_monte_carlo(make):
    """proxyvmf (rho = 1): T * sim = log E_{z ~ vMF(mu_i, k_i)} [vMF(z; proxy)], estimated with 200k samples."""
    crit = make("proxyvmf", n_classes=3, dim=4, extra=["--loss_proxyvmf_rho", "1"]).double()
    e = torch.tensor([[2.0, 1.0, 0.0, 0.5], [0.0, -3.0, 1.0, 0.0]], dtype=torch.float64)
    u, kappa = crit.directions(), crit.concentrations()
    sims = crit.similarities(e, u, kappa) * crit.temp
    m = kappa * u
    r = m.norm(dim=1)
    z = sample_vmf(F.normalize(e, dim=1), e.norm(dim=1), 200_000, generator=torch.Generator().manual_seed(0))
    logp = log_vmf_norm(r, 4) + torch.einsum("sbd,cd->sbc", z, m)  # vMF(m/r, r) log-density
    mc = torch.logsumexp(logp, 0) - math.log(z.shape[0])
    torch.testing.assert_close(sims.detach(), mc, rtol=0, atol=0.02)


def test_bhattacharyya_is_zero_for_identical_distributions(make):
    crit = make("proxyvmf", n_classes=2, dim=5, extra=["--loss_proxyvmf_rho", "0.5"]).double()
    with torch.no_grad():
        crit.kappa.fill_(3.0)
    u = crit.directions()
    e = u[:1] * 3.0
    sims = crit.similarities(e, u, crit.concentrations()) * crit.temp
    assert sims[0, 0].item() == pytest.approx(0.0, abs=1e-9)
    assert sims[0, 1].item() < 0


def test_kl_matches_monte_carlo_and_true_class_is_closest(make):
    from criteria.proxyvmf_kl import kl_vmf

    mu1, mu2 = F.normalize(torch.tensor([1.0, 0.2, 0.0], dtype=torch.float64), dim=0), torch.tensor(
        [0.0, 1.0, 0.0], dtype=torch.float64)  # fmt: skip
    k1, k2 = torch.tensor(5.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    z = sample_vmf(mu1, k1, 400_000, generator=torch.Generator().manual_seed(0))
    mc = (log_vmf_norm(k1, 3) + k1 * z @ mu1 - log_vmf_norm(k2, 3) - k2 * z @ mu2).mean()
    assert kl_vmf(mu1, k1, mu2, k2).item() == pytest.approx(mc.item(), abs=0.02)
    crit = make("proxyvmf_kl", n_classes=4, dim=6)
    u = crit.directions().detach()
    m = (crit.concentrations() * u).detach()  # image = the proxy's own vMF: KL 0, every other class KL > 0
    for c in range(4):
        sims = crit.similarities(m[c : c + 1], u, crit.concentrations())
        assert int(sims.argmax()) == c
    aligned = crit(m[:2], torch.tensor([0, 1]))
    swapped = crit(m[:2], torch.tensor([1, 0]))
    assert aligned < swapped


def test_diagnostics_are_the_temperature_and_the_mean_clamped_concentration(make):
    """Logged with every epoch's training row: T and the mean over classes and dimensions of max(kappa, 0.1)."""
    for name in ("proxyvmf_panc", "proxyvmf", "proxyvmf_kl", "proxynca_nivmf", "proxynca_l2", "proxynca_cos"):
        crit = make(name, n_classes=3, dim=4)
        with torch.no_grad():
            crit.kappa[0, 0] = 0.02  # below the clamp: counts as 0.1
        values = [0.1 if v < 0.1 else v for v in crit.kappa.detach().double().flatten().tolist()]
        got = crit.diagnostics()
        assert set(got) == {"proxy_temperature", "proxy_kappa_mean"}, name
        assert got["proxy_temperature"] == pytest.approx(0.7), name
        assert got["proxy_kappa_mean"] == pytest.approx(sum(values) / len(values), rel=1e-6), name
    assert make("oproxy").diagnostics() == {} and make("proxynca_pp").diagnostics() == {}


def test_warm_start_sets_proxies_to_normalised_class_means(make):
    """v_c = normalise(mean of class c's embeddings) x --loss_proxyvmf_concentration; a class absent from the
    embeddings keeps its initial proxy; kappa and T are untouched. Only with --loss_proxyvmf_warmstart is it asked for."""
    crit = make("proxyvmf_panc", n_classes=4, dim=3, extra=["--loss_proxyvmf_warmstart",
                                                             "--loss_proxyvmf_concentration", "7"])  # fmt: skip
    assert crit.wants_warm_start and not make("proxyvmf_panc").wants_warm_start
    emb = torch.tensor([[1.0, 0.0, 0.0], [3.0, 2.0, 0.0], [0.0, -4.0, 0.0], [0.0, -2.0, 2.0], [5.0, 5.0, 5.0]])
    labels = torch.tensor([0, 0, 2, 2, 3])  # class 1 absent
    before = crit.proxy_v.detach().clone()
    kappa, temp = crit.kappa.detach().clone(), crit.temp.item()
    crit.warm_start(emb, labels)
    for c, rows in ((0, [0, 1]), (2, [2, 3]), (3, [4])):
        mean = [sum(emb[i, k].item() for i in rows) / len(rows) for k in range(3)]
        length = math.sqrt(sum(v * v for v in mean))
        torch.testing.assert_close(crit.proxy_v[c].detach(), torch.tensor([7 * v / length for v in mean]))
    torch.testing.assert_close(crit.proxy_v[1].detach(), before[1])
    assert torch.equal(crit.kappa.detach(), kappa) and crit.temp.item() == temp


DIGITS_EL_NIVMF = ["--loss", "proxyvmf_panc", "--no_progress", "--seed", "0", "--evaluation_metrics", "c_recall@1",
                   "--storage_metrics", "c_recall@1", "--no_train_metrics", "--loss_proxyvmf_proxylrmulti", "10",
                   "--loss_proxyvmf_conclrmulti", "10", "--loss_proxyvmf_templrmulti", "1", "--loss_proxyvmf_temp",
                   "0.1", "--loss_proxyvmf_init_norm_multiplier", "10", "--loss_proxyvmf_n_samples", "5",
                   "--loss_proxyvmf_guidance_w", "0.3"]  # fmt: skip


def test_training_start_scales_the_head_then_warm_starts_from_its_embeddings(tmp_path, make_opt):
    """The loop's start: ``prepare`` multiplies the head's weight (not its bias) by 10, then the proxies become the
    normalised class means (x 7) of the train embeddings of the SCALED network, in eval mode."""
    opt = make_opt(*DIGITS_EL_NIVMF, "--loss_proxyvmf_warmstart", "--loss_proxyvmf_concentration", "7",
                   save_path=tmp_path)  # fmt: skip
    trainer = Trainer(build_run(opt))
    model = trainer.run.model
    w0, b0 = model.last_linear.weight.detach().clone(), model.last_linear.bias.detach().clone()
    trainer.start()
    torch.testing.assert_close(model.last_linear.weight.detach(), w0 * 10)
    torch.testing.assert_close(model.last_linear.bias.detach(), b0)
    emb, labels = trainer.embed_split(trainer.run.data["evaluation"])
    assert trainer.run.n_classes == len(labels.unique()) == 5  # digits: classes 0-4 train, 5-9 test
    for c in range(trainer.run.n_classes):
        mean = emb[labels == c].double().mean(0)
        want = (mean / mean.norm() * 7).float()
        torch.testing.assert_close(trainer.run.criterion.proxy_v[c].detach(), want, rtol=1e-4, atol=1e-4)


def test_digits_training_improves_cosine_recall(tmp_path, make_opt):
    """3 epochs of EL-nivMF on digits (8-dim embeddings, so the untrained CNN is clearly beaten) raise c_recall@1 on
    the train classes and on the unseen test classes (seeds 0-2 measured: +15..28 and +4..5 points)."""
    opt = make_opt(*DIGITS_EL_NIVMF, "--loss_proxyvmf_warmstart", n_epochs=3, embed_dim=8, save_path=tmp_path)
    trainer = Trainer(build_run(opt))
    trainer.run.eval_splits = {"training": trainer.run.data["evaluation"], "testing": trainer.run.data["testing"]}
    before, _ = trainer.evaluate(0)
    trainer.fit()  # runs prepare() (head x10), the warm start, then 3 epochs
    after, _ = trainer.evaluate(3)
    assert after["training"]["c_recall@1"] > before["training"]["c_recall@1"] + 0.1
    assert after["testing"]["c_recall@1"] > before["testing"]["c_recall@1"] + 0.02


FAMILY = ["proxyvmf_panc", "proxyvmf", "proxyvmf_kl", "proxynca_nivmf", "proxynca_l2", "proxynca_cos"]
UNC = ["norms@5", "norms@50", "norms@95", "unc_auroc_cos", "unc_auroc_l2", "unc_recall_area", "unc_nw_acc@10",
       "unc_nw_ll@10"]  # fmt: skip


def test_family_reports_uncertainty_metrics_by_default(make_opt):
    """The family's default --evaluation_metrics = the suite's defaults + the uncertainty metrics (not the O(N^2)
    unc_auroc_ppk), all computable; an explicit --evaluation_metrics wins; other losses keep the plain defaults."""
    for name in FAMILY:
        got = make_opt("--loss", name).evaluation_metrics
        assert got[: len(parameters.DEFAULT_EVALUATION_METRICS)] == parameters.DEFAULT_EVALUATION_METRICS, name
        assert set(UNC) <= set(got) and "unc_auroc_ppk" not in got, name
    explicit = make_opt("--loss", "proxyvmf_panc", "--evaluation_metrics", "e_recall@1")
    assert explicit.evaluation_metrics == ["e_recall@1", "c_recall@1"]  # + the family's storage metric
    assert make_opt("--loss", "proxyanchor").evaluation_metrics == parameters.DEFAULT_EVALUATION_METRICS
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)) * rng.uniform(1, 5, size=(60, 1))
    unc = [m for m in got if m.startswith(("norms", "unc_"))]
    vals = evaluation.compute_metrics(x.astype(np.float32), np.repeat(np.arange(6), 10), unc)
    assert sorted(vals) == sorted(unc) and all(np.isfinite(list(vals.values()))), vals
