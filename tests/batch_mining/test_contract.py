"""The contract every registered miner keeps (parametrised over ``batch_mining.names()``: a new miner is tested here
by registering it and declaring its ``output`` tag).

Its ``output`` is a key of ``batch_mining.OUTPUTS`` that some criterion accepts; everything it returns obeys that
tag's rule (also on a one-class batch and an all-distinct one); ``select`` names it; its draws are reproducible
with a seeded ``miner.generator`` or torch's global seed, and the same for numpy labels; a ``uses_margin`` miner
refuses to be built without the margin of its loss.
"""

from __future__ import annotations

import pytest
import torch

import batch_mining
import criteria

NAMES = batch_mining.names()
MARGIN = 0.2


def n_tuples(out, tag: str) -> int:
    return len(out[0]) if tag in ("npair", "lifted") else len(out)


def same_output(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b))


@pytest.fixture
def miner_opt(make_opt):
    return make_opt(embed_dim=8)


@pytest.mark.parametrize("name", NAMES)
def test_output_tag_is_known_and_accepted_by_some_criterion(name):
    tag = batch_mining.output(name)
    assert tag in batch_mining.OUTPUTS, (name, tag)
    assert batch_mining.REGISTRY.get(name).obj.output == tag
    assert any(name in criteria.accepted_miners(loss) for loss in criteria.names()), f"no criterion accepts {name}"
    assert batch_mining.REGISTRY.get(name).paper.strip(), f"{name}: the registry entry names no paper"


@pytest.mark.parametrize("name", NAMES)
def test_select_builds_and_names_it(name, miner_opt):
    miner = batch_mining.select(name, miner_opt, margin=MARGIN)
    assert miner.name == name and miner.output == batch_mining.output(name)
    assert miner.generator is None  # torch's global RNG unless a generator is set


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_miner_returns_valid_tuples_for_its_output_tag(
    name, miner_opt, miner_batch, assert_valid_for_tag
):
    """Random embeddings with classes of sizes 4, 3, 3, 2, 1 (one singleton), a batch of one class and one of all
    distinct labels: every tuple obeys the rule of the miner's ``output`` tag; where the batch has no valid
    tuple of that structure, the miner returns none."""
    miner = batch_mining.select(name, miner_opt, margin=MARGIN)
    tag = miner.output

    def check(out, y):
        assert_valid_for_tag(out, y, tag, last_labels=getattr(miner, "last_labels", None))

    miner.generator = torch.Generator().manual_seed(0)
    total = 0
    for seed in range(5):
        x, y = miner_batch(seed)
        out = miner(x, y)
        check(out, y)
        total += n_tuples(out, tag)
    assert total > 0
    x, y = miner_batch(5)
    # One class: no negative, so no label-valid triplet, but intra-class triplets (B of them) and B npair/lifted
    # anchors (with empty negative sets). All labels distinct: no positive, so nothing at all.
    one_class = {"intra_triplet": len(y), "npair": len(y), "lifted": len(y)}.get(tag, 0)
    for labels, expected in ((torch.zeros(len(y), dtype=torch.long), one_class), (torch.arange(len(y)), 0)):
        out = miner(x, labels)
        check(out, labels)
        assert n_tuples(out, tag) == expected, (labels, out)


@pytest.mark.parametrize("name", NAMES)
def test_draws_are_reproducible(name, miner_opt, miner_batch):
    """Same seed (a generator on ``miner.generator``, or torch's global seed without one): the same tuples;
    numpy labels give the same as tensor labels; with a generator set, the global seed does not matter."""
    x, y = miner_batch()
    miner = batch_mining.select(name, miner_opt, margin=MARGIN)
    torch.manual_seed(0)
    first = miner(x, y)
    torch.manual_seed(0)
    assert same_output(miner(x, y), first)
    miner.generator = torch.Generator().manual_seed(5)
    seeded = miner(x, y.numpy())  # numpy labels work too
    miner.generator = torch.Generator().manual_seed(5)
    assert same_output(miner(x, y), seeded)
    torch.manual_seed(1)  # the global RNG is not used once a generator is set
    miner.generator = torch.Generator().manual_seed(5)
    assert same_output(miner(x, y), seeded)


@pytest.mark.parametrize("name", NAMES)
def test_margin_miners_refuse_a_missing_margin(name, miner_opt):
    cls = batch_mining.REGISTRY.get(name).obj
    if cls.uses_margin:
        with pytest.raises(ValueError, match="margin"):
            batch_mining.select(name, miner_opt)
        assert batch_mining.select(name, miner_opt, margin=0.35).margin == 0.35
    else:
        assert batch_mining.select(name, miner_opt).name == name  # no margin needed (one given is ignored)
