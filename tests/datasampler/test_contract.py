"""Contract of every registered batch sampler (``datasampler.names()``), so a new entry is tested automatically.

Built from ``make_opt`` on a label array (storage samplers get ``init_storage`` first): ``len(sampler)``
batches per epoch of ``sampler.batch_size`` valid dataset indices; the same seed and epoch give the same
batches (another epoch or seed other ones); ``set_distributed(rank, 2)`` slices partition every global batch;
building and iterating leave the options untouched; the entry names its paper.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import datasampler
from utilities.errors import UserError

NAMES = datasampler.names()
# 10 classes of sizes 1..10 (55 images): some classes are smaller than the samples per class.
LABELS = np.repeat(np.arange(10), np.arange(1, 11))
# The episodic sampler (vMF paper) takes its batch from its own flags: 5 x 2 = 10 images, not --bs 12.
FLAGS = ("--bs", "12", "--samples_per_class", "3", "--seed", "4", "--episode_classes", "5", "--episode_samples", "2")


@pytest.fixture
def sampler_opt(make_opt):
    return lambda *argv: make_opt(*FLAGS, *argv)


def test_registry_is_not_empty():
    assert {"class_random", "random", "episodic", "greedy_coreset"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_len_batches_of_batch_size_valid_indices(name, sampler_opt, build_sampler, epoch_batches):
    sampler = build_sampler(name, sampler_opt(), LABELS)
    assert sampler.batch_size == (10 if name == "episodic" else 12)
    for epoch in (0, 1):
        batches = epoch_batches(sampler, epoch)
        assert len(batches) == len(sampler) > 0
        for b in batches:
            assert len(b) == sampler.batch_size
            assert all(type(i) is int and 0 <= i < len(LABELS) for i in b)


@pytest.mark.parametrize("name", NAMES)
def test_reproducible_per_seed_and_epoch(name, sampler_opt, build_sampler, epoch_batches):
    a, b = build_sampler(name, sampler_opt(), LABELS), build_sampler(name, sampler_opt(), LABELS)
    assert epoch_batches(a, 3) == epoch_batches(b, 3)
    assert epoch_batches(a, 3) != epoch_batches(a, 4)
    assert epoch_batches(build_sampler(name, sampler_opt("--seed", "5"), LABELS), 3) != epoch_batches(a, 3)
    # Without set_epoch the epoch advances on every pass.
    c = build_sampler(name, sampler_opt(), LABELS)
    assert list(c) == epoch_batches(b, 0) and list(c) == epoch_batches(b, 1)


@pytest.mark.parametrize("name", NAMES)
def test_ddp_rank_slices_partition_each_global_batch(name, sampler_opt, build_sampler, epoch_batches):
    full = epoch_batches(build_sampler(name, sampler_opt(), LABELS), 2)
    shards = []
    for rank in range(2):
        s = build_sampler(name, sampler_opt(), LABELS)
        s.set_distributed(rank, 2)
        shards.append(epoch_batches(s, 2))
    assert len(shards[0]) == len(shards[1]) == len(full)
    for b, r0, r1 in zip(full, *shards):
        assert len(r0) == len(r1) == len(b) // 2
        assert r0 + r1 == b  # contiguous halves of the same global batch
    s = build_sampler(name, sampler_opt(), LABELS)
    with pytest.raises(UserError):
        s.set_distributed(0, s.batch_size + 1)


@pytest.mark.parametrize("name", NAMES)
def test_options_are_not_modified(name, sampler_opt, build_sampler, epoch_batches):
    opt = sampler_opt()
    before = copy.deepcopy(vars(opt))
    sampler = build_sampler(name, opt, LABELS)
    sampler.set_distributed(1, 2)
    epoch_batches(sampler, 0)
    assert vars(opt) == before
    assert opt.bs == 12 and opt.samples_per_class == 3


@pytest.mark.parametrize("name", NAMES)
def test_entry_names_its_paper(name):
    assert datasampler.REGISTRY.get(name).paper.strip()
