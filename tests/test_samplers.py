"""Batch samplers: every registered sampler yields len() batches of valid indices, is
reproducible per (seed, epoch) and shards across DDP ranks; class-based samplers keep the
(classes x samples per class) composition and clamp with a warning."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest
import torch

import datasampler
import parameters
from utilities.errors import UserError

# 10 classes of sizes 1..10 (55 images): some classes are smaller than samples_per_class.
LABELS = np.repeat(np.arange(10), np.arange(1, 11))


def make_opt(*argv: str):
    # The episodic sampler (vMF paper) takes its batch shape from its own flags: the same 4 x 3 here.
    base = ["--bs", "12", "--samples_per_class", "3", "--seed", "4", "--episode_classes", "4", "--episode_samples", "3"]
    return parameters.build_parser().parse_args([*base, *argv])


def build(name: str, opt=None, labels=LABELS):
    sampler = datasampler.select(name, opt or make_opt(), labels)
    if getattr(sampler, "requires_storage", False):  # batch-selection samplers need train embeddings first
        sampler.init_storage(torch.randn(len(labels), 6, generator=torch.Generator().manual_seed(0)))
    return sampler


def epoch(sampler, e: int) -> list[list[int]]:
    sampler.set_epoch(e)
    return list(sampler)


@pytest.mark.parametrize("name", datasampler.names())
def test_batches_count_size_and_indices(name):
    sampler = build(name)
    batches = epoch(sampler, 0)
    assert len(batches) == len(sampler) > 0
    for b in batches:
        assert len(b) == sampler.batch_size
        assert all(isinstance(i, int) and 0 <= i < len(LABELS) for i in b)


@pytest.mark.parametrize("name", ["class_random", "full_random", "random"])
def test_roth_samplers_use_bs_and_one_pass_per_epoch(name):
    sampler = build(name)
    assert sampler.batch_size == 12 and len(sampler) == len(LABELS) // 12


@pytest.mark.parametrize("name", datasampler.names())
def test_reproducible_per_seed_and_epoch(name):
    a, b = build(name), build(name)
    assert epoch(a, 3) == epoch(b, 3)
    assert epoch(a, 3) != epoch(a, 4)
    assert epoch(build(name, make_opt("--seed", "5")), 3) != epoch(a, 3)
    # Without set_epoch the epoch advances on every pass.
    c = build(name)
    assert list(c) == epoch(build(name), 0) and list(c) == epoch(build(name), 1)


@pytest.mark.parametrize("name", datasampler.names())
def test_ddp_ranks_get_slices_of_the_same_batches(name):
    full = epoch(build(name), 2)
    shards = []
    for rank in range(2):
        s = build(name)
        s.set_distributed(rank, 2)
        shards.append(epoch(s, 2))
    assert [x + y for x, y in zip(*shards)] == full
    s = build(name)
    with pytest.raises(UserError):
        s.set_distributed(0, s.batch_size + 1)


@pytest.mark.parametrize("name", [n for n in datasampler.names() if datasampler.REGISTRY.get(n).obj.class_based])
def test_class_composition(name):
    sampler = build(name)
    spc = sampler.samples_per_class  # 3 here; samplers with their own flags (episodic) set it
    assert sampler.classes_per_batch == sampler.batch_size // spc <= 10
    seen = Counter()
    for b in epoch(sampler, 0)[:20] + epoch(sampler, 1)[:20]:
        counts = Counter(LABELS[b].tolist())
        assert sorted(counts.values()) == [spc] * sampler.classes_per_batch
        for c in counts:  # distinct images where the class has enough (else drawn with replacement)
            members = [i for i in b if LABELS[i] == c]
            assert len(set(members)) == spc or (LABELS == c).sum() < spc
        seen.update(counts)
    assert len(seen) == 10, "every class is drawn at some point"


@pytest.mark.parametrize("name", [n for n in datasampler.names() if datasampler.REGISTRY.get(n).obj.class_based])
def test_clamps_classes_per_batch_with_a_warning(name):
    labels = np.repeat(np.arange(3), 10)
    opt = make_opt("--bs", "12", "--samples_per_class", "2", "--episode_classes", "4", "--episode_samples", "3")
    with pytest.warns(UserWarning):
        sampler = build(name, opt, labels)
    assert sampler.classes_per_batch == 3
    for b in epoch(sampler, 0)[:20]:
        counts = sorted(Counter(labels[b].tolist()).values())
        assert len(b) == sampler.batch_size and len(counts) == 3 and counts[-1] - counts[0] <= 1


def test_class_random_warns_only_when_clamping():
    labels = np.repeat(np.arange(3), 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build("class_random", make_opt("--bs", "6", "--samples_per_class", "2"), labels)  # exactly 3 classes
    with pytest.warns(UserWarning, match="asks for 6 classes per batch"):
        sampler = build("class_random", make_opt("--bs", "12", "--samples_per_class", "2"), labels)
    assert all(sorted(Counter(labels[b].tolist()).values()) == [4, 4, 4] for b in epoch(sampler, 0))


def test_class_random_samples_small_classes_with_replacement():
    labels = np.array([0, 1, 1, 1, 2, 2, 2])
    sampler = build("class_random", make_opt("--bs", "6", "--samples_per_class", "3"), labels)
    hits = [b for e in range(4) for b in epoch(sampler, e) if 0 in b]
    assert hits and all(b.count(0) == 3 for b in hits)
    # A class of 2 < 3 images gives both, one of them twice.
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2])
    sampler = build("class_random", make_opt("--bs", "6", "--samples_per_class", "3"), labels)
    hits = [b for e in range(10) for b in epoch(sampler, e) if 0 in b]
    assert hits and all(sorted(i for i in b if labels[i] == 0) in ([0, 0, 1], [0, 1, 1]) for b in hits)


def test_full_random_has_a_positive_pair_and_uniform_classes():
    """The Roth suite's sampler: classes drawn uniformly (not by size), plus one same-class partner."""
    sampler = build("full_random")
    class_counts = Counter()
    for e in range(60):
        for b in epoch(sampler, e):
            assert any(LABELS[i] == LABELS[j] and i != j for k, i in enumerate(b) for j in b[k + 1 :])
            class_counts.update(LABELS[b[:-1]].tolist())
    n = sum(class_counts.values())
    assert all(abs(class_counts[c] / n - 0.1) < 0.03 for c in range(10))


def test_random_is_a_shuffle_without_repeats():
    batches = epoch(build("random"), 0)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) == 4 * 12


def test_batch_size_larger_than_dataset_is_a_user_error():
    with pytest.raises(UserError, match="exceeds"):
        datasampler.select("class_random", make_opt("--bs", "120"), LABELS)
