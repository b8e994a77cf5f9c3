"""Rank-aware sampling (``BatchSampler.set_distributed``), without processes: for N = 1, 2, 4 ranks every sampler
yields the same global batches (the ranks' slices, in rank order), so the epoch length and the samples seen do not
depend on N; the class-structured samplers hand every rank whole classes whenever the classes per batch can be
shared out, and say so (one warning) when they cannot.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import datasampler
from utilities.errors import UserError

NAMES = datasampler.names()
UNSTRUCTURED = {"random", "full_random"}  # batches without a class layout (contiguous slices, nothing to keep whole)
LABELS = np.repeat(np.arange(12), 10)  # 12 classes of 10 images: no class is smaller than a batch's share
# 24 = 8 classes x 3 (episodic: its own flags, also 8 x 3): 8, 4 or 2 whole classes per rank for N = 1, 2, 4.
FLAGS = ("--bs", "24", "--samples_per_class", "3", "--seed", "7", "--episode_classes", "8", "--episode_samples", "3",
         "--n_episodes", "5", "--data_batchmatch_bigbs", "60")  # fmt: skip


def rank_batches(build_sampler, name: str, opt, n_ranks: int, epoch: int = 1) -> list[list[list[int]]]:
    """[rank][batch] -> indices of one epoch, each rank from its own sampler (as each process builds one)."""
    out = []
    for rank in range(n_ranks):
        sampler = build_sampler(name, opt, LABELS)
        sampler.set_distributed(rank, n_ranks)
        sampler.set_epoch(epoch)
        out.append(list(sampler))
    return out


@pytest.fixture
def opt_of(make_opt):
    return lambda name, *argv: make_opt("--data_sampler", name, *FLAGS, *argv)


@pytest.mark.parametrize("name", NAMES)
def test_global_batches_and_epoch_do_not_depend_on_n(name, opt_of, build_sampler):
    opt = opt_of(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 8 classes per batch share out over 1, 2, 4 ranks: no split, no warning
        reference = rank_batches(build_sampler, name, opt, 1)[0]
        for n in (2, 4):
            per_rank = rank_batches(build_sampler, name, opt, n)
            assert all(len(b) == len(reference) for b in per_rank)  # same epoch length
            for i, batch in enumerate(reference):
                slices = [per_rank[r][i] for r in range(n)]
                assert all(len(s) == len(batch) // n for s in slices)
                assert sum(slices, []) == batch  # rank order rebuilds the global batch: same samples seen


@pytest.mark.parametrize("name", NAMES)
def test_class_balanced_samplers_give_each_rank_whole_classes(name, opt_of, build_sampler):
    opt = opt_of(name)
    sampler = build_sampler(name, opt, LABELS)
    if sampler.class_groups() is None:  # no class layout to keep whole
        assert name in UNSTRUCTURED
        return
    groups = np.asarray(sampler.class_groups())
    assert groups.sum() == sampler.batch_size and (groups == 3).all()
    for n in (1, 2, 4):
        per_rank = rank_batches(build_sampler, name, opt, n)
        for i in range(len(per_rank[0])):
            batch = sum((per_rank[r][i] for r in range(n)), [])
            labels = LABELS[batch]
            # The global batch is laid out in same-class groups of the declared sizes ...
            starts = np.concatenate([[0], np.cumsum(groups)[:-1]])
            assert all(len(set(labels[s : s + g])) == 1 for s, g in zip(starts, groups))
            # ... and every rank's slice is whole groups: its classes' images are all in it, with positives.
            for r in range(n):
                own = LABELS[per_rank[r][i]]
                assert len(own) % 3 == 0 and all((own == c).sum() % 3 == 0 for c in np.unique(own))
                if name in ("class_random", "episodic"):  # distinct classes per batch: none on two ranks
                    others = set(np.concatenate([LABELS[per_rank[q][i]] for q in range(n) if q != r] or [[]]))
                    assert not set(own.tolist()) & others


def test_split_classes_are_announced(opt_of, build_sampler):
    opt = opt_of("class_random", "--bs", "18")  # 6 classes x 3: 3 per rank on 2 ranks, no whole share on 4 ...
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_sampler("class_random", opt, LABELS).set_distributed(1, 2)
    with pytest.raises(UserError, match="not divisible by the 4 processes"):  # ... 18 / 4 is no batch at all
        build_sampler("class_random", opt, LABELS).set_distributed(0, 4)
    opt = opt_of("class_random", "--bs", "12", "--samples_per_class", "2")  # 6 classes x 2 on 4 ranks: 3 each
    with pytest.warns(UserWarning, match="cannot be shared out as whole classes among 4 processes"):
        build_sampler("class_random", opt, LABELS).set_distributed(0, 4)
    with pytest.warns(UserWarning):
        per_rank = rank_batches(build_sampler, "class_random", opt, 4)  # still a partition of the same batches
    single = rank_batches(build_sampler, "class_random", opt, 1)[0]
    assert [sum((per_rank[r][i] for r in range(4)), []) for i in range(len(single))] == single


def test_rank_outside_the_processes_is_refused(opt_of, build_sampler):
    with pytest.raises(UserError, match="rank 2 is outside the 2 processes"):
        build_sampler("class_random", opt_of("class_random"), LABELS).set_distributed(2, 2)
