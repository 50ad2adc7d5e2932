"""RAF-DB adapter: every layout on small fixture trees, label orders, and bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import write_image
from ferbench.datasets import open_dataset
from ferbench.datasets.rafdb import RAFDB
from ferbench.errors import ConfigError, DataError
from ferbench.labels import BASIC7, CLASSES

RAF = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")  # codes 1..7
DIVERSIFIED = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger")


def _names(split, per_class=2):
    """[(file name, RAF code)]: `per_class` images of every code 1..7."""
    width = 5 if split == "train" else 4
    codes = [c for c in range(1, 8) for _ in range(per_class)]
    return [(f"{split}_{i + 1:0{width}d}.jpg", c) for i, c in enumerate(codes)]


def _official(root, images=("aligned",)):
    rows = _names("train") + _names("test", 1)
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text(
        "".join(f"{n} {c}\n" for n, c in rows))
    for i, (n, _) in enumerate(rows):
        if "aligned" in images:
            aligned = n.replace(".jpg", "_aligned.jpg")
            write_image(root / "Image" / "aligned" / aligned, i, mode="RGB")
        if "original" in images:
            write_image(root / "Image" / "original" / n, 100 + i, size=64, mode="RGB")
    return rows


def _label(ds, split, suffix):
    s = ds.splits[split]
    return CLASSES[s.labels[[i.endswith(suffix) for i in s.ids].index(True)]]


def test_official_aligned_maps_raf_codes_by_name(tmp_path):
    rows = _official(tmp_path)
    ds = open_dataset(RAFDB(), tmp_path)
    assert ds.layout == "official" and ds.classes == BASIC7
    assert (ds.train, ds.test, ds.val) == ("train", "test", None)
    assert len(ds.splits["train"]) == 14 and len(ds.splits["test"]) == 7
    for name, code in rows:
        split = name.split("_")[0]
        assert _label(ds, split, name.replace(".jpg", "_aligned.jpg")) == RAF[code - 1]
    train = ds.splits["train"]
    assert train.ids[0] == "Image/aligned/train_00001_aligned.jpg"
    assert train.source.read(0).shape == (48, 48, 3)
    assert set(train.class_counts().values()) == {2}


def test_official_original_images_and_hint(tmp_path):
    _official(tmp_path, images=("original",))
    ds = open_dataset(RAFDB(), tmp_path, options={"images": "original"})
    assert ds.splits["test"].ids[0] == "Image/original/test_0001.jpg"
    assert ds.splits["test"].source.read(0).shape == (64, 64, 3)
    with pytest.raises(DataError, match="-o images=original"):
        open_dataset(RAFDB(), tmp_path)
    with pytest.raises(ConfigError, match="images"):
        open_dataset(RAFDB(), tmp_path, options={"images": "cropped"})


def test_fingerprint_does_not_depend_on_the_root(tmp_path):
    _official(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    fa = open_dataset(RAFDB(), tmp_path / "a").splits["train"]
    fb = open_dataset(RAFDB(), tmp_path / "b").splits["train"]
    assert fa.fingerprint == fb.fingerprint
    assert not any(i.startswith("/") or str(tmp_path) in i for i in fa.ids)


def test_split_files(tmp_path):
    emo = tmp_path / "EmoLabel"
    emo.mkdir()
    for split, per in (("train", 2), ("test", 1)):
        rows = _names(split, per)
        (emo / f"{split}_label.txt").write_text("".join(f"{n} {c}\r\n" for n, c in rows))
        for i, (n, _) in enumerate(rows):
            write_image(tmp_path / "Image" / "aligned" / n.replace(".jpg", "_aligned.jpg"), i)
    ds = open_dataset(RAFDB(), tmp_path)
    assert ds.layout == "split_files"
    assert _label(ds, "train", "train_00001_aligned.jpg") == "surprise"
    assert _label(ds, "test", "test_0007_aligned.jpg") == "neutral"


def _index_lists(root, listdir="", imagedir="Image"):
    rows = _names("train") + _names("test", 1)
    lists = root / listdir
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "images.txt").write_text("".join(f"{i + 1} {n}\n" for i, (n, _) in enumerate(rows)))
    (lists / "image_class_labels.txt").write_text(
        "".join(f"{i + 1} {c}\n" for i, (_, c) in enumerate(rows)))
    (lists / "train_test_split.txt").write_text(
        "".join(f"{i + 1} {int(n.startswith('train'))}\n" for i, (n, _) in enumerate(rows)))
    for i, (n, _) in enumerate(rows):
        write_image(root / imagedir / n, i)
    return rows


def test_index_lists_ua_fer(tmp_path):
    rows = _index_lists(tmp_path)
    ds = open_dataset(RAFDB(), tmp_path)
    assert ds.layout == "index_lists"
    assert len(ds.splits["train"]) == 14 and len(ds.splits["test"]) == 7
    for name, code in rows:
        assert _label(ds, name.split("_")[0], "/" + name) == RAF[code - 1]
    assert ds.splits["train"].ids[0] == "Image/train_00001.jpg"


def test_index_lists_ceprompt_folders(tmp_path):
    _index_lists(tmp_path, "EmoLabel", "Image/aligned_224")
    ds = open_dataset(RAFDB(), tmp_path, layout="index_lists")
    assert ds.splits["test"].ids[0] == "Image/aligned_224/test_0001.jpg"


def _folders(root, names, splits=("train", "test")):
    for s in splits:
        for j, name in enumerate(names):
            for k in range(2):
                write_image(root / s / name / f"{s}_{j}_{k}.{'png' if k else 'jpg'}", 10 * j + k)


def test_named_folders(tmp_path):
    _folders(tmp_path, ["Angry", "disgusted", "fear", "happy", "neutral", "sad", "surprise"])
    ds = open_dataset(RAFDB(), tmp_path)
    assert ds.layout == "named_folders"
    assert _label(ds, "train", "Angry/train_0_0.jpg") == "anger"
    assert _label(ds, "test", "disgusted/test_1_1.png") == "disgust"
    assert _label(ds, "train", "sad/train_5_0.jpg") == "sadness"
    assert len(ds.splits["test"]) == 14


@pytest.mark.parametrize("order, table, folders", [
    ("", RAF, [str(i) for i in range(1, 8)]),
    ("raf", RAF, [str(i) for i in range(1, 8)]),
    ("raf0", RAF, [str(i) for i in range(7)]),
    ("diversified", DIVERSIFIED, [str(i) for i in range(7)]),
])
def test_numeric_folders_orders(tmp_path, order, table, folders):
    _folders(tmp_path, folders)
    ds = open_dataset(RAFDB(), tmp_path, options={"label_order": order})
    assert ds.layout == "numeric_folders"
    for split in ("train", "test"):
        s = ds.splits[split]
        for folder, name in zip(folders, table):
            got = {CLASSES[s.labels[i]] for i, x in enumerate(s.ids) if x.split("/")[1] == folder}
            assert got == {name}, (folder, got)


def test_zero_based_folders_need_label_order(tmp_path):
    _folders(tmp_path, [str(i) for i in range(7)])
    with pytest.raises(DataError) as e:
        open_dataset(RAFDB(), tmp_path)
    msg = str(e.value)
    assert "--label-order raf0" in msg and "--label-order diversified" in msg
    assert str(tmp_path / "train") in msg
    with pytest.raises(DataError, match="0 exists"):
        open_dataset(RAFDB(), tmp_path, options={"label_order": "raf"})
    with pytest.raises(ConfigError, match="label order"):
        open_dataset(RAFDB(), tmp_path, options={"label_order": "fer2013"})


def test_one_based_folders_reject_zero_based_order(tmp_path):
    _folders(tmp_path, [str(i) for i in range(1, 8)])
    with pytest.raises(DataError, match="7 exists"):
        open_dataset(RAFDB(), tmp_path, options={"label_order": "diversified"})


def test_numeric_folders_without_0_or_7_are_ambiguous(tmp_path):
    _folders(tmp_path, [str(i) for i in range(1, 7)])
    with pytest.raises(DataError, match="--label-order raf"):
        open_dataset(RAFDB(), tmp_path)


def test_bad_numeric_folder(tmp_path):
    _folders(tmp_path, ["1", "2", "9"])
    with pytest.raises(DataError, match=r"9.*not a number 0\.\.7"):
        open_dataset(RAFDB(), tmp_path, layout="numeric_folders")


def test_ambiguous_layouts_ask_for_layout(tmp_path):
    _official(tmp_path)
    (tmp_path / "EmoLabel" / "train_label.txt").write_text("train_00001.jpg 1\n")
    (tmp_path / "EmoLabel" / "test_label.txt").write_text("test_0001.jpg 1\n")
    assert RAFDB().detect(tmp_path) == ["official", "split_files"]
    with pytest.raises(DataError, match="--layout"):
        open_dataset(RAFDB(), tmp_path)
    assert open_dataset(RAFDB(), tmp_path, layout="official").layout == "official"


def test_mixed_class_folders_are_ambiguous(tmp_path):
    _folders(tmp_path, ["1", "happy"])
    with pytest.raises(DataError, match="--layout"):
        open_dataset(RAFDB(), tmp_path)


def test_nothing_detected(tmp_path):
    with pytest.raises(DataError, match="no rafdb layout"):
        open_dataset(RAFDB(), tmp_path)


# Bad input: each names the file, and the line where there is one.

def _corrupt(tmp_path, line):
    _official(tmp_path)
    path = tmp_path / "EmoLabel" / "list_patition_label.txt"
    lines = path.read_text().splitlines()
    lines[2] = line
    path.write_text("\n".join(lines) + "\n")
    return f"{path}:3"


@pytest.mark.parametrize("line, problem", [
    ("train_00003.jpg", "malformed line"),
    ("train_00003.jpg 5 extra", "malformed line"),
    ("train_00003.jpg five", "not an integer"),
    ("train_00003.jpg 8", "not a RAF-DB class"),
    ("train_00003.jpg 0", "not a RAF-DB class"),
    ("val_00003.jpg 1", "neither train_ nor test_"),
    ("../../etc/passwd 1", "escapes the data root"),
    ("/etc/passwd 1", "outside the data root"),
    ("train_00001.jpg 1", "listed twice"),
    ("train_99999.jpg 1", "train_99999_aligned.jpg is listed but missing"),
])
def test_bad_official_lines(tmp_path, line, problem):
    where = _corrupt(tmp_path, line)
    with pytest.raises(DataError) as e:
        open_dataset(RAFDB(), tmp_path)
    assert str(e.value).startswith(where) and problem in str(e.value)


def test_split_file_escape(tmp_path):
    emo = tmp_path / "EmoLabel"
    emo.mkdir()
    (emo / "train_label.txt").write_text("../../etc/passwd 1\n")
    (emo / "test_label.txt").write_text("test_0001.jpg 1\n")
    with pytest.raises(DataError, match=r"train_label\.txt:1: .*escapes the data root"):
        open_dataset(RAFDB(), tmp_path, layout="split_files")


@pytest.mark.parametrize("file, text, problem", [
    ("image_class_labels.txt", "1 9\n", r"image_class_labels\.txt:1: label 9"),
    ("train_test_split.txt", "1 2\n", r"train_test_split\.txt:1: split flag '2'"),
    ("images.txt", "1 ../../etc/passwd\n", r"images\.txt:1: .*escapes the data root"),
    ("images.txt", "1 x.jpg\n1 y.jpg\n", r"images\.txt:2: image id 1 appears twice"),
    ("images.txt", "1 train_00001.jpg\n99 extra.jpg\n", r"no row for image id 99"),
    ("image_class_labels.txt", "1 1\n77 1\n", r"image_class_labels\.txt:2: image id 77 is not"),
])
def test_bad_index_lists(tmp_path, file, text, problem):
    _index_lists(tmp_path)
    path = tmp_path / file
    path.write_text(text + "".join(path.read_text().splitlines(True)[1:]))
    with pytest.raises(DataError, match=problem):
        open_dataset(RAFDB(), tmp_path)


def test_index_list_image_missing(tmp_path):
    _index_lists(tmp_path)
    (tmp_path / "Image" / "test_0002.jpg").unlink()
    with pytest.raises(DataError, match=r"images\.txt:16: image Image/test_0002\.jpg is listed"):
        open_dataset(RAFDB(), tmp_path)


def test_unknown_class_folder(tmp_path):
    _folders(tmp_path, ["happy", "sad", "bored"])
    with pytest.raises(DataError) as e:
        open_dataset(RAFDB(), tmp_path, layout="named_folders")
    assert str(tmp_path / "test" / "bored") in str(e.value) or \
        str(tmp_path / "train" / "bored") in str(e.value)
    assert "unknown class folder 'bored'" in str(e.value)


def test_contempt_folder_is_not_raf(tmp_path):
    _folders(tmp_path, ["happy", "contempt"])
    with pytest.raises(DataError, match="unknown class folder 'contempt'"):
        open_dataset(RAFDB(), tmp_path)


def test_labels_are_canonical_indices(tmp_path):
    _official(tmp_path)
    labels = open_dataset(RAFDB(), tmp_path).splits["train"].labels
    assert labels.dtype == np.int64 and set(labels) == set(range(7))


def test_index_lists_with_root_relative_names(tmp_path):
    _index_lists(tmp_path, "", "Image/aligned")
    images = tmp_path / "images.txt"
    images.write_text(images.read_text().replace(" ", " Image/aligned/"))
    ds = open_dataset(RAFDB(), tmp_path, layout="index_lists")
    assert ds.splits["train"].ids[0] == "Image/aligned/train_00001.jpg"
