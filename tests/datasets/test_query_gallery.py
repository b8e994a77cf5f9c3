"""Query -> gallery datasets: In-Shop in its official layout and ``--dataset csv`` tables, read against the files
the test writes (the partition file's statuses, the table's rows)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import datasets
from datasets import synthetic
from utilities.errors import UserError


def partition_rows(root) -> list[list[str]]:
    lines = (root / "in_shop" / "Eval" / "list_eval_partition.txt").read_text().splitlines()
    return [line.split() for line in lines[2:] if line.strip()]


def test_in_shop_follows_the_partition_file(tmp_path, dataset_opt):
    synthetic.make_in_shop(str(tmp_path), n_items=10, per_item=3, size=12)
    rows = partition_rows(tmp_path)
    data = datasets.select("in_shop", dataset_opt("in_shop", tmp_path))
    train, test = data["training"], data["testing"]
    expected_train = [r for r in rows if r[2] == "train"]
    assert sorted(train.image_paths) == sorted(str(tmp_path / "in_shop" / r[0]) for r in expected_train)
    assert len(np.unique(train.labels)) == len({r[1] for r in expected_train})
    assert train.query is None and train.gallery is None  # leave-one-out on the train images
    # The test split: the query images then the gallery images, marked by the masks; items name the classes.
    by_path = {str(tmp_path / "in_shop" / r[0]): r for r in rows}
    statuses = [by_path[p][2] for p in test.image_paths]
    assert statuses.count("train") == 0
    np.testing.assert_array_equal(test.query, np.array(statuses) == "query")
    np.testing.assert_array_equal(test.gallery, np.array(statuses) == "gallery")
    assert [test.class_names[y] for y in test.labels] == [by_path[p][1] for p in test.image_paths]
    assert not test.closed_set


@pytest.mark.parametrize("folder, under_img", [("Inshop_Clothes", True), ("in-shop", False)])
def test_in_shop_reads_the_other_codes_folders(tmp_path, dataset_opt, folder, under_img):
    """The Proxy Anchor code's ``Inshop_Clothes/Img/img/...`` and the Roth DML baselines' ``in-shop/img/...``."""
    synthetic.make_in_shop(str(tmp_path), n_items=6, per_item=2, size=12, folder=folder, under_img=under_img)
    test = datasets.select("in_shop", dataset_opt("in_shop", tmp_path))["testing"]
    assert all(os.path.isfile(p) for p in test.image_paths) and test.query.sum() == 3 and test.gallery.sum() == 3


def test_the_run_line_counts_queries_and_gallery(tmp_path, run_main, capsys):
    synthetic.make_in_shop(str(tmp_path), n_items=10, per_item=3, size=12)  # 5 test items: 5 queries, 10 gallery
    assert run_main("--dataset", "in_shop", "--source_path", str(tmp_path), "--arch", "resnet18", "--not_pretrained",
                    "--bs", "6", "--samples_per_class", "3", "--kernels", "0", "--dry_run") == 0  # fmt: skip
    assert "training 15, testing 15 (5 queries -> 10 gallery); 5 train classes" in capsys.readouterr().out


def test_in_shop_defaults_to_the_papers_recalls(make_opt):
    """Proxy Anchor's In-Shop evaluation: cosine Recall@1/10/20/30/40/50 of the queries against the gallery."""
    opt = make_opt("--dataset", "in_shop")
    assert opt.evaluation_metrics[:6] == [f"c_recall@{k}" for k in (1, 10, 20, 30, 40, 50)]


@pytest.mark.parametrize("query_gallery", [True, False])
def test_csv_table_reads_paths_labels_splits_and_masks(tmp_path, dataset_opt, query_gallery):
    table = synthetic.make_csv_dataset(str(tmp_path), n_classes=6, per_class=3, size=12, query_gallery=query_gallery)
    rows = [line.split(",") for line in open(table).read().splitlines()[1:]]
    data = datasets.select("csv", dataset_opt("csv", tmp_path, "--source_path", table))
    train, test = data["training"], data["testing"]
    assert train.image_paths == [str(tmp_path / r[0]) for r in rows if r[2] == "train"]  # relative to the file
    assert [train.class_names[y] for y in train.labels] == [r[1] for r in rows if r[2] == "train"]
    assert test.image_paths == [str(tmp_path / r[0]) for r in rows if r[2] == "test"]
    assert [test.class_names[y] for y in test.labels] == [r[1] for r in rows if r[2] == "test"]
    if query_gallery:
        np.testing.assert_array_equal(test.query, [r[3] == "1" for r in rows if r[2] == "test"])
        np.testing.assert_array_equal(test.gallery, [r[4] == "1" for r in rows if r[2] == "test"])
    else:
        assert test.query is None and test.gallery is None


