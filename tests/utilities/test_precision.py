"""Mixed precision keeps every loss in float32 (``utilities.precision``; DESIGN section 10).

Every registered criterion (``criteria.names()``), on a fixed batch, against its float32 value:

* **the suite's AMP path**: the network's output comes out of bf16 autocast (its values rounded to bf16), the
  loop casts it to float32 and calls the loss with autocast off (``precision.full_precision`` inside an autocast
  region, as anywhere a loss could be called under autocast). The loss is float32 and within ``AMP_RTOL`` = 2e-3
  (relative, or absolute below 1) of the float32 loss: bf16 keeps 8 significant bits, an input rounding of at
  most 2^-9 = 0.2% (largest seen: 4e-4).
* **the loss's forward itself under CPU bf16 autocast** (what a loss gives if someone calls it inside autocast:
  its matmuls then run in bf16): finite, and within ``RAW_RTOL`` = 2e-2 (largest seen: 6e-3, ProxyNCA's
  cosines over a temperature) except ``proxyvmf_panc``: its similarities are one [B*S, d] x [d, C] matmul divided
  by T = 0.01, so bf16's 0.4% error in that product becomes nats (10% of the loss here). The vMF normalisers
  stay float32 by construction (``utilities.vmf``). The training loop never calls a loss under autocast: this is
  why (``precision.full_precision`` is the guard for code that does).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import batch_mining
import criteria
from utilities import precision

NAMES = criteria.names()
N_CLASSES, PER_CLASS, DIM = 6, 4, 32
AMP_RTOL, RAW_RTOL = 2e-3, 2e-2
NEEDS_FLOAT32_CALL = {"proxyvmf_panc"}  # small-temperature logits: bf16 matmuls move the loss by nats


def build(name: str, make_opt):
    opt = make_opt("--loss", name, "--embed_dim", str(DIM))
    miner = None
    if opt.batch_mining is not None:
        miner = batch_mining.select(opt.batch_mining, opt, margin=criteria.get_class(name).miner_margin(opt))
    torch.manual_seed(0)
    return criteria.select(name, opt, miner, n_classes=N_CLASSES)


def batch(crit) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised embeddings; probabilistic losses (the norm is a concentration) get norm 8."""
    torch.manual_seed(1)
    x = F.normalize(torch.randn(N_CLASSES * PER_CLASS, DIM), dim=1)
    return x * (8.0 if crit.norm_is_certainty else 1.0), torch.arange(N_CLASSES).repeat_interleave(PER_CLASS)


def loss_value(crit, x, y) -> torch.Tensor:
    torch.manual_seed(2)  # the same random draws (vMF samples, random miners) in every variant
    return crit(x, y)


def close(value: torch.Tensor, reference: torch.Tensor, rtol: float) -> bool:
    value, reference = value.detach().item(), reference.detach().item()
    return abs(value - reference) <= rtol * max(1.0, abs(reference))


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_under_bf16_autocast_stays_close_to_float32(name, make_opt):
    crit = build(name, make_opt)
    x, y = batch(crit)
    reference = loss_value(crit, x, y)
    assert reference.dtype == torch.float32 and torch.isfinite(reference)

    with precision.autocast("bf16", "cpu", cpu=True):  # the network's forward: bf16 outputs
        network_output = x.to(torch.bfloat16)
        assert torch.is_autocast_enabled("cpu")
        with precision.full_precision("cpu"):
            amp = loss_value(crit, network_output.float(), y)
    assert amp.dtype == torch.float32 and torch.isfinite(amp)
    assert close(amp, reference, AMP_RTOL), (amp.item(), reference.item())

    with torch.autocast("cpu", dtype=torch.bfloat16):
        raw = loss_value(crit, x, y)
    assert torch.isfinite(raw)
    if name not in NEEDS_FLOAT32_CALL:
        assert close(raw, reference, RAW_RTOL), (raw.item(), reference.item())


def test_autocast_is_off_on_the_cpu_unless_asked():
    with precision.autocast("bf16", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with precision.autocast("bf16", "cpu", cpu=True):
        assert torch.is_autocast_enabled("cpu")
        assert torch.mm(torch.randn(2, 2), torch.randn(2, 2)).dtype == torch.bfloat16
        with precision.full_precision("cpu"):
            assert torch.mm(torch.randn(2, 2), torch.randn(2, 2)).dtype == torch.float32
    with precision.autocast("none", "cpu", cpu=True):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_all_finite_finds_one_bad_value_in_mixed_dtypes_and_changes_nothing(bad):
    """The fused check against a naive per-element loop; the tensors keep their values bit for bit."""
    tensors = [torch.randn(3, 4), torch.randn(5, dtype=torch.float64), torch.randn(2, 2).bfloat16(), torch.tensor(-0.0)]
    before = [t.clone() for t in tensors]
    assert precision.all_finite(tensors) is True
    assert precision.all_finite([]) is True
    tensors[1][3] = bad
    naive = all(math.isfinite(float(v)) for t in tensors for v in t.reshape(-1).tolist())
    assert precision.all_finite(tensors) is naive is False
    tensors[1][3] = before[1][3]
    for t, b in zip(tensors, before):
        assert torch.equal(t, b) and torch.equal(t.signbit(), b.signbit())
