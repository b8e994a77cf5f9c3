"""Dataset loaders on generated fixtures: exact splits, labels, transforms and errors.

Expected splits are recomputed independently from the files on disk (sorted folder
names, the SOP info files read with pandas as the Roth suite does, the raw MNIST /
CIFAR files, scikit-learn's digits).
"""

from __future__ import annotations

import os
import pickle
import shutil
import struct

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from scipy.stats import spearmanr
from sklearn.datasets import load_digits

import datasets
from datasets import digits as digits_module
from datasets import synthetic
from utilities.errors import UserError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("data")
    synthetic.make_cub200(str(r), per_class=1, size=12)
    synthetic.make_cars196(str(r), per_class=1, size=12)
    synthetic.make_online_products(str(r), n_classes=24, per_class=2, size=12)
    synthetic.make_folder_dataset(str(r), name="halves", n_classes=6, per_class=2, size=12)
    synthetic.make_folder_dataset(str(r), name="tt", n_classes=4, per_class=2, size=12, train_test=True)
    synthetic.make_mnist(str(r), "mnist", per_class=4)
    synthetic.make_mnist(str(r), "fashion_mnist", per_class=4)
    synthetic.make_cifar(str(r), "cifar10", per_class=4)
    synthetic.make_cifar(str(r), "cifar100", per_class=3)
    synthetic.make_in_shop(str(r), n_items=12, per_item=3, size=12)
    synthetic.make_csv_dataset(str(r / "table"), n_classes=8, per_class=3, size=12)
    return r


def folder_of(path: str) -> str:
    return os.path.basename(os.path.dirname(path))


def check_item(ds, i: int = 0) -> None:
    x, y, idx = ds[i]
    assert isinstance(x, torch.Tensor) and type(y) is int and type(idx) is int and idx == i
    assert y == ds.labels[i]


@pytest.mark.parametrize("name,n_classes", [("cub200", 200), ("cars196", 196)])
def test_class_folder_half_split(root, name, n_classes, dataset_opt):
    folders = sorted(os.listdir(root / name / "images"))
    assert len(folders) == n_classes
    data = datasets.select(name, dataset_opt(name, root))
    half = n_classes // 2
    train, test = data["training"], data["testing"]
    assert data["validation"] is None
    assert {folder_of(p) for p in train.image_paths} == set(folders[:half])
    assert {folder_of(p) for p in test.image_paths} == set(folders[half:])
    # Train labels 0..C-1 by sorted folder; test labels are the original class ids.
    assert [folders.index(folder_of(p)) for p in train.image_paths] == train.labels.tolist()
    assert [folders.index(folder_of(p)) for p in test.image_paths] == test.labels.tolist()
    assert data["evaluation"].image_paths == train.image_paths
    assert train.class_names[train.labels[0]] == folder_of(train.image_paths[0])
    check_item(train)
    check_item(test, 3)


def test_online_products_follow_info_files(root, dataset_opt):
    sop = root / "online_products"
    data = datasets.select("online_products", dataset_opt("online_products", root))
    for split, fname in (("training", "Ebay_train.txt"), ("testing", "Ebay_test.txt")):
        table = pd.read_table(sop / "Info_Files" / fname, header=0, delimiter=" ")
        ds = data[split]
        assert len(ds) == len(table)
        expected = sorted(zip([str(sop / "images" / p) for p in table["path"]], (table["class_id"] - 1).tolist()))
        assert sorted(zip(ds.image_paths, ds.labels.tolist())) == expected
        assert all(os.path.isfile(p) for p in ds.image_paths)
    assert set(data["training"].labels.tolist()) == set(range(12))
    assert "bicycle_final/" in data["training"].class_names[0]
    check_item(data["testing"])


def test_folder_dataset_layouts(root, dataset_opt):
    halves = datasets.select("folder", dataset_opt("folder", root, folder_root="halves"))
    assert {folder_of(p) for p in halves["training"].image_paths} == {f"class_{i:02d}" for i in range(3)}
    assert {folder_of(p) for p in halves["testing"].image_paths} == {f"class_{i:02d}" for i in range(3, 6)}
    tt = datasets.select("folder", dataset_opt("folder", root, folder_root=str(root / "tt")))  # absolute root
    assert all("/train/" in p for p in tt["training"].image_paths)
    assert all("/test/" in p for p in tt["testing"].image_paths)
    assert not halves["testing"].closed_set and tt["testing"].closed_set
    # Same classes in train and test: test labels share the train labels.
    names = [folder_of(p) for p in tt["testing"].image_paths]
    assert [int(n[-2:]) for n in names] == tt["testing"].labels.tolist()


