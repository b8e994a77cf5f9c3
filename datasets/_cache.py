"""Decode cache (``--decode_cache``): photo datasets decoded once into memory-mapped uint8 arrays.

The Roth suite decodes every JPEG again in every epoch (PIL), then crops, resizes and converts it to float on the
CPU. With a decode cache each image is decoded once, resized as the test transform resizes it (``Resize(s')``,
s' = round(``--image_size`` * 256/224), 256 for 224; ``--decode_cache_size full`` keeps the decoded size), and
stored as uint8 in a memory-mapped ``.npy`` file shared by every run, seed and worker process. Training batches
then travel as uint8 ``[B, 3, s, s]`` (pinned when training on CUDA) and are converted and normalised on the device
(``DeviceNormalize``, applied by ``training.build.Run.images_to_device``); evaluation splits come out as the usual
normalised float tensors.

Augmentation stays that of ``--augmentation`` and even draws the same random numbers as the uncached pipeline
(``datasets._base.image_transforms``), in the same order: the random-resized crop is drawn by torchvision's own
``RandomResizedCrop.get_params`` in the coordinates of the ORIGINAL image (its size is kept in the cache) and
mapped onto the cached image; flips, grayscale and colour jitter are torchvision's transforms. What differs:

* ``base`` / ``big`` / ``adv`` with the default cache size: the crop (the same box) is interpolated from the
  pre-resized image instead of the original, so crops that are enlarged come out a little softer, and its box
  is rounded to whole cache pixels (at most half a cache pixel per edge, 0.7 original pixels on CUB; zero-mean)
  so that torch's antialiased bilinear uint8 kernel can resize it (PIL's filter within one grey level, about 3x
  faster than PIL's box resize). ``--decode_cache_size full`` removes both: every output equals the uncached
  pipeline's bit for bit (PIL's crop + resize; the cache is about 2-4x larger).
* ``red``, ``none`` and every evaluation split: the cached image IS the test transform's ``Resize(s')`` output,
  so the outputs equal the uncached pipeline's bit for bit at either cache size.

A cache is one folder ``<cache root>/<N>img_<size>_<key>/`` (``meta.json``, ``index.npy`` [N, 5] int64: byte
offset, height, width, original height, original width; ``pixels.npy`` flat uint8). ``key`` hashes the format
version, the size and every image's absolute path, byte size and modification time, so an edited, added or
removed image gives a new cache, and two datasets never share one. It is built in a temporary folder (one
process per ``--kernels``, with a progress bar) and renamed into place, so an interrupted build never leaves a
cache that looks complete; a damaged one (truncated, wrong shape, wrong key) is reported in one line and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from tqdm import tqdm

from datasets._base import (
    BNINCEPTION_MEAN,
    BNINCEPTION_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    load_rgb,
    uses_bninception,
)
from utilities.errors import UserError

log = logging.getLogger(__name__)

CACHE_VERSION = 1
FULL = "full"  # --decode_cache_size full: store the decoded size (exact for every augmentation)
_OPEN: dict[str, DecodeCache] = {}  # folder -> the cache opened in this process (training/evaluation share it)


def cache_root(opt) -> str | None:
    """The folder holding the caches, or None when ``--decode_cache none``."""
    value = str(opt.decode_cache)
    if value == "none":
        return None
    if value == "auto":
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return os.path.join(base, "dml_decode_cache")
    return os.path.abspath(os.path.expanduser(value))


def resize_side(opt) -> int:
    """The test transform's ``Resize`` short side (as ``datasets._base.image_transforms``)."""
    return round(int(opt.image_size) * 256 / 224)


def resized_shape(height: int, width: int, short: int) -> tuple[int, int]:
    """(h, w) of ``transforms.Resize(short)`` applied to a ``height x width`` image (torchvision's rule)."""
    if width <= height:
        return int(short * height / width), short
    return short, int(short * width / height)


