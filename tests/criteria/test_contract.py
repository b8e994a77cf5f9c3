"""The contract every registered criterion keeps (parametrised over ``criteria.names()``: a new loss is tested here
by registering it).

Each is built as a run builds it (``criteria.select(name, opt, miner, n_classes=C)``, its default miner with the
loss's ``miner_margin``) and must: give a finite scalar on a small random batch (2+ samples per class) and on
degenerate ones (one class, a singleton class), backpropagate finite gradients to the embeddings and its own
parameters, hand the optimiser exactly its trainable parameters, export numpy arrays, report finite diagnostics,
and give exactly the views it declares (``provides``). Its registry entry names a paper; its miner declarations
(``accepts``, ``default_miner``) and ``flag_defaults`` are consistent with the miners, the flag parser and the
metrics; and ``parse_args`` accepts exactly its miners.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import batch_mining
import criteria
import metrics
import parameters
from criteria._base import Criterion
from evaluation import loss_views
from utilities.errors import UserError

NAMES = criteria.names()
N_CLASSES, PER_CLASS, DIM = 5, 4, 16


def other_miner_cases() -> list[tuple[str, str]]:
    """(loss, miner) for every accepted miner other than the loss's default (the default is in ``test_trains``)."""
    return [(n, m) for n in NAMES for m in criteria.accepted_miners(n) if m != criteria.default_miner(n)]


def check_trains(crit) -> None:
    """forward + backward on random normalised inputs: finite loss and gradients, param groups well formed;
    a batch of ONE class (no negatives) and one with a singleton class (no positive for it) stay finite too."""
    torch.manual_seed(0)
    raw = torch.randn(N_CLASSES * PER_CLASS, DIM, requires_grad=True)
    labels = torch.arange(N_CLASSES).repeat_interleave(PER_CLASS)
    loss = crit(F.normalize(raw, dim=1), labels)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(raw.grad).all() and raw.grad.abs().sum() > 0
    own = [p for p in crit.parameters() if p.requires_grad]
    groups = crit.param_groups()
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}), "a parameter in two groups"
    assert {id(p) for p in own} == {id(p) for p in grouped}
    for g in groups:
        assert {"params", "lr", "weight_decay", "name"} <= set(g) and g["lr"] > 0 and g["weight_decay"] >= 0
        assert isinstance(g["name"], str) and g["name"]
    for p in own:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    one_class = torch.zeros(len(labels), dtype=torch.long)
    with_singleton = torch.cat([labels[:-1] % (N_CLASSES - 1), torch.tensor([N_CLASSES - 1])])  # one sample of it
    for y in (one_class, with_singleton):
        raw.grad = None
        crit.zero_grad()
        value = crit(F.normalize(raw, dim=1), y)
        value.backward()
        assert value.dim() == 0 and torch.isfinite(value), y
        assert torch.isfinite(raw.grad).all(), y
        assert all(torch.isfinite(p.grad).all() for p in own if p.grad is not None), y


@pytest.mark.parametrize("name", NAMES)
def test_trains_with_its_default_miner(name, make_opt, build_criterion):
    opt = make_opt("--loss", name, embed_dim=DIM)
    assert opt.batch_mining == criteria.default_miner(name)
    crit = build_criterion(name, opt, n_classes=N_CLASSES)
    assert getattr(crit.batchminer, "name", None) == criteria.default_miner(name)
    check_trains(crit)


@pytest.mark.parametrize("name,miner", other_miner_cases())
def test_trains_with_every_accepted_miner(name, miner, make_opt, build_criterion):
    opt = make_opt("--loss", name, "--batch_mining", miner, embed_dim=DIM)
    crit = build_criterion(name, opt, n_classes=N_CLASSES)
    assert crit.batchminer.name == miner
    check_trains(crit)


@pytest.mark.parametrize("name", NAMES)
def test_exports_numpy_arrays_and_finite_diagnostics(name, make_opt, build_criterion):
    crit = build_criterion(name, make_opt("--loss", name, embed_dim=DIM), n_classes=N_CLASSES)
    emb = torch.randn(6, DIM, generator=torch.Generator().manual_seed(1))
    crit(emb, torch.tensor([0, 0, 1, 1, 2, 2]))
    for out in (crit.export(), crit.export_embeddings(emb)):
        assert isinstance(out, dict)
        for key, value in out.items():
            assert isinstance(key, str) and isinstance(value, np.ndarray), (key, type(value))
    for key, value in crit.export_embeddings(emb).items():
        assert len(value) == len(emb), key  # per-image arrays
    diagnostics = crit.diagnostics()
    assert isinstance(diagnostics, dict)
    assert all(isinstance(v, float) and math.isfinite(v) for v in diagnostics.values()), diagnostics
    assert isinstance(type(crit).miner_margin(make_opt("--loss", name)), float)