def test_cars196_vmf_split_falls_back_to_positions_for_other_names(tmp_path, dataset_opt):
    synthetic.make_cars196(str(tmp_path), n_classes=196 - 1, per_class=1, size=8)  # made-up folder names
    synthetic._class_folders(str(tmp_path / "cars196" / "images"), ["Zz Last 2000"], 1, 8, 0)
    cars = sorted(os.listdir(tmp_path / "cars196" / "images"))
    with pytest.warns(UserWarning, match="not the 196 official class names"):
        data = datasets.select("cars196", dataset_opt("cars196", tmp_path, split_protocol="vmf"))
    expected = [29, 33, 36, 39, 40, 44, 54, 55, 57, 61, 62, 63, 78, 85, 92]
    assert {folder_of(p) for p in data["validation"].image_paths} == {cars[i] for i in expected}


def test_tv_split_by_classes(root, dataset_opt):
    """Roth suite: the first 80% of the sorted train classes train, the rest validate, whatever the seed."""
    opt = dataset_opt("cub200", root, use_tv_split=True, tv_split_perc=0.8, seed=3)
    data = datasets.select("cub200", opt)
    train_f = {folder_of(p) for p in data["training"].image_paths}
    val_f = {folder_of(p) for p in data["validation"].image_paths}
    folders = sorted(os.listdir(root / "cub200" / "images"))
    assert train_f == set(folders[:80]) and val_f == set(folders[80:100])
    assert sorted(set(data["training"].labels.tolist())) == list(range(80))
    assert data["evaluation"].image_paths == data["training"].image_paths
    other = datasets.select("cub200", dataset_opt("cub200", root, use_tv_split=True, tv_split_perc=0.8, seed=4))
    assert other["validation"].image_paths == data["validation"].image_paths


def test_tv_split_random_draws_classes_by_seed(root, dataset_opt):
    opt = dataset_opt("cub200", root, use_tv_split=True, tv_split_perc=0.8, seed=3, tv_split_random=True)
    data = datasets.select("cub200", opt)
    train_f = {folder_of(p) for p in data["training"].image_paths}
    val_f = {folder_of(p) for p in data["validation"].image_paths}
    folders = sorted(os.listdir(root / "cub200" / "images"))
    assert len(train_f) == 80 and len(val_f) == 20 and not train_f & val_f
    assert train_f | val_f == set(folders[:100]) and val_f != set(folders[80:100])
    again = datasets.select("cub200", opt)
    assert again["validation"].image_paths == data["validation"].image_paths
    opt4 = dataset_opt("cub200", root, use_tv_split=True, tv_split_perc=0.8, seed=4, tv_split_random=True)
    assert datasets.select("cub200", opt4)["validation"].image_paths != data["validation"].image_paths


def test_tv_split_by_samples_keeps_evenly_spaced_images():
    """Roth suite: round(linspace(0, n-1, int(n * perc))) of each class's images stay in training."""
    from datasets._splits import split_by_samples

    classes = np.array([0] * 10 + [1] * 5 + [2] * 3)
    train, val = split_by_samples(classes, 0.5, seed=None)
    expected = []
    for start, n in [(0, 10), (10, 5), (15, 3)]:
        kept = sorted({int(round(x)) for x in np.linspace(0, n - 1, int(n * 0.5))})
        expected += [start + k for k in kept]
    assert train.tolist() == expected
    assert sorted(train.tolist() + val.tolist()) == list(range(18))


def test_tv_split_by_samples(root, dataset_opt):
    opt = dataset_opt("online_products", root, use_tv_split=True, tv_split_by_samples=True, tv_split_perc=0.5)
    data = datasets.select("online_products", opt)
    train, val = data["training"], data["validation"]
    assert not set(train.image_paths) & set(val.image_paths)
    assert len(train) + len(val) == 24  # 12 train classes x 2 images
    # Every class keeps one image in each split, with the same label in both.
    cls_of = lambda ds: {p.rsplit("_", 1)[0]: y for p, y in zip(ds.image_paths, ds.labels.tolist())}  # noqa: E731
    assert cls_of(train) == cls_of(val)
    assert sorted(set(train.labels.tolist())) == list(range(12))


