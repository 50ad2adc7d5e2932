"""FER2013 and FERPlus adapters: every layout and option on small trees, bad input, real counts."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from conftest import write_image
from ferbench.datasets.base import open_dataset
from ferbench.datasets.fer2013 import FER2013
from ferbench.datasets.ferplus import FERPlus, majority_labels, plurality_labels
from ferbench.errors import ConfigError, DataError
from ferbench.labels import BASIC7, CLASSES

FER_FOLDERS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
ix = CLASSES.index


# ---------------------------------------------------------------- fer2013 fixtures

def fer2013_folders(root, n=2):
    """train/<class>/Training_*.jpg, test/<class>/{PublicTest,PrivateTest}_*.jpg, n of each."""
    seed = 0
    for c in FER_FOLDERS:
        for k in range(n):
            for sub, prefix in (("train", "Training"), ("test", "PublicTest"),
                                ("test", "PrivateTest")):
                write_image(root / sub / c / f"{prefix}_{c}{k}.jpg", seed=seed)
                seed += 1
    return root


def pixel_row(seed, count=2304):
    return " ".join(map(str, np.random.default_rng(seed).integers(0, 256, count)))


def write_fer2013_csv(path, rows, header=("emotion", "pixels", "Usage")):
    """rows: (emotion, usage) tuples, pixels drawn per row, or lists of every cell."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i, row in enumerate(rows):
            w.writerow([row[0], pixel_row(i), row[1]] if isinstance(row, tuple) else row)
    return path


FER_ROWS = [(e, u) for u in ("Training", "PublicTest", "PrivateTest") for e in range(7)]


# ---------------------------------------------------------------- fer2013: folders

def test_fer2013_folders_maps_names_and_splits_by_prefix(tmp_path):
    ds = open_dataset(FER2013(), fer2013_folders(tmp_path))
    assert ds.layout == "folders" and ds.classes == BASIC7
    assert (ds.train, ds.val, ds.test) == ("train", "val", "test")
    assert ds.combined == {"test_all": ("val", "test")}
    for split, prefix in (("train", "Training_"), ("val", "PublicTest_"), ("test", "PrivateTest_")):
        s = ds.splits[split]
        assert len(s) == 14 and s.class_counts() == {c: 2 for c in BASIC7}
        assert all(i.rsplit("/", 1)[1].startswith(prefix) for i in s.ids)
    s = ds.splits["train"]
    for i, y in zip(s.ids, s.labels):
        folder = i.split("/")[1]
        renamed = {"angry": "anger", "happy": "happiness", "sad": "sadness"}
        assert CLASSES[y] == renamed.get(folder, folder)
    assert s.ids[0] == "train/angry/Training_angry0.jpg"  # posix, relative, sorted
    assert s.source.read(0).shape == (48, 48)
    assert any("prefix" in n for n in ds.notes)


def test_fer2013_folders_unprefixed_files_follow_their_folder(tmp_path):
    fer2013_folders(tmp_path, n=1)
    write_image(tmp_path / "test" / "happy" / "mine.png", seed=99)
    write_image(tmp_path / "train" / "happy" / "other.png", seed=98)
    ds = open_dataset(FER2013(), tmp_path)
    assert "test/happy/mine.png" in ds.splits["test"].ids
    assert "train/happy/other.png" in ds.splits["train"].ids
    assert any("2 image(s) without" in n for n in ds.notes)


def test_fer2013_folders_without_publictest_has_no_val(tmp_path):
    for c in FER_FOLDERS:
        write_image(tmp_path / "train" / c / "Training_1.jpg")
        write_image(tmp_path / "test" / c / "PrivateTest_1.jpg")
    ds = open_dataset(FER2013(), tmp_path)
    assert ds.val is None and "val" not in ds.splits and ds.combined == {}


def test_fer2013_unknown_class_folder_is_named(tmp_path):
    fer2013_folders(tmp_path, n=1)
    write_image(tmp_path / "train" / "bored" / "Training_9.jpg")
    with pytest.raises(DataError, match=r"train/bored.*not an emotion"):
        open_dataset(FER2013(), tmp_path)


# ---------------------------------------------------------------- fer2013: csv

