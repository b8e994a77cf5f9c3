"""Tiny fake datasets in the exact on-disk layouts the loaders expect (tests and smoke runs).

Every ``make_*`` writes under ``root`` and returns ``root``, to pass as ``--source_path``.
Images are small random JPEGs (PIL) whose colour depends on the class, so a model can
learn something; everything is deterministic for a given ``seed``.

    python -c "from datasets.synthetic import make_cub200; make_cub200('/tmp/fake')"
    python main.py --dataset cub200 --source_path /tmp/fake --not_pretrained --arch resnet18 ...
"""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
from PIL import Image

SOP_CATEGORIES = ("bicycle", "cabinet", "chair", "coffee_maker", "fan", "kettle", "lamp", "mug", "sofa", "stapler",
                  "table", "toaster")  # fmt: skip


def class_image(rng: np.random.Generator, label: int, size: int, channels: int = 3) -> np.ndarray:
    """A ``[size, size, channels]`` uint8 image: a class-dependent colour plus noise."""
    base = np.random.default_rng(label).integers(30, 226, size=channels)
    noise = rng.normal(0, 25, size=(size, size, channels))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_jpeg(path: str, rng: np.random.Generator, label: int, size: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(class_image(rng, label, size)).save(path, format="JPEG", quality=90)


def _class_folders(images_root: str, names: list[str], per_class: int, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(names):
        for k in range(per_class):
            write_jpeg(os.path.join(images_root, name, f"{name.split('.')[-1].replace(' ', '_')}_{k:04d}.jpg"), rng,
                       label, size)  # fmt: skip


def make_cub200(root: str, n_classes: int = 200, per_class: int = 2, size: int = 32, seed: int = 0) -> str:
    """``<root>/cub200/images/<NNN.Bird_Name_NNN>/*.jpg`` (first half of the classes train)."""
    names = [f"{i:03d}.Bird_Species_{i:03d}" for i in range(1, n_classes + 1)]
    _class_folders(os.path.join(root, "cub200", "images"), names, per_class, size, seed)
    return root


def make_cars196(root: str, n_classes: int = 196, per_class: int = 2, size: int = 32, seed: int = 0) -> str:
    """``<root>/cars196/images/<Make Model Year>/*.jpg``: the official class names for 196 classes
    (``/`` written as ``-``, as a folder name must), else made-up names with spaces."""
    if n_classes == 196:
        from datasets._cars196_classes import OFFICIAL_CLASS_NAMES

        names = [n.replace("/", "-") for n in OFFICIAL_CLASS_NAMES]
    else:
        names = [f"Make{i:03d} Model {2000 + i % 13}" for i in range(1, n_classes + 1)]
    _class_folders(os.path.join(root, "cars196", "images"), names, per_class, size, seed)
    return root


def make_folder_dataset(root: str, name: str = "folder", n_classes: int = 6, per_class: int = 2, size: int = 32,
                        train_test: bool = False, seed: int = 0) -> str:  # fmt: skip
    """``<root>/<name>/<class>/*.jpg``, or with ``train_test`` ``<root>/<name>/{train,test}/<class>/*.jpg``."""
    names = [f"class_{i:02d}" for i in range(n_classes)]
    if train_test:
        _class_folders(os.path.join(root, name, "train"), names, per_class, size, seed)
        _class_folders(os.path.join(root, name, "test"), names, per_class, size, seed + 1)
    else:
        _class_folders(os.path.join(root, name), names, per_class, size, seed)
    return root


def make_online_products(root: str, n_classes: int = 24, per_class: int = 2, size: int = 32, seed: int = 0) -> str:
    """Stanford Online Products in the Roth layout.

    ``<root>/online_products/images/<category>_final/<product>_<k>.JPG`` plus
    ``Info_Files/Ebay_train.txt`` / ``Ebay_test.txt`` (header ``image_id class_id
    super_class_id path``; the first half of the classes train) and one
    ``Info_Files/<category>.txt`` per category with the same columns.
    """
    sop = os.path.join(root, "online_products")
    rng = np.random.default_rng(seed)
    rows = []  # (image_id, class_id, super_class_id, path)
    for c in range(n_classes):
        super_id = c % len(SOP_CATEGORIES) + 1
        product = 111085122871 + 1000 * c
        for k in range(per_class):
            rel = f"{SOP_CATEGORIES[super_id - 1]}_final/{product}_{k}.JPG"
            write_jpeg(os.path.join(sop, "images", rel), rng, c, size)
            rows.append((len(rows) + 1, c + 1, super_id, rel))
    info = os.path.join(sop, "Info_Files")
    os.makedirs(info, exist_ok=True)
    header = "image_id class_id super_class_id path\n"
    n_train = n_classes // 2

    def write(fname: str, selected: list) -> None:
        with open(os.path.join(info, fname), "w") as f:
            f.write(header + "".join(f"{i} {c} {s} {p}\n" for i, c, s, p in selected))

    write("Ebay_train.txt", [r for r in rows if r[1] <= n_train])
    write("Ebay_test.txt", [r for r in rows if r[1] > n_train])
    for super_id, cat in enumerate(SOP_CATEGORIES, start=1):
        write(f"{cat}.txt", [r for r in rows if r[2] == super_id])
    return root


def make_mnist(root: str, name: str = "mnist", per_class: int = 3, size: int = 28, seed: int = 0) -> str:
    """torchvision's raw MNIST / FashionMNIST files under ``<root>/<name>/<MNIST|FashionMNIST>/raw/``."""
    folder = os.path.join(root, name, "FashionMNIST" if name == "fashion_mnist" else "MNIST", "raw")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("t10k", max(1, per_class // 2 + 1))):
        labels = np.repeat(np.arange(10), n).astype(np.uint8)
        images = np.stack([class_image(rng, int(y), size, 1)[..., 0] for y in labels])
        with open(os.path.join(folder, f"{split}-images-idx3-ubyte"), "wb") as f:
            f.write(struct.pack(">IIII", 2051, len(images), size, size) + images.tobytes())
        with open(os.path.join(folder, f"{split}-labels-idx1-ubyte"), "wb") as f:
            f.write(struct.pack(">II", 2049, len(labels)) + labels.tobytes())
    return root


def make_cifar(root: str, name: str = "cifar10", per_class: int = 3, seed: int = 0) -> str:
    """torchvision's pickled CIFAR10 / CIFAR100 batches under ``<root>/<name>/``.

    The files are not the originals, so torchvision's md5 check rejects them: tests
    patch ``torchvision.datasets.cifar.check_integrity``.
    """
    n_classes = 100 if name == "cifar100" else 10
    folder = os.path.join(root, name, "cifar-100-python" if n_classes == 100 else "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    label_key = "fine_labels" if n_classes == 100 else "labels"

    def batch(n: int) -> dict:
        labels = np.repeat(np.arange(n_classes), n)
        data = np.zeros((len(labels), 3 * 32 * 32), dtype=np.uint8)
        for row, y in enumerate(labels):
            data[row] = class_image(rng, int(y), 32).transpose(2, 0, 1).reshape(-1)
        return {"data": data, label_key: labels.tolist()}

    def dump(fname: str, obj: dict) -> None:
        with open(os.path.join(folder, fname), "wb") as f:
            pickle.dump(obj, f)

    names = [f"class_{i}" for i in range(n_classes)]
    if n_classes == 100:
        dump("train", batch(per_class))
        dump("test", batch(max(1, per_class // 2 + 1)))
        dump("meta", {"fine_label_names": names, "coarse_label_names": names[:20]})
    else:
        for i in range(1, 6):  # all train images in the first batch, the others empty
            dump(f"data_batch_{i}", batch(per_class if i == 1 else 0))
        dump("test_batch", batch(max(1, per_class // 2 + 1)))
        dump("batches.meta", {"label_names": names})
    return root


def make_in_shop(root: str, n_items: int = 24, per_item: int = 3, size: int = 32, seed: int = 0,
                 folder: str = "in_shop", under_img: bool = False) -> str:  # fmt: skip
    """In-Shop Clothes Retrieval in its official layout: ``<root>/<folder>/Eval/list_eval_partition.txt`` naming
    ``img/<CATEGORY>/<item id>/<k>.jpg`` under ``<root>/<folder>/`` (``under_img``: under its ``Img/``, as the
    download unpacks); the first half of the items train, of each other item the first image is a query and the
    rest the gallery."""
    shop = os.path.join(root, folder)
    images = os.path.join(shop, "Img") if under_img else shop
    rng = np.random.default_rng(seed)
    lines = []
    for n in range(n_items):
        item = f"id_{n + 1:08d}"
        for k in range(per_item):
            rel = f"img/{'WOMEN' if n % 2 else 'MEN'}/Tees/{item}/{k:02d}_1_front.jpg"
            write_jpeg(os.path.join(images, rel), rng, n, size)
            status = "train" if n < n_items // 2 else ("query" if k == 0 else "gallery")
            lines.append(f"{rel} {item} {status}")
    os.makedirs(os.path.join(shop, "Eval"), exist_ok=True)
    with open(os.path.join(shop, "Eval", "list_eval_partition.txt"), "w") as f:
        f.write(f"{len(lines)}\nimage_name item_id evaluation_status\n" + "\n".join(lines) + "\n")
    return root


def make_csv_dataset(root: str, n_classes: int = 8, per_class: int = 3, size: int = 32, seed: int = 0,
                     query_gallery: bool = True) -> str:  # fmt: skip
    """A retrieval set described by ``<root>/dataset.csv`` (``path,label,split[,is_query,is_gallery]``, paths relative
    to the file): the first half of the classes train; of each test class the first image is a query and every
    image (the query too) is in the gallery. Returns the CSV's path (``--source_path``)."""
    rng = np.random.default_rng(seed)
    rows = ["path,label,split" + (",is_query,is_gallery" if query_gallery else "")]
    for c in range(n_classes):
        for k in range(per_class):
            rel = f"photos/class_{c}/{k}.jpg"
            write_jpeg(os.path.join(root, rel), rng, c, size)
            split = "train" if c < n_classes // 2 else "test"
            extra = f",{int(split == 'test' and k == 0)},{int(split == 'test')}" if query_gallery else ""
            rows.append(f"{rel},label {c},{split}{extra}")
    path = os.path.join(root, "dataset.csv")
    with open(path, "w") as f:
        f.write("\n".join(rows) + "\n")
    return path


def _files(make, *argv: str, **kwargs):
    """A generator: ``make(root, **kwargs)`` writes the data; ``argv`` are the extra flags that find it."""

    def generate(root: str) -> tuple[str, ...]:
        make(root, **kwargs)
        return argv

    return generate


def _csv_table(root: str) -> tuple[str, ...]:
    """``--dataset csv``: the table is the --source_path."""
    return ("--source_path", make_csv_dataset(root, n_classes=8, per_class=3, size=12))


def make_photo_folders(root: str, name: str = "cub200", n_classes: int = 20, per_class: int = 10, width: int = 500,
                       height: int = 375, vary: float = 0.15, quality: int = 90, seed: int = 0) -> str:  # fmt: skip
    """Photo-sized JPEGs (CUB200's about 500 x 375) in the class-folder layout ``<root>/<name>/images/<class>/``
    (``name`` cub200 or cars196), for input-pipeline benchmarks: a smooth class-coloured field with a few
    ellipses and mild noise, so that they compress and decode about as real photos do (~30-60 KB each). Each
    side varies by up to ``vary`` (CUB's images differ in size). Returns ``root`` (``--source_path``)."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    for label in range(n_classes):
        folder = os.path.join(root, name, "images", f"{label + 1:03d}.Photo_Class_{label + 1:03d}")
        os.makedirs(folder, exist_ok=True)
        base = np.random.default_rng(label).integers(40, 216, size=3)
        for k in range(per_class):
            w = max(8, int(round(width * (1 - vary * rng.random()))))
            h = max(8, int(round(height * (1 + vary * (2 * rng.random() - 1)))))
            coarse = rng.normal(0, 40, size=(6, 8, 3)) + base
            field = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
            draw = ImageDraw.Draw(field)
            for _ in range(4):
                x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
                x1, y1 = x0 + int(rng.integers(w // 10, w // 3)), y0 + int(rng.integers(h // 10, h // 3))
                draw.ellipse((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, size=3)))
            pixels = np.asarray(field, dtype=np.float32) + 6 * rng.standard_normal((h, w, 3), dtype=np.float32)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                os.path.join(folder, f"photo_{k:04d}.jpg"), format="JPEG", quality=quality
            )
    return root


# Dataset name -> ``generate(root) -> extra flags``: writes a tiny copy of the dataset's on-disk layout under
# ``root`` (to pass as --source_path). Every registered dataset that reads files has one, so the dataset contract
# test (tests/datasets/test_contract.py) can build it; embedded datasets (digits) need none.
GENERATORS = {
    "cars196": _files(make_cars196, per_class=1, size=12),
    "cifar10": _files(make_cifar, name="cifar10", per_class=3),
    "cifar100": _files(make_cifar, name="cifar100", per_class=3),
    "cub200": _files(make_cub200, per_class=1, size=12),
    "fashion_mnist": _files(make_mnist, name="fashion_mnist", per_class=4),
    "folder": _files(make_folder_dataset, "--folder_root", "folder", n_classes=6, per_class=2, size=12),
    "mnist": _files(make_mnist, name="mnist", per_class=4),
    "online_products": _files(make_online_products, n_classes=24, per_class=2, size=12),
    "in_shop": _files(make_in_shop, n_items=12, per_item=3, size=12),
    "csv": _csv_table,
}