@pytest.mark.parametrize("name", NAMES)
def test_gives_exactly_the_views_it_declares(name, make_opt, build_criterion):
    """``cls.provides(view)`` iff the view (through ``evaluation.loss_views``, the provider the training loop
    uses) is not None, and what it gives has the shape ``metrics.VIEWS`` describes."""
    cls = criteria.get_class(name)
    assert set(Criterion.VIEW_METHODS) == set(metrics.VIEWS)
    crit = build_criterion(name, make_opt("--loss", name, embed_dim=DIM), n_classes=N_CLASSES).eval()
    n = 7
    emb = torch.randn(n, DIM, generator=torch.Generator().manual_seed(2))
    views = loss_views(crit, emb, closed_set=True, seed=0)
    for view in metrics.VIEWS:
        value = views(view)
        assert (value is not None) == cls.provides(view), view
        if value is None:
            continue
        if view == "probabilities":
            probs = torch.as_tensor(value)
            assert probs.shape == (n, N_CLASSES) and probs.dtype == torch.float64
            assert (probs >= 0).all() and torch.allclose(probs.sum(1), torch.ones(n, dtype=torch.float64))
        elif view == "samples":
            sets = torch.as_tensor(value)
            assert sets.dim() == 3 and sets.shape[1] == n and torch.isfinite(sets).all()
        elif view == "poincare":
            points, c = value
            assert points.shape[0] == n and c > 0
            assert (points.double().norm(dim=1) < 1 / math.sqrt(c)).all()  # inside the ball
        elif view == "kappa":
            kappa = torch.as_tensor(value)
            assert kappa.shape == (n,) and (kappa > 0).all()
    assert loss_views(crit, emb, closed_set=False, seed=0)("probabilities") is None  # open set: no classifier


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_and_miner_declarations(name):
    entry = criteria.REGISTRY.get(name)
    cls = entry.obj
    assert entry.paper.strip(), f"{name}: the registry entry names no paper"
    assert set(cls.accepts) <= set(batch_mining.OUTPUTS), (name, cls.accepts)
    accepted = criteria.accepted_miners(name)
    assert accepted == [m for m in batch_mining.names() if batch_mining.output(m) in cls.accepts]
    assert (cls.default_miner is None) == (not cls.accepts), name
    if cls.default_miner is not None:
        assert cls.default_miner in accepted, name


@pytest.mark.parametrize("name", NAMES)
def test_flag_defaults_are_real_flags_and_its_metrics_have_their_views(name):
    cls = criteria.get_class(name)
    flags = {action.dest for action in parameters.build_parser()._actions}
    assert set(cls.flag_defaults) <= flags, set(cls.flag_defaults) - flags
    own = cls.flag_defaults.get("evaluation_metrics", [])
    metrics.validate(own)
    for metric in own:
        view = metrics.select(metric).requires.needed_view
        assert view is None or cls.provides(view), (name, metric, view)


@pytest.mark.parametrize("name", NAMES)
def test_parse_args_accepts_exactly_its_miners(name, make_opt):
    """Through the real flag path: an accepted pair parses (and keeps the miner); a loss that uses no miner ignores
    any, with a one-line warning naming it (as the Roth suite, whose Softmax runs pass one); for a loss that uses
    miners, any other registered miner raises UserError with a one-line message naming the loss and the miner."""
    accepted = criteria.accepted_miners(name)
    assert make_opt("--loss", name).batch_mining == criteria.default_miner(name)
    for miner in batch_mining.names():
        if miner in accepted:
            assert make_opt("--loss", name, "--batch_mining", miner).batch_mining == miner
            continue
        if not accepted:
            with pytest.warns(UserWarning, match=f"--batch_mining {miner} is ignored: loss '{name}' uses no"):
                assert make_opt("--loss", name, "--batch_mining", miner).batch_mining is None
            continue
        with pytest.raises(UserError) as err:
            make_opt("--loss", name, "--batch_mining", miner)
        msg = str(err.value)
        assert "\n" not in msg and f"'{name}'" in msg and f"'{miner}'" in msg, (name, miner, msg)