def test_fer2013_csv_reads_pixels_and_maps_native_order_by_name(tmp_path):
    path = write_fer2013_csv(tmp_path / "fer2013.csv", FER_ROWS)
    ds = open_dataset(FER2013(), tmp_path)
    assert ds.layout == "csv" and ds.val == "val"
    native = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
    for split, offset in (("train", 0), ("val", 7), ("test", 14)):
        s = ds.splits[split]
        assert s.ids == tuple(f"fer2013.csv#{offset + e}" for e in range(7))
        assert [CLASSES[y] for y in s.labels] == list(native)
    assert FER2013().native_labels == dict(enumerate(native))  # for integer noise files
    s = ds.splits["val"]
    expect = np.array(pixel_row(8).split(), dtype=np.uint8).reshape(48, 48)
    np.testing.assert_array_equal(s.source.read(1), expect)
    assert s.source.sizes()[1] == len(pixel_row(8))
    assert s.source.stamp() and s.source.stamp() != ds.splits["test"].source.stamp()
    assert len(s.fingerprint) == 16
    assert path.exists()


def test_fer2013_csv_header_with_padded_names(tmp_path):
    rows = [[e, u, pixel_row(i)] for i, (e, u) in enumerate(FER_ROWS)]
    write_fer2013_csv(tmp_path / "fer2013.csv", rows, header=("emotion", " Usage", " pixels"))
    assert len(open_dataset(FER2013(), tmp_path).splits["train"]) == 7


@pytest.mark.parametrize("bad, line, message", [
    (["3", pixel_row(0)], 3, "expected 3 columns, found 2"),
    (["3", pixel_row(0, 2303), "Training"], 3, "expected 2304 pixels, found 2303"),
    (["3", pixel_row(0)[:-3] + " x1", "Training"], 3, "not space-separated integers"),
    (["3", pixel_row(0)[:-3] + " 1.5", "Training"], 3, "not space-separated integers"),
    (["3", pixel_row(0)[:-3] + " 256", "Training"], 3, r"0\.\.255"),
    (["7", pixel_row(0), "Training"], 3, "emotion '7'"),
    (["-1", pixel_row(0), "Training"], 3, "emotion '-1'"),
    (["3", pixel_row(0), "Validation"], 3, "unknown Usage 'Validation'"),
])
def test_fer2013_csv_bad_rows_name_file_and_line(tmp_path, bad, line, message):
    write_fer2013_csv(tmp_path / "fer2013.csv", [FER_ROWS[0], bad] + FER_ROWS[1:])
    with pytest.raises(DataError, match=rf"fer2013\.csv:{line}: .*{message}"):
        open_dataset(FER2013(), tmp_path)


def test_fer2013_csv_missing_column(tmp_path):
    write_fer2013_csv(tmp_path / "fer2013.csv", [["3", pixel_row(0)]], header=("emotion", "pixels"))
    with pytest.raises(DataError, match=r"fer2013\.csv:1: header lacks column\(s\) Usage"):
        open_dataset(FER2013(), tmp_path)


def test_fer2013_detection(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no fer2013 layout found"):
        open_dataset(FER2013(), tmp_path / "empty")
    fer2013_folders(tmp_path, n=1)
    write_fer2013_csv(tmp_path / "fer2013.csv", FER_ROWS)
    assert FER2013().detect(tmp_path) == ["folders", "csv"]
    with pytest.raises(DataError, match="ambiguous fer2013 layout: folders, csv"):
        open_dataset(FER2013(), tmp_path)
    assert open_dataset(FER2013(), tmp_path, layout="csv").layout == "csv"


# ---------------------------------------------------------------- ferplus: schemes

def votes(*rows):
    return np.asarray(rows, dtype=np.float32)


def test_majority_scheme_every_case():
    v = votes(
        [5, 1, 1, 1, 1, 1, 0, 0, 0, 0],  # 5 of 10 is no majority, but the 1-votes are outliers
        [0, 6, 4, 0, 0, 0, 0, 0, 0, 0],  # 6 > 10/2: happiness
        [0, 5, 5, 0, 0, 0, 0, 0, 0, 0],  # a tie is no majority
        [0, 4, 4, 2, 0, 0, 0, 0, 0, 0],  # plurality but not more than half
        [2, 0, 0, 0, 0, 0, 0, 0, 8, 0],  # unknown on top
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not a face
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],  # every vote an outlier: nothing left
        [4, 0, 0, 0, 0, 3, 1, 0, 1, 0],  # fer0010406.png: 9 votes; 4 > 7/2 after the drop
        [0, 0, 0, 0, 0, 0, 0, 7, 3, 0],  # contempt, the last emotion column
        [3, 0, 0, 0, 0, 0, 0, 0, 2, 2],  # unknown/NF votes count against the majority
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # no votes at all
    )
    expect = [ix("neutral"), ix("happiness"), -1, -1, -1, -1, -1, ix("neutral"), ix("contempt"),
              -1, -1]
    assert majority_labels(v).tolist() == expect