def dataset_key(paths: Sequence[str], size: int | str) -> str:
    """Hash of the format version, the stored size and every image's absolute path, byte size and mtime."""
    digest = hashlib.sha256(f"decode-cache v{CACHE_VERSION} size {size}\n".encode())
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            raise UserError(f"image {path} not found; restore it or remove it from the dataset") from None
        digest.update(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


class DecodeCache:
    """A built cache: ``image(i)`` is a read-only ``[h, w, 3]`` uint8 view of image ``i`` (memory-mapped, opened
    lazily in each process), ``original_size(i)`` its decoded (height, width)."""

    def __init__(self, folder: str):
        self.folder = folder
        with open(os.path.join(folder, "meta.json")) as f:
            self.meta = json.load(f)
        self.index = np.load(os.path.join(folder, "index.npy"))
        self.size = self.meta["size"]  # the stored short side, or "full"
        self._pixels = None

    def __len__(self) -> int:
        return len(self.index)

    @property
    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            self._pixels = np.load(
                os.path.join(self.folder, "pixels.npy"), mmap_mode="c"
            )  # copy-on-write: writable views for torch, never written
        return self._pixels

    def image(self, i: int) -> np.ndarray:
        offset, h, w = (int(v) for v in self.index[i, :3])
        return self.pixels[offset : offset + h * w * 3].reshape(h, w, 3)

    def original_size(self, i: int) -> tuple[int, int]:
        return int(self.index[i, 3]), int(self.index[i, 4])

    def validate(self, key: str, n: int) -> None:
        """Raise ``ValueError`` saying what is wrong unless this is a complete cache of ``key`` with ``n`` images."""
        if self.meta.get("version") != CACHE_VERSION or self.meta.get("key") != key:
            raise ValueError(f"written for another dataset or format (key {self.meta.get('key')}, expected {key})")
        if self.index.dtype != np.int64 or self.index.shape != (n, 5):
            raise ValueError(f"index of shape {self.index.shape}, expected ({n}, 5)")
        pixels = self.pixels  # a truncated file fails to map here
        sizes = self.index[:, 1] * self.index[:, 2] * 3
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        if pixels.dtype != np.uint8 or pixels.ndim != 1 or pixels.shape[0] != int(sizes.sum()):
            raise ValueError(f"pixels of shape {pixels.shape} {pixels.dtype}, expected ({int(sizes.sum())},) uint8")
        if not np.array_equal(self.index[:, 0], offsets) or (self.index[:, 1:] <= 0).any():
            raise ValueError("inconsistent index")

    def __getstate__(self):  # worker processes started by spawn map the file themselves
        return {**self.__dict__, "_pixels": None}


class _Decode(Dataset):
    """Decodes image ``i`` as the cache stores it; errors come back as values (one line in the main process)."""

    def __init__(self, paths: Sequence[str], size: int | str):
        self.paths, self.size = list(paths), size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            image = load_rgb(self.paths[i])
            original = (image.height, image.width)
            if self.size != FULL:
                image = transforms.Resize(int(self.size))(image)
            return i, np.asarray(image, dtype=np.uint8), original
        except UserError as err:
            return i, None, str(err)


def _unbatched(item):
    return item


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _header_size(path: str) -> tuple[int, int]:
    """(height, width) from the image header (no decoding); a file PIL cannot read is a one-line error."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except Exception:
        load_rgb(path)  # raises the one-line UserError naming the file
        raise


def build(folder: str, paths: Sequence[str], size: int | str, key: str, workers: int, progress: bool) -> None:
    """Decode ``paths`` into a new cache folder ``folder``, atomically (temporary folder + rename)."""
    parent = os.path.dirname(folder)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{os.path.basename(folder)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.makedirs(tmp)
    except OSError as err:
        raise UserError(f"--decode_cache {parent}: cannot write there ({err.strerror or err}); pass a writable "
                        "folder or --decode_cache none") from None  # fmt: skip
    try:
        originals = np.array([_header_size(p) for p in paths], dtype=np.int64).reshape(-1, 2)
        if size == FULL:
            stored = originals.copy()
        else:
            stored = np.array([resized_shape(h, w, int(size)) for h, w in originals], dtype=np.int64).reshape(-1, 2)
        sizes = stored[:, 0] * stored[:, 1] * 3
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        index = np.concatenate([offsets[:, None], stored, originals], axis=1).astype(np.int64)
        pixels = np.lib.format.open_memmap(os.path.join(tmp, "pixels.npy"), mode="w+", dtype=np.uint8,
                                           shape=(int(sizes.sum()),))  # fmt: skip
        log.info(f"decode cache: decoding {len(paths)} images into {folder}")
        # Its own generator: building a cache must not draw from torch's global RNG (a run's random stream, and
        # so its results, are the same whether the cache was built in this run or found).
        workers = max(0, min(workers, _cpus(), len(paths) // 32))  # worker start-up dwarfs tiny datasets
        loader = DataLoader(_Decode(paths, size), batch_size=None, num_workers=workers, collate_fn=_unbatched,
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
        with tqdm(total=len(paths), desc="decode cache", unit="img", disable=not progress, leave=False) as bar:
            for i, array, info in loader:
                if array is None:
                    raise UserError(info)
                if array.shape != (stored[i, 0], stored[i, 1], 3):  # the header disagreed with the decoded image
                    raise UserError(f"image {paths[i]} decodes to {array.shape[:2]}, its header says "
                                    f"{tuple(originals[i])}; re-save it")  # fmt: skip
                pixels[offsets[i] : offsets[i] + sizes[i]] = array.reshape(-1)
                bar.update(1)
        pixels.flush()
        del pixels
        np.save(os.path.join(tmp, "index.npy"), index)
        meta = {"version": CACHE_VERSION, "key": key, "size": size, "n": len(paths),
                "first_image": os.path.abspath(paths[0]) if len(paths) else ""}  # fmt: skip
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same cache first: keep theirs
            if not os.path.isdir(folder):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"--decode_cache: writing {folder} failed ({err.strerror or err}); free disk space, pass "
                        "another folder or --decode_cache none") from None  # fmt: skip
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def open_cache(paths: Sequence[str], size: int | str, root: str, workers: int = 0, progress: bool = True
               ) -> DecodeCache:  # fmt: skip
    """The cache of ``paths`` at ``size`` under ``root``: reused when present and intact, else (re)built."""
    paths = [str(p) for p in paths]
    key = dataset_key(paths, size)
    folder = os.path.join(root, f"{len(paths)}img_{size if size == FULL else f's{size}'}_{key}")
    if folder in _OPEN:
        return _OPEN[folder]
    if os.path.exists(folder):
        try:
            cache = DecodeCache(folder)
            cache.validate(key, len(paths))
            _OPEN[folder] = cache
            return cache
        except Exception as err:  # noqa: BLE001 - any damage means: rebuild
            first = (str(err).splitlines() or [""])[0]
            log.warning(f"decode cache {folder} is damaged ({type(err).__name__}: {first}); rebuilding it")
            shutil.rmtree(folder, ignore_errors=True)
    build(folder, paths, size, key, workers, progress)
    cache = DecodeCache(folder)
    cache.validate(key, len(paths))
    _OPEN[folder] = cache
    return cache


class DeviceNormalize:
    """uint8 ``[B, 3, H, W]`` -> float, as ``ToTensor() + Normalize(mean, std)`` (+ BGR) do it on the CPU: the
    same operations in the same order, so the values are the same bit for bit. Runs wherever the batch is."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], bgr: bool = False):
        self.mean, self.std, self.bgr = tuple(mean), tuple(std), bool(bgr)
        self._constants: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # (device, dtype) -> (mean, std)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.get_default_dtype()).div_(255)
        key = (x.device, x.dtype)
        if key not in self._constants:  # built once: a host-to-CUDA copy of pageable memory synchronises the stream
            self._constants[key] = tuple(torch.as_tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
                                         for v in (self.mean, self.std))  # fmt: skip
        mean, std = self._constants[key]
        x = x.sub_(mean).div_(std)
        return x.flip(1) if self.bgr else x

    def __repr__(self) -> str:
        return f"DeviceNormalize(mean={self.mean}, std={self.std}, bgr={self.bgr})"


def _shape_only(height: int, width: int) -> torch.Tensor:
    """A tensor of shape ``[3, height, width]`` without memory, for torchvision's ``get_params``."""
    return torch.empty(1, 1, 1, dtype=torch.uint8).expand(3, height, width)


class CachedImageDataset(Dataset):
    """An ``ImageFileDataset`` read from a ``DecodeCache``: the same images, labels, attributes and augmentation
    (see the module docstring). Training splits (``train``) yield uint8 ``[3, s, s]`` tensors, to be converted
    on the device by ``device_transform``; other splits yield the normalised float tensors of the test transform.
    """

    closed_set = False  # set per split by ``datasets._splits.assemble``
    query = gallery = None  # boolean masks where the split is evaluated query -> gallery (In-Shop, csv)

    def __init__(self, paths: Sequence[str], labels: Sequence[int], cache: DecodeCache, opt, train: bool,
                 class_names: Sequence[str] | None = None):  # fmt: skip
        self.image_paths = [str(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(cache) != len(self.image_paths):
            raise ValueError(f"a cache of {len(cache)} images for {len(self.image_paths)} paths")
        self.cache = cache
        self.class_names = list(class_names) if class_names is not None else None
        self.mode = opt.augmentation if train else "none"
        self.resize = resize_side(opt)
        self.size = self.resize if opt.augmentation == "big" else int(opt.image_size)  # as image_transforms
        bgr = uses_bninception(opt)
        mean, std = (BNINCEPTION_MEAN, BNINCEPTION_STD) if bgr else (IMAGENET_MEAN, IMAGENET_STD)
        self.normalize = DeviceNormalize(mean, std, bgr)
        self.uint8 = bool(train)
        self.device_transform = self.normalize if self.uint8 else None
        self.flip = transforms.RandomHorizontalFlip(0.5)
        self.random_crop = transforms.RandomCrop(self.size)
        self.colour = [transforms.RandomGrayscale(p=0.2), transforms.ColorJitter(0.2, 0.2, 0.2, 0.2)]

    def __len__(self) -> int:
        return len(self.image_paths)

    def raw_image(self, index: int) -> Image.Image:
        return load_rgb(self.image_paths[index])

    def resized(self, index: int) -> torch.Tensor:
        """The test transform's ``Resize(s')`` output as uint8 ``[3, h, w]`` (a view when the cache stores it)."""
        array = self.cache.image(index)
        if self.cache.size != self.resize:
            array = np.array(transforms.Resize(self.resize)(Image.fromarray(np.ascontiguousarray(array))))
        return torch.from_numpy(array).permute(2, 0, 1)

    def random_resized_crop(self, index: int) -> torch.Tensor:
        """``RandomResizedCrop(size)`` as uint8 ``[3, s, s]``: torchvision's box, drawn on the ORIGINAL image size,
        cut from the cache. Full size: PIL's crop + resize, exactly torchvision's. Pre-resized: the box in cache
        pixels, rounded to whole pixels (at most half a cache pixel per edge), resized by torch's antialiased
        bilinear uint8 kernel (PIL's filter, within one grey level; about 3x faster than PIL here)."""
        height, width = self.cache.original_size(index)
        top, left, h, w = transforms.RandomResizedCrop.get_params(
            _shape_only(height, width), scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)
        )
        array = self.cache.image(index)
        if self.cache.size == FULL:
            crop = Image.fromarray(np.ascontiguousarray(array[top : top + h, left : left + w]))
            image = np.array(crop.resize((self.size, self.size), Image.BILINEAR))
            return torch.from_numpy(image).permute(2, 0, 1)
        sy, sx = array.shape[0] / height, array.shape[1] / width
        y0, x0 = min(round(top * sy), array.shape[0] - 1), min(round(left * sx), array.shape[1] - 1)
        y1, x1 = max(y0 + 1, round((top + h) * sy)), max(x0 + 1, round((left + w) * sx))
        crop = torch.from_numpy(array[y0:y1, x0:x1]).permute(2, 0, 1).unsqueeze(0)  # channels-last view
        out = F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return out[0]

    def uint8_image(self, index: int) -> torch.Tensor:
        """The augmented image of ``--augmentation`` (or the test transform) as uint8 ``[3, s, s]``."""
        if self.mode in ("base", "big", "adv"):
            x = self.random_resized_crop(index)
            if self.mode == "adv":  # torchvision's PIL colour transforms, exactly as the uncached pipeline
                image = Image.fromarray(np.ascontiguousarray(x.permute(1, 2, 0).numpy()))
                for step in self.colour:
                    image = step(image)
                x = torch.from_numpy(np.array(image)).permute(2, 0, 1)
            return self.flip(x).contiguous()
        x = self.resized(index)
        if self.mode == "red":
            return self.flip(self.random_crop(x)).contiguous()
        return transforms.functional.center_crop(x, [self.size, self.size]).contiguous()

    def __getitem__(self, index: int):
        x = self.uint8_image(index)
        if not self.uint8:
            x = self.normalize(x.unsqueeze(0))[0]
        return x, int(self.labels[index]), int(index)


def cached_dataset(paths: Sequence[str], labels: Sequence[int], opt, train: bool,
                   class_names: Sequence[str] | None, root: str) -> CachedImageDataset:  # fmt: skip
    """The split ``paths`` / ``labels`` read through the decode cache under ``root`` (built on first use)."""
    from utilities import distributed

    size = FULL if opt.decode_cache_size == FULL else resize_side(opt)
    progress = not opt.no_progress and distributed.is_main_process()
    workers = int(opt.kernels)
    if distributed.world_size() > 1 and not distributed.is_main_process():
        distributed.barrier()  # under DDP rank 0 builds the cache; the other ranks then find it
        return CachedImageDataset(paths, labels, open_cache(paths, size, root, workers, False), opt, train, class_names)
    try:
        cache = open_cache(paths, size, root, workers=workers, progress=progress)
    finally:
        distributed.barrier()  # a no-op without DDP
    return CachedImageDataset(paths, labels, cache, opt, train, class_names)