def test_vmf_protocol_validation_classes(root, dataset_opt):
    folders = sorted(os.listdir(root / "cub200" / "images"))
    data = datasets.select("cub200", dataset_opt("cub200", root, split_protocol="vmf"))
    expected = [27, 33, 35, 39, 40, 42, 56, 59, 61, 63, 68, 81, 85, 94, 98]
    assert {folder_of(p) for p in data["validation"].image_paths} == {folders[i] for i in expected}
    assert len(set(data["training"].labels.tolist())) == 85
    # CARS196: the paper's ids are official class ids (cars_annos.mat), not sorted-folder positions.
    from datasets._cars196_classes import OFFICIAL_CLASS_NAMES

    data = datasets.select("cars196", dataset_opt("cars196", root, split_protocol="vmf"))
    expected = [29, 33, 36, 39, 40, 44, 54, 55, 57, 61, 62, 63, 78, 85, 92]
    val = {folder_of(p) for p in data["validation"].image_paths}
    assert val == {OFFICIAL_CLASS_NAMES[i] for i in expected}
    assert "BMW 3 Series Wagon 2012" in val and "BMW 6 Series Convertible 2007" not in val  # id 29 vs 30
    assert len(set(data["training"].labels.tolist())) == 83
    sop = datasets.select("online_products", dataset_opt("online_products", root, split_protocol="vmf"))
    assert len(set(sop["validation"].labels.tolist())) == round(12 * 1698 / 11318)


# Which splits share the train classes (closed_set), by each dataset's protocol: class-disjoint retrieval
# datasets (CUB200, CARS196, SOP, a half/half folder, digits' dml split) test and validate on unseen classes;
# classification datasets (MNIST-likes, CIFAR, a train/test folder, digits' classification split) on the train
# classes; a validation split carved by samples keeps the train classes. None: no validation split.
VMF = {"split_protocol": "vmf"}
BY_SAMPLES = {"use_tv_split": True, "tv_split_by_samples": True, "tv_split_perc": 0.5}
CLOSED_SET = [
    ("cub200", {}, None, False),
    ("cub200", {"use_tv_split": True}, False, False),
    ("cub200", VMF, False, False),
    ("cars196", {}, None, False),
    ("cars196", VMF, False, False),
    ("online_products", {}, None, False),
    ("online_products", BY_SAMPLES, True, False),
    ("online_products", VMF, False, False),
    ("folder", {"folder_root": "halves"}, None, False),
    ("folder", {"folder_root": "halves", **VMF}, False, False),
    ("folder", {"folder_root": "tt"}, None, True),
    ("folder", {"folder_root": "tt", **VMF}, True, True),
    ("mnist", {}, None, True),
    ("mnist", VMF, True, True),
    ("fashion_mnist", {}, None, True),
    ("fashion_mnist", VMF, True, True),
    ("cifar10", {}, None, True),
    ("cifar10", VMF, True, True),
    ("cifar100", {}, None, True),
    ("cifar100", VMF, True, True),
    ("digits", {}, None, False),
    ("digits", VMF, False, False),
    ("digits", {"digits_split": "classification"}, True, True),
    ("in_shop", {}, None, False),
    ("in_shop", VMF, False, False),
    ("csv", {}, None, False),
    ("csv", VMF, False, False),
]


@pytest.mark.parametrize("name,flags,validation,testing", CLOSED_SET)
def test_closed_set_follows_the_protocol(root, name, flags, validation, testing, dataset_opt, cifar_unchecked):
    if name == "csv":  # the table, not a folder, is the --source_path
        flags = {**flags, "source_path": str(root / "table" / "dataset.csv")}
    data = datasets.select(name, dataset_opt(name, root, **flags))
    assert data["training"].closed_set is True and data["evaluation"].closed_set is True
    assert data["testing"].closed_set is testing
    if validation is None:
        assert data["validation"] is None
    else:
        assert data["validation"].closed_set is validation


def test_every_dataset_has_a_closed_set_case():
    assert {name for name, *_ in CLOSED_SET} == set(datasets.names())


def test_transforms_sizes_and_no_augmentation(root, dataset_opt):
    data = datasets.select("cars196", dataset_opt("cars196", root, image_size=224))
    assert data["training"][0][0].shape == (3, 224, 224)
    assert data["testing"][0][0].shape == (3, 224, 224)
    small = datasets.select("cars196", dataset_opt("cars196", root, image_size=16, augmentation="none"))
    x_train, x_eval = small["training"][5][0], small["evaluation"][5][0]
    assert x_train.shape == (3, 16, 16) and torch.equal(x_train, x_eval)


