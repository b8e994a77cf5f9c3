"""Your own retrieval set from a table: ``--dataset csv --source_path <file>.csv``.

One row per image, with a header naming the columns ``path,label,split`` and optionally ``is_query,is_gallery``:

* ``path``: the image, absolute or relative to the CSV file's folder;
* ``label``: its class (any text; classes are numbered in sorted order);
* ``split``: ``train`` or ``test``;
* ``is_query`` / ``is_gallery`` (test rows; ``1``/``0``, ``true``/``false``, ``yes``/``no``): with these columns
  the test split is evaluated query -> gallery (a query never retrieves itself; it may also be in the gallery), and
  a test row that is neither is left out. Without them every test image is searched against all the others.

Test classes that are all train classes make a classification split (shared labels, accuracy), as ``folder``.
Example (``photos/cats/1.jpg,cat,test,1,0``)::

    path,label,split,is_query,is_gallery
    photos/cats/0.jpg,cat,train,0,0
    photos/cats/1.jpg,cat,test,1,0
    photos/cats/2.jpg,cat,test,0,1
"""

from __future__ import annotations

import csv
import os

import numpy as np

from datasets import register
from datasets._base import check_image_file
from datasets._folders import image_maker
from datasets._splits import assemble
from utilities.errors import UserError

COLUMNS = ("path", "label", "split")
FLAG_COLUMNS = ("is_query", "is_gallery")
TRUE, FALSE = ("1", "true", "yes"), ("0", "false", "no", "")
SPLITS = ("train", "test")
LAYOUT = "a CSV file with the header path,label,split[,is_query,is_gallery] (paths relative to the file)"


def _flag(value: str, path: str, line_no: int, column: str) -> bool:
    text = value.strip().lower()
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise UserError(f"{path} line {line_no}: {column} must be 1/0 (or true/false, yes/no), got '{value}'")


def read_table(path: str) -> dict[str, list]:
    """Columns of the table: ``path`` (resolved), ``label``, ``split`` and, where given, ``is_query`` /
    ``is_gallery`` (bools); every fault (missing column or image, unknown split, bad flag) is one line."""
    if not os.path.isfile(path):
        raise UserError(f"--source_path {path} is not a file; --dataset csv reads {LAYOUT}")
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise UserError(f"{path} has no column {', '.join(missing)}; expected {LAYOUT}")
            flags = [c for c in FLAG_COLUMNS if c in header]
            if len(flags) == 1:
                raise UserError(f"{path} has {flags[0]} but not {set(FLAG_COLUMNS).difference(flags).pop()}; "
                                "give both columns or neither")  # fmt: skip
            reader.fieldnames = header
            table = {c: [] for c in (*COLUMNS, *flags)}
            for line_no, row in enumerate(reader, start=2):
                if None in row or any(row[c] is None for c in header):
                    raise UserError(f"{path} line {line_no}: expected {len(header)} fields ({','.join(header)})")
                split = row["split"].strip().lower()
                if split not in SPLITS:
                    raise UserError(f"{path} line {line_no}: split must be train or test, got '{row['split']}'")
                image = os.path.join(base, row["path"].strip())
                try:
                    check_image_file(image)
                except UserError as err:
                    raise UserError(f"{path} line {line_no}: {err} (or remove the line)") from None
                table["path"].append(image)
                table["label"].append(row["label"].strip())
                table["split"].append(split)
                for c in flags:
                    table[c].append(_flag(row[c], path, line_no, c))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a UTF-8 text file; --dataset csv reads {LAYOUT}") from None
    except csv.Error as err:
        raise UserError(f"{path} is not a readable CSV ({err}); expected {LAYOUT}") from None
    return table


@register("csv", paper="your own retrieval set: a CSV table of path,label,split[,is_query,is_gallery]", defaults={})
def load(opt) -> dict:
    table = read_table(opt.source_path)
    paths, splits = np.array(table["path"], dtype=object), np.array(table["split"])
    names = sorted(set(table["label"]))
    ids = {n: i for i, n in enumerate(names)}
    classes = np.array([ids[n] for n in table["label"]], dtype=np.int64)
    train, test = splits == "train", splits == "test"
    query = gallery = None
    if "is_query" in table:
        query, gallery = np.array(table["is_query"]), np.array(table["is_gallery"])
        test &= query | gallery  # a test row that is neither query nor gallery takes no part
        if not (test & query).any() or not (test & gallery).any():
            raise UserError(f"{opt.source_path}: the test split needs at least one query and one gallery row")
    for name, mask in (("train", train), ("test", test)):
        if not mask.any():
            raise UserError(f"{opt.source_path} has no {name} row; expected {LAYOUT}")
    classification = set(classes[test].tolist()) <= set(classes[train].tolist())
    out = assemble(paths[train], classes[train], paths[test], classes[test], names, image_maker(opt), opt,
                   classification=classification)  # fmt: skip
    if query is not None:
        out["testing"].query, out["testing"].gallery = query[test], gallery[test]
    return out
