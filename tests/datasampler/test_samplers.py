"""The Roth suite's batch samplers (class_random, full_random, random) and every class-based sampler's
(classes x samples per class) composition, with the clamp warning. What every sampler must do (len, batch
size, reproducibility, DDP slices, untouched options) is in tests/datasampler/test_contract.py."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest

import datasampler
from utilities.errors import UserError

# 10 classes of sizes 1..10 (55 images): some classes are smaller than samples_per_class.
LABELS = np.repeat(np.arange(10), np.arange(1, 11))
# The episodic sampler (vMF paper) takes its batch shape from its own flags: the same 4 x 3 here.
FLAGS = ("--bs", "12", "--samples_per_class", "3", "--seed", "4", "--episode_classes", "4", "--episode_samples", "3")
CLASS_BASED = [n for n in datasampler.names() if datasampler.REGISTRY.get(n).obj.class_based]


@pytest.fixture
def build(make_opt, build_sampler):
    """``build(name, *argv, labels=LABELS)``: a sampler on ``FLAGS`` + ``argv``."""
    return lambda name, *argv, labels=LABELS: build_sampler(name, make_opt(*FLAGS, *argv), labels)


@pytest.mark.parametrize("name", ["class_random", "full_random", "random"])
def test_roth_samplers_use_bs_and_one_pass_per_epoch(name, build):
    sampler = build(name)
    assert sampler.batch_size == 12 and len(sampler) == len(LABELS) // 12


@pytest.mark.parametrize("name", CLASS_BASED)
def test_class_composition(name, build, epoch_batches):
    sampler = build(name)
    spc = sampler.samples_per_class  # 3 here; samplers with their own flags (episodic) set it
    assert sampler.classes_per_batch == sampler.batch_size // spc <= 10
    seen = Counter()
    for b in epoch_batches(sampler, 0)[:20] + epoch_batches(sampler, 1)[:20]:
        counts = Counter(LABELS[b].tolist())
        assert sorted(counts.values()) == [spc] * sampler.classes_per_batch
        for c in counts:  # distinct images where the class has enough (else drawn with replacement)
            members = [i for i in b if LABELS[i] == c]
            assert len(set(members)) == spc or (LABELS == c).sum() < spc
        seen.update(counts)
    assert len(seen) == 10, "every class is drawn at some point"


@pytest.mark.parametrize("name", CLASS_BASED)
def test_clamps_classes_per_batch_with_a_warning(name, build, epoch_batches):
    labels = np.repeat(np.arange(3), 10)
    with pytest.warns(UserWarning):
        sampler = build(name, "--samples_per_class", "2", labels=labels)
    assert sampler.classes_per_batch == 3
    for b in epoch_batches(sampler, 0)[:20]:
        counts = sorted(Counter(labels[b].tolist()).values())
        assert len(b) == sampler.batch_size and len(counts) == 3 and counts[-1] - counts[0] <= 1


def test_class_random_warns_only_when_clamping(build, epoch_batches):
    labels = np.repeat(np.arange(3), 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build("class_random", "--bs", "6", "--samples_per_class", "2", labels=labels)  # exactly 3 classes
    with pytest.warns(UserWarning, match="asks for 6 classes per batch"):
        sampler = build("class_random", "--bs", "12", "--samples_per_class", "2", labels=labels)
    assert all(sorted(Counter(labels[b].tolist()).values()) == [4, 4, 4] for b in epoch_batches(sampler, 0))


def test_class_random_samples_small_classes_with_replacement(build, epoch_batches):
    labels = np.array([0, 1, 1, 1, 2, 2, 2])
    sampler = build("class_random", "--bs", "6", labels=labels)
    hits = [b for e in range(4) for b in epoch_batches(sampler, e) if 0 in b]
    assert hits and all(b.count(0) == 3 for b in hits)
    # A class of 2 < 3 images gives both, one of them twice.
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2])
    sampler = build("class_random", "--bs", "6", labels=labels)
    hits = [b for e in range(10) for b in epoch_batches(sampler, e) if 0 in b]
    assert hits and all(sorted(i for i in b if labels[i] == 0) in ([0, 0, 1], [0, 1, 1]) for b in hits)


def test_full_random_has_a_positive_pair_and_uniform_classes(build, epoch_batches):
    """The Roth suite's sampler: classes drawn uniformly (not by size), plus one same-class partner."""
    sampler = build("full_random")
    class_counts = Counter()
    for e in range(60):
        for b in epoch_batches(sampler, e):
            assert any(LABELS[i] == LABELS[j] and i != j for k, i in enumerate(b) for j in b[k + 1 :])
            class_counts.update(LABELS[b[:-1]].tolist())
    n = sum(class_counts.values())
    assert all(abs(class_counts[c] / n - 0.1) < 0.03 for c in range(10))


def test_random_is_a_shuffle_without_repeats(build, epoch_batches):
    batches = epoch_batches(build("random"), 0)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) == 4 * 12


def test_batch_size_larger_than_dataset_is_a_user_error(make_opt):
    with pytest.raises(UserError, match="exceeds"):
        datasampler.select("class_random", make_opt(*FLAGS, "--bs", "120"), LABELS)