@pytest.mark.parametrize(
    "mode,steps",
    [
        ("base", [("RandomResizedCrop", 224), ("RandomHorizontalFlip", 0.5)]),
        ("big", [("RandomResizedCrop", 256), ("RandomHorizontalFlip", 0.5)]),
        ("adv", [("RandomResizedCrop", 224), ("RandomGrayscale", 0.2), ("ColorJitter", None),
                 ("RandomHorizontalFlip", 0.5)]),
        ("red", [("Resize", 256), ("RandomCrop", 224), ("RandomHorizontalFlip", 0.5)]),
        ("none", [("Resize", 256), ("CenterCrop", 224)]),
    ],
)  # fmt: skip
def test_train_transform_composition(root, mode, steps, dataset_opt):
    """The Roth suite's --augmentation modes, step by step, before ToTensor + ImageNet normalisation."""
    ds = datasets.select("cub200", dataset_opt("cub200", root, image_size=224, augmentation=mode))["training"]
    got = ds.transform.transforms
    assert [type(t).__name__ for t in got] == [name for name, _ in steps] + ["ToTensor", "Normalize"]
    for t, (name, arg) in zip(got, steps):
        if name in ("RandomResizedCrop", "RandomCrop", "CenterCrop"):
            assert tuple(t.size) == (arg, arg)
        elif name == "Resize":
            assert t.size == arg
        elif name in ("RandomHorizontalFlip", "RandomGrayscale"):
            assert t.p == arg
    assert list(got[-1].mean) == [0.485, 0.456, 0.406] and list(got[-1].std) == [0.229, 0.224, 0.225]
    test_t = datasets.select("cub200", dataset_opt("cub200", root, image_size=224, augmentation=mode))[
        "testing"
    ].transform
    crop = 256 if mode == "big" else 224
    assert [type(t).__name__ for t in test_t.transforms[:2]] == ["Resize", "CenterCrop"]
    assert test_t.transforms[0].size == 256 and tuple(test_t.transforms[1].size) == (crop, crop)