def test_csv_absolute_paths_flag_words_and_rows_outside_query_and_gallery(tmp_path, dataset_opt):
    synthetic.make_csv_dataset(str(tmp_path / "images"), n_classes=4, per_class=2, size=12)
    photo = lambda c, k: tmp_path / "images" / "photos" / f"class_{c}" / f"{k}.jpg"  # noqa: E731
    table = tmp_path / "elsewhere" / "mine.csv"
    table.parent.mkdir()
    table.write_text("label,path,split,is_gallery,is_query\n"  # column order is free
                     f"a,{photo(0, 0)},train,,\n" f"a,{photo(0, 1)},train,no,no\n"
                     f"b,{photo(1, 0)},train,0,0\n" f"b,{photo(1, 1)},train,0,0\n"
                     f"c,{photo(2, 0)},TEST,false,True\n" f"c,{photo(2, 1)},test,yes,0\n"
                     f"d,{photo(3, 0)},test,0,0\n" f"d,{photo(3, 1)},test,1,1\n")  # fmt: skip
    test = datasets.select("csv", dataset_opt("csv", tmp_path, "--source_path", str(table)))["testing"]
    assert test.image_paths == [str(photo(2, 0)), str(photo(2, 1)), str(photo(3, 1))]  # (3, 0) is neither
    np.testing.assert_array_equal(test.query, [True, False, True])
    np.testing.assert_array_equal(test.gallery, [False, True, True])


def test_csv_with_test_classes_among_the_train_classes_is_closed_set(tmp_path, dataset_opt):
    synthetic.make_csv_dataset(str(tmp_path), n_classes=4, per_class=2, size=12)
    rows = [f"photos/class_{c}/{k}.jpg,c{c},{'train' if k == 0 else 'test'}" for c in range(4) for k in range(2)]
    (tmp_path / "closed.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    data = datasets.select("csv", dataset_opt("csv", tmp_path, "--source_path", str(tmp_path / "closed.csv")))
    assert data["testing"].closed_set
    assert [data["testing"].class_names[y] for y in data["testing"].labels] == ["c0", "c1", "c2", "c3"]


CSV_FAULTS = {
    "no label column": ("path,split\nphotos/class_0/0.jpg,train\n", "has no column label"),
    "unknown split": ("path,label,split\nphotos/class_0/0.jpg,a,val\n", "line 2: split must be train or test"),
    "missing image": ("path,label,split\nphotos/none.jpg,a,train\n", "line 2: image"),
    "bad flag": ("path,label,split,is_query,is_gallery\nphotos/class_0/0.jpg,a,test,maybe,1\n",
                 "line 2: is_query must be 1/0"),
    "one flag column": ("path,label,split,is_query\nphotos/class_0/0.jpg,a,test,1\n", "but not is_gallery"),
    "short row": ("path,label,split\nphotos/class_0/0.jpg,a\n", "line 2: expected 3 fields"),
    "no test row": ("path,label,split\nphotos/class_0/0.jpg,a,train\n", "has no test row"),
    "no query": ("path,label,split,is_query,is_gallery\nphotos/class_0/0.jpg,a,train,0,0\n"
                 "photos/class_0/1.jpg,a,test,0,1\n", "at least one query and one gallery row"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CSV_FAULTS))
def test_csv_faults_are_one_line(case, tmp_path, dataset_opt):
    synthetic.make_csv_dataset(str(tmp_path), n_classes=2, per_class=2, size=12)
    text, fragment = CSV_FAULTS[case]
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(UserError, match=fragment.replace("(", r"\(")) as err:
        datasets.select("csv", dataset_opt("csv", tmp_path, "--source_path", str(tmp_path / "bad.csv")))
    assert len(str(err.value).splitlines()) == 1


def test_csv_source_path_must_be_a_file(tmp_path, dataset_opt):
    with pytest.raises(UserError, match="is not a file; --dataset csv reads a CSV file with the header"):
        datasets.select("csv", dataset_opt("csv", tmp_path))


def drop_lines(path: str, status: str) -> None:
    lines = open(path).read().splitlines(keepends=True)
    open(path, "w").write("".join(line for line in lines if not line.endswith(f" {status}\n")))


IN_SHOP_FAULTS = {
    "no partition file": (lambda p: os.remove(p), "partition file .* not found"),
    "bad header": (lambda p: open(p, "w").write("3\nname item status\n"), "expected a count, the header"),
    "unknown status": (lambda p: open(p, "a").write("img/x.jpg id_1 val\n"), "expected 'image_name item_id"),
    "missing image": (lambda p: open(p, "a").write("img/MEN/Tees/gone/01.jpg id_00000001 gallery\n"),
                      "not found; restore it"),
    "no query image": (lambda p: drop_lines(p, "query"), "names no query image"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(IN_SHOP_FAULTS))
def test_in_shop_layout_faults_are_one_line(case, tmp_path, dataset_opt):
    synthetic.make_in_shop(str(tmp_path), n_items=6, per_item=2, size=12)
    damage, fragment = IN_SHOP_FAULTS[case]
    damage(str(tmp_path / "in_shop" / "Eval" / "list_eval_partition.txt"))
    with pytest.raises(UserError, match=fragment) as err:
        datasets.select("in_shop", dataset_opt("in_shop", tmp_path))
    assert len(str(err.value).splitlines()) == 1
