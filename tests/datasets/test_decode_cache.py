"""The decode cache (``--decode_cache``, ``datasets._cache``) against the uncached torchvision pipeline
(``datasets._base.image_transforms`` on ``ImageFileDataset``), the independent reference.

* Test images and ``red`` / ``none`` training crops equal the reference bit for bit (the cache stores the test
  transform's ``Resize`` output); with ``--decode_cache_size full`` every augmentation does, for the same seed.
* Random-resized crops at the default size: measured from coordinate-encoded images (red = x, green = y), the
  distribution of crop area fraction and aspect ratio matches the reference's (two-sample KS test) and so does
  the flip rate; for the same seed, the crop box and the pixels are those of the reference (interpolated from the
  pre-resized image, the box rounded to whole cache pixels: about 2 of 255 grey levels apart on average).
* Built once, reused, keyed by the files; damaged caches are rebuilt with one warning line; an interrupted build
  leaves nothing; an unwritable folder and a corrupt image are one-line errors.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp

import datasets
from datasets import _cache
from datasets._base import IMAGENET_MEAN, IMAGENET_STD, ImageFileDataset, image_transforms
from datasets._cache import CachedImageDataset, DeviceNormalize, open_cache
from datasets.synthetic import make_photo_folders
from utilities.errors import UserError

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


@pytest.fixture(autouse=True)
def fresh_cache_registry(monkeypatch):
    """Caches opened by one test are not reused by another (each test has its own folders)."""
    monkeypatch.setattr(_cache, "_OPEN", {})


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    """12 photo-like JPEGs of about 120 x 90 (sizes vary)."""
    root = tmp_path_factory.mktemp("photos")
    make_photo_folders(str(root), "cub200", n_classes=3, per_class=4, width=120, height=90)
    return sorted(str(p) for p in root.rglob("*.jpg"))


@pytest.fixture(scope="module")
def coordinate_images(tmp_path_factory) -> list[tuple[str, int, int]]:
    """Lossless images whose red channel is the x and green channel the y coordinate: landscape and portrait."""
    root = tmp_path_factory.mktemp("coordinates")
    out = []
    for w, h in ((240, 180), (150, 200)):
        x, y = np.meshgrid(np.arange(w), np.arange(h))
        path = str(root / f"coord_{w}x{h}.png")
        Image.fromarray(np.stack([x, y, np.full_like(x, 128)], -1).astype(np.uint8)).save(path)
        out.append((path, w, h))
    return out


def pair(paths, make_opt, root, augmentation: str, size_mode: str = "resize", image_size: int = 32, train=True):
    """(reference dataset, cached dataset) of ``paths`` for the same options."""
    opt = make_opt("--augmentation", augmentation, "--image_size", str(image_size), "--decode_cache", str(root),
                   "--decode_cache_size", size_mode)  # fmt: skip
    labels = list(range(len(paths)))
    reference = ImageFileDataset(paths, labels, image_transforms(opt, train))
    return reference, _cache.cached_dataset(paths, labels, opt, train, None, str(root))


def as_float(dataset, x: torch.Tensor) -> torch.Tensor:
    """The network input of an item (uint8 training items normalised as on the device)."""
    return dataset.device_transform(x[None])[0] if x.dtype == torch.uint8 else x


def draw(dataset, index: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return dataset[index][0]


@pytest.mark.parametrize("augmentation, train", [("base", False), ("none", True), ("red", True), ("adv", False)])
def test_test_images_and_red_none_crops_equal_the_reference(photos, make_opt, tmp_path, augmentation, train):
    reference, cached = pair(photos, make_opt, tmp_path, augmentation, train=train)
    assert cached[0][0].dtype == (torch.uint8 if train else torch.float32)
    for i in range(len(photos)):
        for seed in range(3):
            assert torch.equal(as_float(cached, draw(cached, i, seed)), draw(reference, i, seed)), (i, seed)


@pytest.mark.parametrize("augmentation", ["base", "big", "adv", "red"])
def test_full_size_cache_equals_the_reference_for_every_augmentation(photos, make_opt, tmp_path, augmentation):
    reference, cached = pair(photos, make_opt, tmp_path, augmentation, size_mode="full")
    for i in range(len(photos)):
        for seed in range(3):
            assert torch.equal(as_float(cached, draw(cached, i, seed)), draw(reference, i, seed)), (i, seed)


def test_random_resized_crops_are_the_reference_crops_interpolated_from_the_cache(photos, make_opt, tmp_path):
    reference, cached = pair(photos, make_opt, tmp_path, "base", image_size=64)
    same, other = [], []
    for i in range(len(photos)):
        for seed in range(5):
            ours = draw(cached, i, seed).float()
            assert ours.shape == (3, 64, 64)
            ref = draw(reference, i, seed) * STD + MEAN
            same.append((ours - ref * 255).abs().mean().item())
            other.append((ours - draw(reference, i, seed + 100) * STD * 255 - MEAN * 255).abs().mean().item())
    assert np.mean(same) < 3 and max(same) < 8, (np.mean(same), max(same))  # grey levels of 255
    assert np.mean(other) > 3 * np.mean(same)  # another crop of the same image is much further away


def measure_crop(x: torch.Tensor, width: int, height: int) -> tuple[float, float, bool, float]:
    """(area fraction, aspect w/h, flipped, left edge) of a crop of a coordinate image, from linear fits of the red
    (x) and green (y) channels over the crop's central half (the edges of a resampled crop are biased)."""
    x = x.double().numpy()
    s = x.shape[-1]
    u, mid = np.arange(s) + 0.5, slice(s // 4, 3 * s // 4)
    slope_x, x0 = np.polyfit(u[mid], x[0][mid, :].mean(0)[mid], 1)
    slope_y, _ = np.polyfit(u[mid], x[1][:, mid].mean(1)[mid], 1)
    w, h = abs(slope_x) * s, abs(slope_y) * s
    return w * h / (width * height), w / h, bool(slope_x < 0), x0 if slope_x > 0 else x0 + slope_x * s


def test_crop_statistics_match_torchvision(coordinate_images, make_opt, tmp_path):
    """KS tests of area fraction and aspect ratio and the flip rate, cached vs reference, on independent draws
    (seeds 0..299 vs 10000..10299, fixed: the outcome is deterministic); and the same seed gives the same box."""
    paths = [p for p, _, _ in coordinate_images]
    reference, cached = pair(paths, make_opt, tmp_path, "base", image_size=64)
    n = 300
    for i, (_, w, h) in enumerate(coordinate_images):
        ref = np.array([measure_crop(draw(reference, i, s) * STD * 255 + MEAN * 255, w, h) for s in range(n)])
        ours = np.array([measure_crop(draw(cached, i, 10_000 + s).float(), w, h) for s in range(n)])
        assert ks_2samp(ref[:, 0], ours[:, 0]).pvalue > 0.01, "crop area fraction"
        assert ks_2samp(np.log(ref[:, 1]), np.log(ours[:, 1])).pvalue > 0.01, "crop aspect ratio"
        assert 0.06 < ref[:, 0].min() and ours[:, 0].max() <= 1.02  # RandomResizedCrop's scale (0.08, 1)
        for flips in (ref[:, 2], ours[:, 2]):
            assert abs(flips.mean() - 0.5) < 4 * np.sqrt(0.25 / n)
        same = np.array([measure_crop(draw(cached, i, s).float(), w, h) for s in range(50)])
        assert np.array_equal(same[:, 2], ref[:50, 2])  # the same flips
        area_error = np.abs(same[:, 0] / ref[:50, 0] - 1)
        assert np.median(area_error) < 0.02 and np.quantile(area_error, 0.9) < 0.05
        assert np.median(np.abs(same[:, 3] - ref[:50, 3])) < 1.0  # left edge, original pixels


def test_device_normalize_equals_totensor_normalize():
    images = torch.randint(0, 256, (4, 3, 9, 7), dtype=torch.uint8)
    ours = DeviceNormalize(IMAGENET_MEAN, IMAGENET_STD)(images)
    from torchvision import transforms

    pipeline = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    for k in range(4):
        pil = Image.fromarray(images[k].permute(1, 2, 0).numpy())
        assert torch.equal(ours[k], pipeline(transforms.ToTensor()(pil)))
    bgr = DeviceNormalize((0.5, 0.4, 0.3), (1 / 255,) * 3, bgr=True)(images)
    assert torch.equal(bgr, DeviceNormalize((0.5, 0.4, 0.3), (1 / 255,) * 3)(images).flip(1))


def test_cache_is_built_once_and_reused_and_keyed_by_the_files(photos, tmp_path, monkeypatch):
    first = open_cache(photos, 37, str(tmp_path), progress=False)
    assert len(first) == len(photos) and first.image(0).dtype == np.uint8 and min(first.image(0).shape[:2]) == 37
    monkeypatch.setattr(_cache, "_OPEN", {})
    monkeypatch.setattr(_cache, "build", lambda *a, **k: pytest.fail("rebuilt an intact cache"))
    again = open_cache(photos, 37, str(tmp_path), progress=False)
    assert again.folder == first.folder and np.array_equal(again.image(3), first.image(3))
    # Another size, or another file set, is another cache.
    assert _cache.dataset_key(photos, 37) != _cache.dataset_key(photos, 38)
    assert _cache.dataset_key(photos, 37) != _cache.dataset_key(photos[1:], 37)
    stat = os.stat(photos[0])
    os.utime(photos[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # an edited image
    try:
        assert _cache.dataset_key(photos, 37) != os.path.basename(first.folder).rsplit("_", 1)[1]
    finally:
        os.utime(photos[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert [d for d in os.listdir(tmp_path) if d.startswith(".")] == []  # no temporary folder left


def damage_truncate(folder: str) -> None:
    path = os.path.join(folder, "pixels.npy")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def damage_index_shape(folder: str) -> None:
    np.save(os.path.join(folder, "index.npy"), np.zeros((3, 4), dtype=np.int64))


def damage_meta(folder: str) -> None:
    with open(os.path.join(folder, "meta.json"), "w") as f:
        f.write("{not json")


@pytest.mark.parametrize("damage", [damage_truncate, damage_index_shape, damage_meta])
def test_a_damaged_cache_is_reported_in_one_line_and_rebuilt(photos, tmp_path, monkeypatch, caplog, damage):
    good = open_cache(photos, 37, str(tmp_path), progress=False)
    expected = [np.array(good.image(i)) for i in range(len(photos))]
    del good
    monkeypatch.setattr(_cache, "_OPEN", {})
    damage(os.path.join(tmp_path, os.listdir(tmp_path)[0]))
    with caplog.at_level(logging.WARNING, logger="datasets._cache"):
        rebuilt = open_cache(photos, 37, str(tmp_path), progress=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "damaged" in warnings[0] and "rebuilding" in warnings[0], warnings
    assert "\n" not in warnings[0]
    assert all(np.array_equal(rebuilt.image(i), expected[i]) for i in range(len(photos)))


def test_an_interrupted_build_leaves_no_cache(photos, tmp_path, monkeypatch):
    calls = []
    real = _cache._Decode.__getitem__

    def interrupted(self, i):
        calls.append(i)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(self, i)

    monkeypatch.setattr(_cache._Decode, "__getitem__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        open_cache(photos, 37, str(tmp_path), progress=False)
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(_cache._Decode, "__getitem__", real)
    assert len(open_cache(photos, 37, str(tmp_path), progress=False)) == len(photos)


def test_unwritable_folder_and_corrupt_image_are_one_line_errors(photos, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="--decode_cache .*a_file.*cannot write there") as err:
        open_cache(photos, 37, str(blocker / "cache"), progress=False)
    assert "\n" not in str(err.value)
    garbage = tmp_path / "garbage.jpg"  # its header is unreadable: found before decoding
    garbage.write_bytes(b"\xff\xd8 this is not a JPEG" * 10)
    truncated = tmp_path / "truncated.jpg"  # a readable header, data cut short: fails while decoding
    truncated.write_bytes(open(photos[0], "rb").read()[:600])
    for bad in (garbage, truncated):
        paths = [*photos * 3, str(bad)]  # over 32 images: with workers=1 a worker process decodes them
        for workers in (0, 1):  # a worker's error crosses back as a value, not a multi-line traceback
            folder = tmp_path / f"cache_{bad.stem}{workers}"
            with pytest.raises(UserError, match=f"cannot read image .*{bad.name}") as err:
                open_cache(paths, 37, str(folder), workers=workers, progress=False)
            assert "\n" not in str(err.value)
            assert os.listdir(folder) == []


def test_dataset_select_uses_the_cache_and_keeps_the_split_attributes(tmp_path, make_opt):
    make_photo_folders(str(tmp_path / "data"), "cub200", n_classes=4, per_class=3, width=60, height=45)
    argv = ["--dataset", "cub200", "--source_path", str(tmp_path / "data"), "--image_size", "16", "--kernels", "0"]
    plain = datasets.select("cub200", make_opt(*argv))
    cached = datasets.select("cub200", make_opt(*argv, "--decode_cache", str(tmp_path / "cache")))
    assert isinstance(cached["training"], CachedImageDataset) and isinstance(plain["training"], ImageFileDataset)
    assert cached["training"].cache is cached["evaluation"].cache  # one cache for the train images
    for split in ("training", "evaluation", "testing"):
        a, b = plain[split], cached[split]
        assert b.image_paths == a.image_paths and np.array_equal(b.labels, a.labels)
        assert b.class_names == a.class_names and b.closed_set == a.closed_set
        assert b.query is None and b.gallery is None
        assert b.raw_image(0).size == a.raw_image(0).size
    assert cached["training"][0][0].dtype == torch.uint8 and cached["training"][0][0].shape == (3, 16, 16)
    assert torch.equal(cached["testing"][1][0], plain["testing"][1][0])
    assert len(os.listdir(tmp_path / "cache")) == 2  # train images, test images


def _ddp_rank(rank: int, paths: list[str], root: str, init_file: str, out: str) -> None:
    """One of two gloo processes opening the same cache: counts the builds it ran."""
    import json
    from types import SimpleNamespace

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    builds = []
    real = _cache.build
    _cache.build = lambda *a, **k: (builds.append(rank), real(*a, **k))[1]
    opt = SimpleNamespace(image_size=32, augmentation="base", decode_cache_size="resize", kernels=0,
                          no_progress=True, arch="resnet18")  # fmt: skip
    dataset = _cache.cached_dataset(paths, list(range(len(paths))), opt, True, None, root)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"builds": len(builds), "n": len(dataset), "folder": dataset.cache.folder}, f)
    dist.destroy_process_group()


def test_under_ddp_rank_0_builds_and_the_other_rank_finds_the_cache(photos, tmp_path):
    import json

    import torch.multiprocessing as mp

    mp.start_processes(_ddp_rank, args=(photos, str(tmp_path / "cache"), str(tmp_path / "init"), str(tmp_path)),
                       nprocs=2, start_method="fork")  # fmt: skip
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["builds"] for r in ranks] == [1, 0]
    assert ranks[0]["folder"] == ranks[1]["folder"] and ranks[0]["n"] == ranks[1]["n"] == len(photos)