def test_test_transform_reference_values(root, dataset_opt):
    """Resize(round(s*256/224)) + CenterCrop(s) + ImageNet normalisation, and BGR 0-255 for bninception."""
    ds = datasets.select("cub200", dataset_opt("cub200", root, image_size=8))["testing"]
    img = Image.open(ds.image_paths[0]).convert("RGB")
    ref = np.asarray(TF.center_crop(TF.resize(img, round(8 * 256 / 224)), 8), dtype=np.float64) / 255
    ref = (ref - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(ds[0][0].permute(1, 2, 0).numpy(), ref, atol=1e-5)
    bn = datasets.select("cub200", dataset_opt("cub200", root, image_size=8, arch="bninception_frozen"))["testing"]
    raw = np.asarray(TF.center_crop(TF.resize(img, round(8 * 256 / 224)), 8), dtype=np.float64)
    ref_bgr = raw[..., ::-1] - [104, 117, 128]  # pretrainedmodels: BGR, 0-255, mean (104, 117, 128)
    np.testing.assert_allclose(bn[0][0].permute(1, 2, 0).numpy(), ref_bgr, atol=1e-3)


def test_missing_dataset_folder_names_path(tmp_path, dataset_opt):
    for name, part in (("cub200", "cub200"), ("cars196", "cars196"), ("online_products", "online_products")):
        with pytest.raises(UserError, match=str(tmp_path / part)):
            datasets.select(name, dataset_opt(name, tmp_path))
    with pytest.raises(UserError, match="expected layout"):
        datasets.select("folder", dataset_opt("folder", tmp_path, folder_root="nope"))


def test_missing_sop_info_file(root, tmp_path, dataset_opt):
    shutil.copytree(root / "online_products", tmp_path / "online_products")
    os.remove(tmp_path / "online_products" / "Info_Files" / "Ebay_test.txt")
    with pytest.raises(UserError, match="Ebay_test.txt"):
        datasets.select("online_products", dataset_opt("online_products", tmp_path))


def test_corrupt_image_names_file(root, tmp_path, dataset_opt):
    shutil.copytree(root / "halves", tmp_path / "halves")
    bad = tmp_path / "halves" / "class_00" / "class_00_0000.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    data = datasets.select("folder", dataset_opt("folder", tmp_path, folder_root="halves"))
    index = data["training"].image_paths.index(str(bad))
    with pytest.raises(UserError, match="class_00_0000.jpg"):
        data["training"][index]


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100"])
def test_torchvision_missing_is_user_error(tmp_path, name, dataset_opt):
    with pytest.raises(UserError, match=str(tmp_path / name)) as err:
        datasets.select(name, dataset_opt(name, tmp_path))
    assert "\n" not in str(err.value)


def test_mnist_matches_raw_files(root, dataset_opt):
    data = datasets.select("mnist", dataset_opt("mnist", root))
    raw = root / "mnist" / "MNIST" / "raw"
    labels = np.frombuffer((raw / "train-labels-idx1-ubyte").read_bytes()[8:], dtype=np.uint8)
    blob = (raw / "train-images-idx3-ubyte").read_bytes()
    n, h, w = struct.unpack(">III", blob[4:16])
    images = np.frombuffer(blob[16:], dtype=np.uint8).reshape(n, h, w)
    train = data["training"]
    assert train.labels.tolist() == labels.tolist()
    x = train[7][0]
    np.testing.assert_allclose(x[0].numpy() * 0.3081 + 0.1307, images[7] / 255, atol=1e-5)
    assert set(data["testing"].labels.tolist()) == set(range(10))


def test_cifar_matches_raw_files(root, cifar_unchecked, dataset_opt):
    data = datasets.select("cifar10", dataset_opt("cifar10", root, augmentation="none"))
    with open(root / "cifar10" / "cifar-10-batches-py" / "test_batch", "rb") as f:
        batch = pickle.load(f)
    test = data["testing"]
    assert test.labels.tolist() == batch["labels"]
    ref = batch["data"][2].reshape(3, 32, 32) / 255
    mean, std = np.array([0.4914, 0.4822, 0.4465])[:, None, None], np.array([0.2470, 0.2435, 0.2616])[:, None, None]
    np.testing.assert_allclose(test[2][0].numpy() * std + mean, ref, atol=1e-5)
    vmf = datasets.select("cifar10", dataset_opt("cifar10", root, split_protocol="vmf"))
    assert set(vmf["validation"].labels.tolist()) == set(range(10))  # stratified: every class in validation
    assert not set(vmf["validation"].indices) & set(vmf["training"].indices)


def test_digits_dml_split(dataset_opt):
    ref = load_digits()
    data = datasets.select("digits", dataset_opt("digits", "/nonexistent"))
    train, test = data["training"], data["testing"]
    assert sorted(set(train.labels.tolist())) == [0, 1, 2, 3, 4]
    assert sorted(set(test.labels.tolist())) == [5, 6, 7, 8, 9]
    assert len(train) == int(np.isin(ref.target, range(5)).sum()) and len(train) + len(test) == 1797
    x, y, i = train[10]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    g = train.indices[10]
    assert y == ref.target[g]
    np.testing.assert_allclose(x[0].numpy() * digits_module.STD + digits_module.MEAN, ref.images[g] / 16, atol=1e-6)
    assert train.corruption is None and data["validation"] is None
    assert datasets.defaults("digits")["arch"] == "mnist_cnn" and datasets.defaults("digits")["not_pretrained"]


def test_digits_classification_split_is_stratified(dataset_opt):
    ref = load_digits().target
    data = datasets.select("digits", dataset_opt("digits", "/nonexistent", digits_split="classification", seed=5))
    splits = [data["training"], data["validation"], data["testing"]]
    idx = [set(s.indices.tolist()) for s in splits]
    assert not (idx[0] & idx[1] or idx[0] & idx[2] or idx[1] & idx[2])
    assert set().union(*idx) == set(range(1797))
    counts = np.bincount(ref, minlength=10)
    test_counts = np.bincount(data["testing"].labels, minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * counts) <= 1)
    for s in splits:
        assert np.array_equal(s.labels, ref[s.indices])  # labels shared across splits
    again = datasets.select("digits", dataset_opt("digits", "/nonexistent", digits_split="classification", seed=5))
    assert np.array_equal(again["testing"].indices, data["testing"].indices)


def test_digits_corruption(dataset_opt):
    clean = datasets.select("digits", dataset_opt("digits", "/nonexistent"))["testing"]
    data = datasets.select(
        "digits", dataset_opt("digits", "/nonexistent", digits_corruption=0.6, digits_corruption_type="both")
    )
    test = data["testing"]
    assert test.corruption.shape == (len(test),) and 0 <= test.corruption.min() and test.corruption.max() <= 0.6
    assert data["training"].corruption is not None
    diff = np.array([(test[i][0] - clean[i][0]).abs().mean().item() for i in range(200)])
    assert spearmanr(test.corruption[:200], diff)[0] > 0.8
    again = datasets.select(
        "digits", dataset_opt("digits", "/nonexistent", digits_corruption=0.6, digits_corruption_type="both")
    )
    assert np.array_equal(again["testing"].corruption, test.corruption)
    assert torch.equal(again["testing"][3][0], test[3][0])