def test_plurality_scheme_every_case():
    v = votes(
        [0, 4, 4, 2, 0, 0, 0, 0, 0, 0],  # tie on top
        [3, 4, 1, 1, 1, 0, 0, 0, 0, 0],  # plurality without majority: happiness
        [5, 1, 1, 1, 1, 1, 0, 0, 0, 0],
        [2, 0, 0, 0, 0, 0, 0, 0, 8, 0],  # unknown on top
        [4, 0, 0, 0, 0, 0, 0, 0, 0, 4],  # NF tied with the top emotion
        [0, 0, 0, 0, 0, 0, 4, 3, 3, 0],  # fear
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # no votes
    )
    expect = [-1, ix("happiness"), ix("neutral"), -1, -1, ix("fear"), -1]
    assert plurality_labels(v).tolist() == expect


def test_ferplus_native_codes_are_the_vote_columns():
    assert FERPlus().native_labels == dict(enumerate(CLASSES))


# ---------------------------------------------------------------- ferplus fixtures

# (name, votes): two kept per split by majority, one dropped (unknown on top), one for contempt.
FERPLUS_ROWS = {
    "train": [("fer0000000.png", [8, 1, 0, 0, 1, 0, 0, 0, 0, 0]),
              ("fer0000001.png", [0, 0, 0, 0, 0, 0, 0, 6, 4, 0]),
              ("fer0000002.png", [2, 0, 0, 0, 0, 0, 0, 0, 8, 0]),
              ("fer0000003.png", [4, 0, 0, 0, 0, 3, 1, 0, 1, 0])],
    "val": [("fer0000004.png", [0, 0, 9, 0, 0, 0, 0, 0, 0, 1]),
            ("fer0000005.png", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10])],
    "test": [("fer0000006.png", [0, 0, 0, 0, 10, 0, 0, 0, 0, 0]),
             ("fer0000007.png", [0, 5, 5, 0, 0, 0, 0, 0, 0, 0])],
}
OFFICIAL = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}
USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


def write_label_csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        for name, v in rows:
            w.writerow([name, "(0, 0, 48, 48)", *v])
    return path


def ferplus_tree(root, images="{split}", labels="{split}", names=OFFICIAL):
    """Split folders of PNGs plus label.csv files, at paths given as templates."""
    seed = 0
    for role, rows in FERPLUS_ROWS.items():
        for name, _ in rows:
            write_image(root / images.format(split=names[role]) / name, seed=seed)
            seed += 1
        write_label_csv(root / labels.format(split=names[role]) / "label.csv", rows)
    return root


