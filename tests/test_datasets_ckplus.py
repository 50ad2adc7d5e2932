"""CK+ adapter: labels by folder name, subject from the file name, subject-disjoint splits."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write_image
from ferbench.datasets.base import open_dataset
from ferbench.datasets.ckplus import CKPlus
from ferbench.errors import ConfigError, DataError
from ferbench.labels import CLASSES

FOLDERS = ("anger", "contempt", "disgust", "fear", "happy", "neutral", "sadness", "surprise")


def ckplus_tree(root, subjects=12, ext="png"):
    """Every subject has one frame per class folder and two neutral frames (first frames)."""
    seed = 0
    for s in range(1, subjects + 1):
        for k, folder in enumerate(FOLDERS):
            frames = (1, 2) if folder == "neutral" else (15,)
            for f in frames:
                write_image(root / folder / f"S{s * 5:03d}_{k + 1:03d}_{f:08d}.{ext}", seed=seed)
                seed += 1
    return root


def subjects_of(samples):
    return set(samples.extras["subject"].tolist())


def test_ckplus_labels_and_subjects(tmp_path):
    ds = open_dataset(CKPlus(), ckplus_tree(tmp_path))
    assert ds.layout == "folders" and ds.classes == CLASSES
    a = ds.splits["all"]
    assert len(a) == 12 * 9
    counts = a.class_counts()
    assert counts.pop("neutral") == 24 and set(counts.values()) == {12}
    assert a.ids[0] == "anger/S005_001_00000015.png"
    i = a.ids.index("happy/S010_005_00000015.png")
    assert CLASSES[a.labels[i]] == "happiness" and a.extras["subject"][i] == 10
    assert a.extras["subject"].dtype == np.int64
    assert a.label_extras == frozenset()  # the subject is image-derived
    assert CKPlus().native_labels[5] == "happiness" and CKPlus().grey
    assert any("12 subjects" in n for n in ds.notes)


def test_ckplus_holdout_is_subject_disjoint_and_seeded(tmp_path):
    ckplus_tree(tmp_path)
    ds = open_dataset(CKPlus(), tmp_path)
    assert (ds.train, ds.test, ds.val) == ("train", "test", None)
    train, test = subjects_of(ds.splits["train"]), subjects_of(ds.splits["test"])
    assert not train & test and train | test == subjects_of(ds.splits["all"])
    assert len(test) == round(0.2 * 12)
    assert len(ds.splits["train"]) + len(ds.splits["test"]) == len(ds.splits["all"])
    again = open_dataset(CKPlus(), tmp_path)
    assert again.splits["test"].ids == ds.splits["test"].ids
    other = [subjects_of(open_dataset(CKPlus(), tmp_path, options={"split_seed": s}).splits["test"])
             for s in (1, 2, 3)]
    assert any(o != test for o in other)
    half = open_dataset(CKPlus(), tmp_path, options={"test_fraction": "0.5"})
    assert len(subjects_of(half.splits["test"])) == 6


def test_ckplus_folds_partition_the_subjects(tmp_path):
    ckplus_tree(tmp_path)
    seen = []
    for fold in range(5):
        ds = open_dataset(CKPlus(), tmp_path, options={"folds": 5, "fold": fold, "split_seed": 7})
        train, test = subjects_of(ds.splits["train"]), subjects_of(ds.splits["test"])
        assert not train & test and len(train | test) == 12
        assert len(test) in (2, 3)  # round-robin: fold sizes differ by at most one
        assert any(f"fold {fold} of 5" in n for n in ds.notes)
        seen.extend(test)
    assert sorted(seen) == sorted(subjects_of(ds.splits["all"]))


@pytest.mark.parametrize("options", [
    {"fold": 10}, {"folds": 1, "fold": 0}, {"test_fraction": 0.0}, {"test_fraction": 1.5},
    {"fold": 2, "test_fraction": 0.5},  # a fold's share is 1/folds: test_fraction unread
    {"folds": 5},                       # folds without a fold: unread
])
def test_ckplus_bad_options(tmp_path, options):
    ckplus_tree(tmp_path, subjects=3)
    with pytest.raises(ConfigError, match="dataset ckplus"):
        open_dataset(CKPlus(), tmp_path, options=options)


def test_ckplus_too_few_subjects_for_folds(tmp_path):
    ckplus_tree(tmp_path, subjects=3)
    with pytest.raises(ConfigError, match="too few"):
        open_dataset(CKPlus(), tmp_path, options={"folds": 5, "fold": 4})


@pytest.mark.parametrize("ext", ["jpg", "jpeg", "tiff"])
def test_ckplus_other_image_types(tmp_path, ext):
    ckplus_tree(tmp_path, subjects=2, ext=ext)
    assert len(open_dataset(CKPlus(), tmp_path).splits["all"]) == 18


def test_ckplus_name_without_subject_is_named(tmp_path):
    ckplus_tree(tmp_path, subjects=2)
    write_image(tmp_path / "fear" / "frame_0001.png")
    with pytest.raises(DataError, match=r"fear/frame_0001\.png: file name does not start with S"):
        open_dataset(CKPlus(), tmp_path)


def test_ckplus_unknown_class_folder_is_named(tmp_path):
    ckplus_tree(tmp_path, subjects=2)
    write_image(tmp_path / "pain" / "S001_001_00000001.png")
    with pytest.raises(DataError, match=r"pain: unknown class folder 'pain': not an emotion"):
        open_dataset(CKPlus(), tmp_path)


def test_ckplus_detection(tmp_path):
    write_image(tmp_path / "happy" / "img1.png")
    assert CKPlus().detect(tmp_path) == []
    with pytest.raises(DataError, match="no ckplus layout found"):
        open_dataset(CKPlus(), tmp_path)
    write_image(tmp_path / "anger" / "S001_001_00000001.png")
    assert CKPlus().detect(tmp_path) == ["folders"]


CKPLUS_COUNTS = dict(anger=43, contempt=17, disgust=56, fear=25, happiness=66, neutral=575,
                     sadness=28, surprise=80)


@pytest.mark.realdata
def test_ckplus_real_counts_and_subject_disjoint_splits(unpacked):
    root = unpacked("ckplus")
    ds = open_dataset(CKPlus(), root)
    assert ds.splits["all"].class_counts() == CKPLUS_COUNTS
    everyone = subjects_of(ds.splits["all"])
    assert len(everyone) == 123
    train, test = subjects_of(ds.splits["train"]), subjects_of(ds.splits["test"])
    assert not train & test and train | test == everyone and len(test) == round(0.2 * 123)
    folds = []
    for fold in range(10):
        f = open_dataset(CKPlus(), root, options={"fold": fold})
        train, test = subjects_of(f.splits["train"]), subjects_of(f.splits["test"])
        assert not train & test and train | test == everyone
        folds.append(test)
    assert sorted(s for t in folds for s in t) == sorted(everyone)
