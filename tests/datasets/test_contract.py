"""Contract of every registered dataset (``datasets.names()``), so a new entry is tested automatically.

For each name the tiny on-disk data comes from ``datasets.synthetic.GENERATORS`` (a dataset that reads files
but has none FAILS here, saying so; an embedded one needs none). ``datasets.select`` gives ``training`` / ``evaluation`` / ``validation`` /
``testing`` (validation: None under the Roth protocol without --use_tv_split, a split under the vMF one);
every split is a ``torch.utils.data.Dataset`` yielding ``(image tensor, int label, int index)`` with numpy
integer ``labels``, ``class_names``, a boolean ``closed_set`` that says whether its classes are the train
classes, ``query`` / ``gallery`` (None, or boolean masks selecting each at least one item) and
``raw_image(i)``; training labels are 0..C-1; training and evaluation hold the same items. The
dataset's ``defaults`` are real flags that ``parse_args`` applies, and the entry names its paper.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
import parameters
from datasets import synthetic
from utilities.errors import UserError

NAMES = datasets.names()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """``generated(name) -> (root, argv)``: the dataset's tiny files (``datasets.synthetic.GENERATORS``), written
    once per module; an embedded dataset (no generator) gets an empty folder."""
    cache = {}

    def get(name: str):
        if name not in cache:
            root = tmp_path_factory.mktemp(name)
            make = synthetic.GENERATORS.get(name)
            cache[name] = root, (make(str(root)) if make else ())
        return cache[name]

    return get


def load(name: str, opt) -> dict:
    """``datasets.select``; a dataset that reads files but has no generator fails with what to add."""
    try:
        return datasets.select(name, opt)
    except UserError as err:
        if name in synthetic.GENERATORS:
            raise
        pytest.fail(f"dataset '{name}' needs files ({err}); add a generator of a tiny copy to GENERATORS in "
                    "datasets/synthetic.py, so that every registered dataset is tested")


def test_every_generator_is_a_registered_dataset():
    assert set(synthetic.GENERATORS) <= set(NAMES)


def class_names_of(split) -> set[str]:
    return {split.class_names[y] for y in split.labels}


def check_split(split, train_names: list[str]) -> None:
    assert isinstance(split, torch.utils.data.Dataset) and len(split) > 0
    assert isinstance(split.labels, np.ndarray) and np.issubdtype(split.labels.dtype, np.integer)
    assert split.labels.shape == (len(split),)
    assert all(isinstance(split.class_names[y], str) for y in np.unique(split.labels))
    assert type(split.closed_set) is bool
    # query -> gallery splits (In-Shop, csv): boolean masks over the split, each selecting at least one item.
    assert (split.query is None) == (split.gallery is None)
    if split.query is not None:
        for mask in (split.query, split.gallery):
            assert mask.dtype == bool and mask.shape == (len(split),) and mask.any()
    # Closed-set: every class of the split is a train class, with the train label.
    assert split.closed_set == (class_names_of(split) <= set(train_names))
    if split.closed_set:
        assert all(split.class_names[y] == train_names[y] for y in np.unique(split.labels))
    else:  # class-disjoint (retrieval on unseen classes), never a mix
        assert not class_names_of(split) & set(train_names)
    for i in (0, len(split) - 1):
        x, y, idx = split[i]
        assert isinstance(x, torch.Tensor) and x.ndim == 3 and x.is_floating_point() and torch.isfinite(x).all()
        assert type(y) is int and y == split.labels[i]
        assert type(idx) is int and idx == i
        assert isinstance(split.raw_image(i), Image.Image)


@pytest.mark.parametrize("protocol", ["roth", "vmf"])
@pytest.mark.parametrize("name", NAMES)
def test_splits(name, protocol, generated, dataset_opt, cifar_unchecked):
    root, argv = generated(name)
    data = load(name, dataset_opt(name, root, "--split_protocol", protocol, *argv))
    assert set(data) == {"training", "evaluation", "validation", "testing"}
    assert (data["validation"] is None) == (protocol == "roth")  # roth: validation only with --use_tv_split
    train, evaluation = data["training"], data["evaluation"]
    n_classes = len(np.unique(train.labels))
    assert n_classes >= 2
    np.testing.assert_array_equal(np.unique(train.labels), np.arange(n_classes))  # 0..C-1
    train_names = [train.class_names[c] for c in range(n_classes)]
    assert len(set(train_names)) == n_classes
    assert train.closed_set and evaluation.closed_set
    for split in data.values():
        if split is not None:
            check_split(split, train_names)
    # Training and evaluation hold the same items (only the transforms differ).
    assert len(evaluation) == len(train)
    np.testing.assert_array_equal(evaluation.labels, train.labels)
    assert [evaluation.class_names[y] for y in evaluation.labels] == [train.class_names[y] for y in train.labels]
    for i in range(len(train)):
        np.testing.assert_array_equal(np.asarray(evaluation.raw_image(i)), np.asarray(train.raw_image(i)))


@pytest.mark.parametrize("name", NAMES)
def test_defaults_are_real_flags_applied_by_parse_args(name, make_opt):
    defaults = datasets.defaults(name)
    flags = {action.dest for action in parameters.build_parser()._actions}
    assert set(defaults) <= flags, set(defaults) - flags
    opt = make_opt("--dataset", name)
    for key, value in defaults.items():
        assert getattr(opt, key) == value, key


@pytest.mark.parametrize("name", NAMES)
def test_entry_names_its_paper(name):
    assert datasets.REGISTRY.get(name).paper.strip()