def write_new_csv(path, changed=None):
    """fer2013new.csv for FERPLUS_ROWS in row order, with one unnamed (not a face) row."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Usage", "Image name", "neutral", "happiness", "surprise", "sadness", "anger",
                    "disgust", "fear", "contempt", "unknown", "NF"])
        for role, rows in FERPLUS_ROWS.items():
            for name, v in rows:
                w.writerow([USAGE[role], name, *(changed or {}).get(name, v)])
            w.writerow([USAGE[role], "", 0, 0, 0, 0, 0, 0, 0, 0, 0, 10])
    return path


def assert_fixture_labels(ds, prefix):
    tr = ds.splits["train"]
    kept = ("fer0000000.png", "fer0000001.png", "fer0000003.png")
    assert tr.ids == tuple(prefix + n for n in kept)
    assert [CLASSES[y] for y in tr.labels] == ["neutral", "contempt", "neutral"]
    assert tr.extras["votes"].dtype == np.float32 and tr.extras["votes"].shape == (3, 10)
    assert tr.extras["votes"][2].tolist() == [4, 0, 0, 0, 0, 3, 1, 0, 1, 0]
    assert tr.label_extras == frozenset({"votes"})
    assert [CLASSES[y] for y in ds.splits["val"].labels] == ["surprise"]
    assert [CLASSES[y] for y in ds.splits["test"].labels] == ["anger"]
    assert ds.classes == CLASSES and (ds.train, ds.val, ds.test) == ("train", "val", "test")
    assert any("kept 3 of 4 faces (1 left out" in n for n in ds.notes)


# ---------------------------------------------------------------- ferplus: layouts

def test_ferplus_official_label_csv(tmp_path):
    ds = open_dataset(FERPlus(), ferplus_tree(tmp_path))
    assert ds.layout == "official"
    assert_fixture_labels(ds, "FER2013Train/")
    assert any("label.csv" in n and "reference trainer" in n for n in ds.notes)
    assert ds.splits["train"].source.read(0).shape == (48, 48)


def test_ferplus_official_with_fer2013new_votes(tmp_path):
    ferplus_tree(tmp_path)
    changed = {"fer0000007.png": [0, 6, 4, 0, 0, 0, 0, 0, 0, 0]}  # no majority in label.csv
    write_new_csv(tmp_path / "fer2013new.csv", changed=changed)
    ds = open_dataset(FERPlus(), tmp_path, options={"labels": "fer2013new"})
    assert any("votes from fer2013new.csv" in n for n in ds.notes)
    assert any("3 row(s) without an image name" in n for n in ds.notes)
    test = ds.splits["test"]
    assert test.ids == ("FER2013Test/fer0000006.png", "FER2013Test/fer0000007.png")
    assert [CLASSES[y] for y in test.labels] == ["anger", "happiness"]
    # the default still reads label.csv, where fer0000007 has no majority
    assert len(open_dataset(FERPlus(), tmp_path).splits["test"]) == 1


def test_ferplus_official_fer2013new_absent(tmp_path):
    ferplus_tree(tmp_path)
    with pytest.raises(DataError, match=r"fer2013new\.csv: file not found"):
        open_dataset(FERPlus(), tmp_path, options={"labels": "fer2013new"})


@pytest.mark.parametrize("base, names", [
    ("Dataset/", OFFICIAL),
    ("Dataset/", {"train": "Train", "val": "Valid", "test": "Test"}),
    ("", OFFICIAL),
])
def test_ferplus_diversified(tmp_path, base, names):
    ferplus_tree(tmp_path, images=base + "Images/{split}", labels=base + "Labels/{split}",
                 names=names)
    ds = open_dataset(FERPlus(), tmp_path)
    assert ds.layout == "diversified"
    assert_fixture_labels(ds, f"{base}Images/{names['train']}/")


def test_ferplus_csv_layout(tmp_path):
    write_new_csv(tmp_path / "fer2013new.csv")
    rows = [(0, u) for role, u in USAGE.items() for _ in range(len(FERPLUS_ROWS[role]) + 1)]
    write_fer2013_csv(tmp_path / "fer2013.csv", rows)
    ds = open_dataset(FERPlus(), tmp_path)
    assert ds.layout == "csv"
    # row 4 is the unnamed train row: not a face, dropped
    tr = ds.splits["train"]
    assert tr.ids == ("fer2013.csv#0", "fer2013.csv#1", "fer2013.csv#3")
    assert [CLASSES[y] for y in tr.labels] == ["neutral", "contempt", "neutral"]
    expect = np.array(pixel_row(1).split(), np.uint8).reshape(48, 48)
    np.testing.assert_array_equal(tr.source.read(1), expect)
    assert ds.splits["val"].ids == ("fer2013.csv#5",)
    assert any("by row order" in n for n in ds.notes)


def test_ferplus_csv_layout_rows_must_align(tmp_path):
    write_new_csv(tmp_path / "fer2013new.csv")
    write_fer2013_csv(tmp_path / "fer2013.csv", [(0, "Training")] * 5)
    with pytest.raises(DataError, match=r"fer2013new\.csv: has 11 data rows but fer2013\.csv"):
        open_dataset(FERPlus(), tmp_path)
    write_fer2013_csv(tmp_path / "fer2013.csv", [(0, "Training")] * 11)
    with pytest.raises(DataError, match=r"fer2013new\.csv:7: Usage says val but line 7"):
        open_dataset(FERPlus(), tmp_path)


def test_ferplus_detection_and_options(tmp_path):
    ferplus_tree(tmp_path)
    write_new_csv(tmp_path / "fer2013new.csv")
    assert FERPlus().detect(tmp_path) == ["official"]  # fer2013new.csv alone is not the csv layout
    write_fer2013_csv(tmp_path / "fer2013.csv", [(0, "Training")] * 11)
    with pytest.raises(DataError, match="ambiguous ferplus layout: official, csv"):
        open_dataset(FERPlus(), tmp_path)
    with pytest.raises(ConfigError, match="did you mean 'majority'"):
        open_dataset(FERPlus(), tmp_path, layout="official", options={"scheme": "majorty"})
    with pytest.raises(ConfigError, match="option of dataset ferplus"):
        open_dataset(FERPlus(), tmp_path, layout="official", options={"vote": "x"})
    ds = open_dataset(FERPlus(), tmp_path, layout="official", options={"scheme": "plurality"})
    assert [CLASSES[y] for y in ds.splits["test"].labels] == ["anger"]
    assert any("plurality scheme kept" in n for n in ds.notes)


# ---------------------------------------------------------------- ferplus: bad input

@pytest.mark.parametrize("row, message", [
    (["fer0000009.png", "(0, 0, 48, 48)", 1, 2, 3], "expected 12 columns, found 5"),
    (["fer0000009.png", "(0, 0, 48, 48)", *"1 2 x 0 0 0 0 0 0 0".split()], "expected numbers"),
    (["fer0000009.png", "(0, 0, 48, 48)", *"1 2 -3 0 0 0 0 0 0 0".split()], "non-negative"),
    (["fer0000009.png", "(0, 0, 48, 48)", *[1] * 10],
     "lists FER2013Train/fer0000009.png, which does not exist"),
    (["../x.png", "(0, 0, 48, 48)", *[1] * 10], "'../x.png' is empty or escapes the data root"),
    (["/etc/x.png", "(0, 0, 48, 48)", *[1] * 10], "escapes the data root"),
    (["fer0000000.png", "(0, 0, 48, 48)", *[1] * 10], "listed twice \\(first on line 1\\)"),
])
def test_ferplus_bad_label_rows_name_file_and_line(tmp_path, row, message):
    ferplus_tree(tmp_path)
    path = tmp_path / "FER2013Train" / "label.csv"
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow(row)
    with pytest.raises(DataError, match=rf"FER2013Train/label\.csv:5: .*{message}"):
        open_dataset(FERPlus(), tmp_path)


def test_ferplus_missing_split(tmp_path):
    ferplus_tree(tmp_path)
    (tmp_path / "FER2013Valid" / "label.csv").unlink()
    with pytest.raises(DataError, match=r"FER2013Valid/label\.csv: file not found"):
        open_dataset(FERPlus(), tmp_path)


# ---------------------------------------------------------------- real data

FER2013_TRAIN = {"anger": 3995, "disgust": 436, "fear": 4097, "happiness": 7215, "neutral": 4965,
                 "sadness": 4830, "surprise": 3171}
FER2013_TEST_ALL = {"anger": 958, "disgust": 111, "fear": 1024, "happiness": 1774, "neutral": 1233,
                    "sadness": 1247, "surprise": 831}
FERPLUS_MAJORITY = {
    "train": (25045, dict(neutral=8733, happiness=7284, surprise=3136, sadness=3022, anger=2098,
                          disgust=116, fear=536, contempt=120)),
    "val": (3191, dict(neutral=1180, happiness=862, surprise=411, sadness=348, anger=289,
                       disgust=25, fear=60, contempt=16)),
    "test": (3137, dict(neutral=1083, happiness=892, surprise=394, sadness=382, anger=269,
                        disgust=16, fear=86, contempt=15)),
}


@pytest.mark.realdata
def test_fer2013_real_counts(unpacked):
    ds = open_dataset(FER2013(), unpacked("fer2013"))
    assert ds.layout == "folders"
    assert ds.splits["train"].class_counts() == FER2013_TRAIN and len(ds.splits["train"]) == 28709
    val, test = ds.splits["val"].class_counts(), ds.splits["test"].class_counts()
    assert {c: val[c] + test[c] for c in BASIC7} == FER2013_TEST_ALL
    assert len(ds.splits["val"]) == len(ds.splits["test"]) == 3589


@pytest.mark.realdata
def test_ferplus_real_majority_counts(unpacked):
    ds = open_dataset(FERPlus(), unpacked("ferplus"))
    assert ds.layout == "official"
    for split, (total, per_class) in FERPLUS_MAJORITY.items():
        assert len(ds.splits[split]) == total
        assert ds.splits[split].class_counts() == per_class
    assert any("kept 25,045 of 28,558" in n for n in ds.notes)
    tr = ds.splits["train"]
    nine = tr.ids.index("FER2013Train/fer0010406.png")
    assert tr.extras["votes"][nine].sum() == 9 and CLASSES[tr.labels[nine]] == "neutral"
