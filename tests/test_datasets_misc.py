"""JAFFE and imagefolder adapters on fixture trees."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import real_archive, write_image
from ferbench.datasets import open_dataset
from ferbench.datasets.imagefolder import ImageFolder
from ferbench.datasets.jaffe import JAFFE
from ferbench.errors import DataError
from ferbench.labels import BASIC7, CLASSES

JAFFE_CODES = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness",
               "NE": "neutral", "SA": "sadness", "SU": "surprise"}


def _jaffe(root, subjects=("KA", "YM", "NA")):
    names, n = [], 1
    for s in subjects:
        for code in JAFFE_CODES:
            names.append(f"{s}.{code}1.{n}.tiff")
            write_image(root / names[-1], n)
            n += 1
    return names


def test_jaffe_names_give_class_and_subject(tmp_path):
    names = _jaffe(tmp_path)
    (tmp_path / "README.txt").write_text("not an image")
    ds = open_dataset(JAFFE(), tmp_path)
    assert (ds.train, ds.test, ds.val) == ("all", "all", None)
    assert ds.classes == BASIC7 and list(ds.splits) == ["all"]
    s = ds.splits["all"]
    assert len(s) == 21 and sorted(s.ids) == sorted(names)
    for i, name in enumerate(s.ids):
        assert CLASSES[s.labels[i]] == JAFFE_CODES[name.split(".")[1][:2]]
    subject = dict(zip(s.ids, s.extras["subject"]))
    assert subject["KA.AN1.1.tiff"] == 0 and subject["YM.AN1.8.tiff"] == 9
    assert subject["NA.SU1.21.tiff"] == 5
    assert s.extras["subject"].dtype == np.int64 and s.label_extras == frozenset()
    assert s.source.read(0).shape == (48, 48)


def test_jaffe_converted_copies_and_unknown_subject(tmp_path):
    write_image(tmp_path / "KA.HA2.30.tiff.png", 1)
    write_image(tmp_path / "zz.sa3.31.jpg", 2)
    ds = open_dataset(JAFFE(), tmp_path)
    s = ds.splits["all"]
    assert [CLASSES[i] for i in s.labels] == ["happiness", "sadness"]
    assert list(s.extras["subject"]) == [0, 10]
    assert any("ZZ" in n for n in ds.notes)


@pytest.mark.parametrize("name, problem", [
    ("photo.png", "not a JAFFE name"),
    ("KA.XX1.40.tiff", "unknown class code 'XX'"),
])
def test_jaffe_bad_names(tmp_path, name, problem):
    _jaffe(tmp_path, ("KA",))
    write_image(tmp_path / name, 99)
    with pytest.raises(DataError) as e:
        open_dataset(JAFFE(), tmp_path)
    assert str(e.value).startswith(str(tmp_path / name)) and problem in str(e.value)


def test_jaffe_not_detected(tmp_path):
    write_image(tmp_path / "photo.png", 1)
    with pytest.raises(DataError, match="no jaffe layout"):
        open_dataset(JAFFE(), tmp_path)


def _tree(root, splits, classes=("happy", "Sad", "angry")):
    for s in splits:
        for j, c in enumerate(classes):
            for k in range(2):
                write_image(root / s / c / f"{k}.{'png' if k else 'jpg'}", 10 * j + k)


def test_imagefolder_train_test(tmp_path):
    _tree(tmp_path, ("train", "test"))
    ds = open_dataset(ImageFolder(), tmp_path)
    assert ds.layout == "splits"
    assert (ds.train, ds.test, ds.val) == ("train", "test", None)
    assert ds.classes == ("happiness", "sadness", "anger")  # canonical order, only those found
    s = ds.splits["test"]
    assert s.ids[0] == "test/Sad/0.jpg" and CLASSES[s.labels[0]] == "sadness"
    assert dict(zip(s.ids, (CLASSES[i] for i in s.labels)))["test/happy/1.png"] == "happiness"
    assert s.classes == ds.classes


def test_imagefolder_val_is_test_without_test(tmp_path):
    _tree(tmp_path, ("train", "valid"))
    ds = open_dataset(ImageFolder(), tmp_path)
    assert (ds.train, ds.test, ds.val) == ("train", "valid", None)
    assert any("valid/ serves as the test split" in n for n in ds.notes)


def test_imagefolder_three_splits_and_union_of_classes(tmp_path):
    _tree(tmp_path, ("train", "test"), ("happy", "neutral"))
    _tree(tmp_path, ("val",), ("contempt",))
    ds = open_dataset(ImageFolder(), tmp_path)
    assert (ds.train, ds.test, ds.val) == ("train", "test", "val")
    assert ds.classes == ("neutral", "happiness", "contempt")
    assert set(ds.splits) == {"train", "test", "val"}


def test_imagefolder_class_folders_only(tmp_path):
    _tree(tmp_path, (".",), ("fearful", "disgusted", "surprised"))
    ds = open_dataset(ImageFolder(), tmp_path)
    assert ds.layout == "classes" and (ds.train, ds.test) == ("all", "all")
    assert ds.classes == ("surprise", "disgust", "fear")
    assert ds.splits["all"].ids[0] == "disgusted/0.jpg"


def test_imagefolder_unknown_class_folder(tmp_path):
    _tree(tmp_path, ("train", "test"), ("happy", "bored"))
    with pytest.raises(DataError) as e:
        open_dataset(ImageFolder(), tmp_path)
    assert str(tmp_path / "test" / "bored") in str(e.value)
    assert "unknown class folder 'bored'" in str(e.value)


def test_imagefolder_needs_a_test_split(tmp_path):
    _tree(tmp_path, ("train", "extra"))
    with pytest.raises(DataError, match="need train/ and test/"):
        open_dataset(ImageFolder(), tmp_path)


def test_imagefolder_two_validation_folders(tmp_path):
    _tree(tmp_path, ("train", "val", "validation"))
    with pytest.raises(DataError, match="val, validation all look like the val split"):
        open_dataset(ImageFolder(), tmp_path)


def test_imagefolder_skips_loose_images_and_hidden_folders(tmp_path):
    _tree(tmp_path, ("train", "test"))
    write_image(tmp_path / "train" / "stray.jpg", 5)
    write_image(tmp_path / "train" / ".thumbs" / "x.jpg", 6)
    (tmp_path / "__MACOSX" / "train").mkdir(parents=True)
    ds = open_dataset(ImageFolder(), tmp_path)
    assert len(ds.splits["train"]) == 6 and set(ds.splits) == {"train", "test"}
    assert any("1 images directly in train/" in n for n in ds.notes)


def test_imagefolder_ambiguous(tmp_path):
    _tree(tmp_path, ("train", "test"))
    _tree(tmp_path, (".",), ("happy",))
    with pytest.raises(DataError, match="--layout"):
        open_dataset(ImageFolder(), tmp_path)


def _unpack_subset(archive, dest, per_class):
    """The first `per_class` images of every split/class folder, streamed: seconds, not ~30."""
    import tarfile
    from collections import Counter

    seen = Counter()
    with tarfile.open(archive, "r|gz") as tar:
        for m in tar:
            folder = m.name.rsplit("/", 1)[0]
            if m.isfile():
                seen[folder] += 1
                if seen[folder] > per_class:
                    continue
            tar.extract(m, dest, filter="data")
    return dest


@pytest.mark.realdata
def test_imagefolder_reads_real_fer2013_export(tmp_path):
    root = _unpack_subset(real_archive("fer2013"), tmp_path, per_class=20) / "fer2013"
    ds = open_dataset(ImageFolder(), root)
    assert (ds.layout, ds.train, ds.test, ds.classes) == ("splits", "train", "test", BASIC7)
    for split in ("train", "test"):
        s = ds.splits[split]
        assert set(s.class_counts().values()) == {20}
        folders = {i.split("/")[1]: CLASSES[label] for i, label in zip(s.ids, s.labels)}
        assert folders == {"angry": "anger", "disgust": "disgust", "fear": "fear",
                           "happy": "happiness", "neutral": "neutral", "sad": "sadness",
                           "surprise": "surprise"}
    assert ds.splits["train"].source.read(0).shape == (48, 48)


@pytest.mark.realdata
def test_imagefolder_reads_real_ckplus_class_folders(unpacked):
    ds = open_dataset(ImageFolder(), unpacked("ckplus"))
    assert (ds.layout, ds.train, ds.test, ds.classes) == ("classes", "all", "all", CLASSES)
    assert ds.splits["all"].class_counts()["contempt"] == 17 and len(ds.splits["all"]) == 890


def test_running_on_a_one_split_dataset_warns_that_train_and_test_are_the_same(tmp_path):
    from click.testing import CliRunner

    from ferbench.cli import cli

    _jaffe(tmp_path / "jaffe")
    res = CliRunner().invoke(cli, ["run", "--method", "baseline", "--dataset", "jaffe",
                                   "--data-root", str(tmp_path / "jaffe"), "--preset", "quick",
                                   "--epochs", "1", "--batch-size", "8", "--device", "cpu",
                                   "--out", str(tmp_path / "out"), "--no-leaderboard"])
    assert res.exit_code == 0, res.output
    assert ("warning: jaffe under clean trains and tests on the same images (one split); its "
            "test accuracy measures fitting, not recognition: use it as a cross target") \
        in res.stderr.splitlines()


def test_a_16_bit_grey_png_reads_as_the_same_face_in_8_bits_not_white(tmp_path):
    from PIL import Image

    from ferbench.datasets.samples import FileSource

    face16 = (np.arange(48 * 48).reshape(48, 48) * 28).astype(np.uint16)  # 0 .. 64,484
    Image.fromarray(face16).save(tmp_path / "deep.png")
    Image.fromarray(np.rint(face16 / 257).astype(np.uint8)).save(tmp_path / "plain.png")
    deep, plain = (FileSource(tmp_path, [n]).read(0) for n in ("deep.png", "plain.png"))
    assert deep.dtype == np.uint8 and deep.shape == (48, 48)
    np.testing.assert_array_equal(deep, plain)
    assert deep.mean() < 130  # PIL's convert("L") clips: this face would read as white
