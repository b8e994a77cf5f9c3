"""training.build: a run from the options. Facts of the data are passed explicitly, the options are never written
into, and the optimiser groups (--fc_lr, --decay_exclude_1d) follow the flags."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import architectures
import criteria
import datasampler
from training import build_run
from training.build import EVAL_BATCH_MIN, build_optimizer, eval_loader, model_param_groups


def make_run(make_opt, *argv: str):
    return build_run(make_opt("--no_progress", "--kernels", "0", *argv))


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--loss", "vmf_softmax", "--data_sampler", "episodic", "--episode_classes", "4", "--episode_samples", "7"],
        ["--loss", "proxyvmf_panc", "--loss_proxyvmf_warmstart"],
        ["--loss", "triplet", "--batch_mining", "semihard", "--data_sampler", "greedy_coreset"],
        ["--loss", "hyperbolic_softmax", "--digits_split", "classification", "--decay_exclude_1d"],
    ],
)
def test_building_a_run_writes_nothing_into_the_options(argv, make_opt):
    """Options flow one way: every value parse_args produced is still there, unchanged, and nothing was added."""
    opt = make_opt("--no_progress", "--kernels", "0", *argv)
    before = copy.deepcopy(vars(opt))
    build_run(opt)
    assert vars(opt) == before


def test_run_facts_come_from_the_data(make_opt):
    run = make_run(make_opt)
    train = run.data["training"]
    assert run.n_classes == len(np.unique(train.labels)) == 5  # digits: classes 0-4 train
    assert run.input_shape == tuple(train[0][0].shape) == (1, 8, 8)
    assert run.criterion.n_classes == 5 and run.criterion.beta.shape == (5,)  # margin: a beta per class
    assert run.batch_size == 60 and run.selection_split == "testing"
    assert list(run.eval_splits) == ["training", "testing"]


def test_episodic_batch_size_is_the_runs_and_evaluation_keeps_bs(make_opt):
    """The episodic sampler's batch is classes x samples; --bs is untouched and still sizes evaluation batches
    (the old sampler rewrote --bs, silently changing the evaluation batch size)."""
    run = make_run(make_opt, "--data_sampler", "episodic", "--episode_classes", "4", "--episode_samples", "7",
                   "--bs", "200", "--samples_per_class", "2")  # fmt: skip
    assert run.batch_size == 28 and run.sampler.samples_per_class == 7
    assert all(len(batch) == 28 for batch in run.train_loader.batch_sampler)
    assert run.opt.bs == 200 and eval_loader(run.data["testing"], run.opt).batch_size == 200
    small = make_run(make_opt, "--bs", "60")
    assert eval_loader(small.data["testing"], small.opt).batch_size == EVAL_BATCH_MIN


def test_components_built_by_hand_match_the_run(make_opt):
    """build_run passes the same facts a user passes by hand (same seed, same initial weights)."""
    opt = make_opt("--no_progress", "--kernels", "0", "--loss", "proxyanchor")
    run = build_run(opt)
    torch.manual_seed(opt.seed)
    model = architectures.select(opt.arch, opt, input_shape=run.input_shape)
    crit = criteria.select(opt.loss, opt, None, n_classes=run.n_classes)
    sampler = datasampler.select(opt.data_sampler, opt, run.data["training"].labels)
    for a, b in zip(model.state_dict().values(), run.model.state_dict().values()):
        torch.testing.assert_close(a, b.cpu())
    torch.testing.assert_close(crit.proxies, run.criterion.proxies.detach().cpu())
    assert len(sampler) == len(run.sampler)


# --------------------------------------------------------------------------- --decay_exclude_1d
def group_of(optimizer) -> dict[int, dict]:
    return {id(p): g for g in optimizer.param_groups for p in g["params"]}


@pytest.mark.parametrize("loss", ["margin", "proxyanchor"])
def test_decay_exclude_1d_param_groups(loss, make_opt):
    args = ["--loss", loss, "--decay", "0.01", "--fc_lr", "0.05", "--lr", "0.002"]
    plain = make_run(make_opt, *args)
    excl = make_run(make_opt, *args, "--decay_exclude_1d")
    plain_groups, excl_groups = group_of(plain.optimizer), group_of(excl.optimizer)
    head = {n for n, p in excl.model.named_parameters() if id(p) in {id(q) for q in excl.model.head_parameters()}}
    n_exempt = 0
    for (name, p), (_, p0) in zip(excl.model.named_parameters(), plain.model.named_parameters()):
        g, g0 = excl_groups[id(p)], plain_groups[id(p0)]
        assert g0["weight_decay"] == 0.01  # without the flag the whole model decays
        assert g["lr"] == g0["lr"] == (0.05 if name in head else 0.002)  # each part keeps its lr
        exempt = name.endswith(".bias") or p.ndim <= 1
        n_exempt += exempt
        assert g["weight_decay"] == (0.0 if exempt else 0.01), name
        assert g["name"] == g0["name"] + ("_no_decay" if exempt else "")
    # the small CNN: 3 conv/linear biases + 3 BN (weight, bias) + the head bias
    assert n_exempt == 3 + 3 * 2 + 1
    # Criterion parameters: ProxyAnchor's proxies ([C, d]) keep their decay, the margin's beta none.
    for (_, p), (_, p0) in zip(excl.criterion.named_parameters(), plain.criterion.named_parameters()):
        assert excl_groups[id(p)]["weight_decay"] == plain_groups[id(p0)]["weight_decay"]
        assert excl_groups[id(p)]["lr"] == plain_groups[id(p0)]["lr"]
    assert len(excl.optimizer.param_groups) == len(plain.optimizer.param_groups) + 2


def test_decay_exclude_1d_sgd_step_by_hand(make_opt):
    """One SGD step on zero gradients: decayed weights shrink, exempt ones stay. By hand (first
    step, Nesterov): buf = wd p, step = wd p + momentum buf, so p <- p (1 - lr wd (1 + momentum))."""
    from training.build import exclude_1d_from_decay

    opt = make_opt("--decay_exclude_1d", "--decay", "0.1", "--lr", "0.5", "--optim", "sgd", "--momentum", "0.9",
                   "--nesterov")  # fmt: skip
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2, bias=False))
    optimizer = build_optimizer(exclude_1d_from_decay(model_param_groups(model, opt)), opt)
    assert all(g["momentum"] == 0.9 and g["nesterov"] for g in optimizer.param_groups)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        factor = 1.0 if name in {"0.bias", "1.weight", "1.bias"} else 1 - 0.5 * 0.1 * 1.9
        torch.testing.assert_close(p.detach(), before[name] * factor, rtol=0, atol=1e-7)
