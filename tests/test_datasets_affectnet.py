"""AffectNet adapter: official CSVs (crop, dropped codes, valence/arousal), lists, ESR export."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import write_image
from ferbench.datasets import open_dataset
from ferbench.datasets.affectnet import AffectNet, parse_name
from ferbench.errors import ConfigError, DataError
from ferbench.labels import BASIC7, CLASSES

NATIVE = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")
HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
          "expression,valence,arousal\n")


def _row(path, code, box=(0, 0, 48, 48), va=(0.25, -0.5)):
    x, y, w, h = box
    return f'{path},{x},{y},{w},{h},"1.0;2.0;3.0;4.0",{code},{va[0]},{va[1]}\n'


def _official(root, lists_dir="", header=True, extra_rows=()):
    """Codes 0-10 once each in training.csv, 0-7 in validation.csv; 48 px images."""
    (root / lists_dir).mkdir(parents=True, exist_ok=True)
    for name, codes in (("training.csv", range(11)), ("validation.csv", range(8))):
        rows = []
        for code in codes:
            rel = f"{100 + code}/{name[0]}{code}.{'png' if code % 2 else 'jpg'}"
            write_image(root / "Manually_Annotated_Images" / rel, code, mode="RGB")
            va = (-2, -2) if code >= 9 else (code / 10 - 0.35, 0.5 - code / 20)
            rows.append(_row(rel, code, va=va))
        if name == "training.csv":
            rows += list(extra_rows)
        (root / lists_dir / name).write_text((HEADER if header else "") + "".join(rows))


def _labels(split):
    return [CLASSES[i] for i in split.labels]


def test_official_eight_classes(tmp_path):
    _official(tmp_path)
    ds = open_dataset(AffectNet(), tmp_path)
    assert ds.layout == "official" and ds.classes == CLASSES
    train, test = ds.splits["train"], ds.splits["test"]
    assert _labels(train) == list(NATIVE) and _labels(test) == list(NATIVE)
    assert train.ids[1] == "Manually_Annotated_Images/101/t1.png"
    assert train.label_extras == {"valence", "arousal"}
    assert train.extras["valence"].dtype == np.float32
    np.testing.assert_allclose(train.extras["valence"], [c / 10 - 0.35 for c in range(8)],
                               atol=1e-6)
    np.testing.assert_allclose(train.extras["arousal"], [0.5 - c / 20 for c in range(8)],
                               atol=1e-6)
    notes = " ".join(ds.notes)
    assert "train: dropped 1 none, 1 uncertain, 1 non-face" in notes
    assert "not public" in notes and ds.test == "test"


def test_official_seven_classes_drops_contempt(tmp_path):
    _official(tmp_path, lists_dir="Manually_Annotated_file_lists")
    ds = open_dataset(AffectNet(), tmp_path, options={"classes": "7"})
    assert ds.classes == BASIC7
    assert _labels(ds.splits["train"]) == list(NATIVE[:7])
    assert len(ds.splits["train"].extras["valence"]) == 7
    assert "test: dropped 1 contempt (codes 7-10)" in ds.notes
    with pytest.raises(ConfigError, match="expected 7 or 8"):
        open_dataset(AffectNet(), tmp_path, options={"classes": 6})


def test_crop_to_face_box(tmp_path):
    _official(tmp_path)
    big = "200/big.jpg"
    write_image(tmp_path / "Manually_Annotated_Images" / big, 7, size=96, mode="RGB")
    small_box = _row(big, 1, box=(10, 20, 40, 30))
    large_box = _row("200/wide.jpg", 1, box=(0, 0, 120, 120))
    write_image(tmp_path / "Manually_Annotated_Images" / "200/wide.jpg", 8, size=96)
    path = tmp_path / "training.csv"
    path.write_text(path.read_text() + small_box + large_box)
    train = open_dataset(AffectNet(), tmp_path).splits["train"]
    i, j = train.ids.index(f"Manually_Annotated_Images/{big}"), len(train) - 1
    assert train.source.read(i).shape == (30, 40, 3)  # larger than its box: cropped
    assert train.source.read(j).shape == (96, 96)  # smaller than its box: as is
    full = open_dataset(AffectNet(), tmp_path, options={"crop": "false"}).splits["train"]
    assert full.source.read(i).shape == (96, 96, 3)


def test_headerless_validation_csv(tmp_path):
    _official(tmp_path)
    path = tmp_path / "validation.csv"
    path.write_text(path.read_text().split("\n", 1)[1])
    ds = open_dataset(AffectNet(), tmp_path)
    assert _labels(ds.splits["test"]) == list(NATIVE)
    assert any("validation.csv has no header row" in n for n in ds.notes)


@pytest.mark.parametrize("row, problem", [
    (_row("100/t0.jpg", 11), "expression 11 is not an AffectNet code"),
    (_row("100/t0.jpg", "happy"), "expression 'happy' is not an integer"),
    ('100/t0.jpg,0,0,x,48,"",1,0.1,0.1\n', "must be numbers"),
    (_row("100/t0.jpg", 1, va=(1.5, 0)), "outside [-1, 1]"),
    (_row("100/gone.jpg", 1), "image Manually_Annotated_Images/100/gone.jpg is listed but missing"),
    (_row("../../../etc/passwd", 1), "escapes the data root"),
    (_row("100/t0.jpg", 1), "listed twice"),
    ("100/t0.jpg,1,2\n", "3 columns"),
])
def test_bad_official_rows(tmp_path, row, problem):
    _official(tmp_path, extra_rows=[row])
    with pytest.raises(DataError) as e:
        open_dataset(AffectNet(), tmp_path)
    msg = str(e.value)
    assert problem in msg and "training.csv" in msg
    if problem != "listed twice":
        assert msg.startswith(f"{tmp_path / 'training.csv'}:13")


def test_missing_validation_csv(tmp_path):
    _official(tmp_path)
    (tmp_path / "validation.csv").unlink()
    with pytest.raises(DataError, match="validation.csv: not found"):
        open_dataset(AffectNet(), tmp_path)


def _index(root, suffix="", codes=range(11)):
    info = root / "affectnet_info"
    info.mkdir(exist_ok=True)
    rows = [(f"imgs/{split}/{c}.jpg", c, split) for split in ("train", "val") for c in codes]
    (info / f"images{suffix}.txt").write_text(
        "".join(f"{i + 1} {p}\n" for i, (p, _, _) in enumerate(rows)))
    (info / f"image_class_labels{suffix}.txt").write_text(
        "".join(f"{i + 1} {c}\n" for i, (_, c, _) in enumerate(rows)))
    (info / f"train_test_split{suffix}.txt").write_text(
        "".join(f"{i + 1} {int(s == 'train')}\n" for i, (_, _, s) in enumerate(rows)))
    for i, (p, _, _) in enumerate(rows):
        write_image(root / p, i)


def test_index_lists_prefer_8cls_files(tmp_path):
    _index(tmp_path, "", codes=range(7))
    _index(tmp_path, "_8cls", codes=range(8))
    ds = open_dataset(AffectNet(), tmp_path)
    assert ds.layout == "index_lists"
    assert _labels(ds.splits["train"]) == list(NATIVE)
    assert ds.splits["test"].ids[0] == "imgs/val/0.jpg"
    ds7 = open_dataset(AffectNet(), tmp_path, options={"classes": 7})
    assert _labels(ds7.splits["test"]) == list(NATIVE[:7])
    assert not any("dropped" in n for n in ds7.notes)  # the 7-class lists were read


def test_index_lists_drop_codes_and_need_contempt_for_8(tmp_path):
    _index(tmp_path, codes=range(11))
    ds = open_dataset(AffectNet(), tmp_path)
    assert _labels(ds.splits["train"]) == list(NATIVE)
    assert "test: dropped 1 none, 1 uncertain, 1 non-face (codes 8-10)" in ds.notes
    (tmp_path / "affectnet_info").rename(tmp_path / "old")
    _index(tmp_path, codes=range(7))
    with pytest.raises(DataError, match="-o classes=7"):
        open_dataset(AffectNet(), tmp_path)


def test_index_lists_absolute_paths(tmp_path):
    _index(tmp_path, codes=range(8))
    images = tmp_path / "affectnet_info" / "images.txt"
    text = images.read_text()
    images.write_text(text.replace(" imgs/", f" {tmp_path}/imgs/", 1))
    ds = open_dataset(AffectNet(), tmp_path)
    assert ds.splits["train"].ids[0] == "imgs/train/0.jpg"
    images.write_text(text.replace(" imgs/", " /elsewhere/imgs/", 1))
    with pytest.raises(DataError, match=r"images\.txt:1: absolute path .* outside the data root"):
        open_dataset(AffectNet(), tmp_path)
    images.write_text(text.replace(" imgs/train/3.jpg", " imgs/../../x.jpg", 1))
    with pytest.raises(DataError, match=r"images\.txt:4: .*escapes the data root"):
        open_dataset(AffectNet(), tmp_path)


def test_index_lists_bad_code(tmp_path):
    _index(tmp_path, codes=range(8))
    labels = tmp_path / "affectnet_info" / "image_class_labels.txt"
    labels.write_text(labels.read_text().replace("3 2\n", "3 12\n"))
    with pytest.raises(DataError, match=r"image_class_labels\.txt:3: expression 12"):
        open_dataset(AffectNet(), tmp_path)


def test_preprocessed_esr_names(tmp_path):
    # ESR's export: folders of any name, the label and affect in the file name.
    for split in ("Training_Labeled", "Validation"):
        for code in range(11):
            va = (-2000, -2000) if code >= 9 else (100 * code - 400, 300 - 50 * code)
            write_image(tmp_path / split / "0" / f"{code:07d}s{code}s{va[0]}s{va[1]}.jpg", code)
    ds = open_dataset(AffectNet(), tmp_path)
    assert ds.layout == "preprocessed"
    test = ds.splits["test"]
    assert _labels(test) == list(NATIVE)
    np.testing.assert_allclose(test.extras["valence"], [(100 * c - 400) / 1000 for c in range(8)])
    np.testing.assert_allclose(test.extras["arousal"], [(300 - 50 * c) / 1000 for c in range(8)])
    assert test.label_extras == {"valence", "arousal"}
    assert "train: dropped 1 none, 1 uncertain, 1 non-face (codes 8-10)" in ds.notes


def test_preprocessed_class_folders(tmp_path):
    for split in ("Training_Labeled", "Validation"):
        write_image(tmp_path / split / "happy" / "12345_v-250_a430.jpg", 1)
        write_image(tmp_path / split / "Contempt" / "777_v100_a-90.png", 2)
        write_image(tmp_path / split / "6" / "5_val=10_aro=20.jpg", 3)
    ds = open_dataset(AffectNet(), tmp_path)
    train = ds.splits["train"]
    assert _labels(train) == ["anger", "contempt", "happiness"]
    np.testing.assert_allclose(train.extras["valence"], [0.01, 0.1, -0.25])
    np.testing.assert_allclose(train.extras["arousal"], [0.02, -0.09, 0.43])
    ds7 = open_dataset(AffectNet(), tmp_path, options={"classes": 7})
    assert _labels(ds7.splits["test"]) == ["anger", "happiness"]


def test_preprocessed_without_affect_has_no_extras(tmp_path):
    for split in ("Training_Labeled", "Validation"):
        write_image(tmp_path / split / "sad" / "img_0001_0002.jpg", 1)
        write_image(tmp_path / split / "fear" / "a_v1_a2.jpg", 2)
    ds = open_dataset(AffectNet(), tmp_path, options={"classes": 7})
    train = ds.splits["train"]
    assert train.extras == {} and train.label_extras == frozenset()
    assert _labels(train) == ["fear", "sadness"]
    assert "train: valence/arousal missing for some images, so left out" in ds.notes


@pytest.mark.parametrize("stem, folder, expected", [
    ("0000000s7s-653s653", "3", (7, -0.653, 0.653)),   # ESR: the name wins over the folder
    ("0000012s0s0s-1000", "x", (0, 0.0, -1.0)),
    ("12345_v-250_a430", "happy", (1, -0.25, 0.43)),
    ("v500_a-500", "Surprised", (3, 0.5, -0.5)),
    ("Valence=-100_Arousal=200", "sadness", (2, -0.1, 0.2)),
    ("12345_-250_430", "anger", (6, math.nan, math.nan)),  # untagged numbers are not affect
    ("face_v1", "neutral", (0, math.nan, math.nan)),        # arousal missing
])
def test_parse_name(tmp_path, stem, folder, expected):
    code, v, a = parse_name(tmp_path / folder / f"{stem}.jpg")
    assert code == expected[0]
    np.testing.assert_allclose([v, a], expected[1:], atol=1e-6)


@pytest.mark.parametrize("stem, folder, problem", [
    ("photo", "bored", "class unknown: folder 'bored'"),
    ("photo", "12", "expression 12 is not an AffectNet code"),
    ("0000001s1s1500s0", "0", "outside [-1000, 1000]"),
    ("0000001s15s0s0", "0", "expression 15"),
])
def test_parse_name_errors(tmp_path, stem, folder, problem):
    with pytest.raises(DataError) as e:
        parse_name(tmp_path / folder / f"{stem}.jpg")
    assert problem in str(e.value) and str(tmp_path / folder) in str(e.value)


def test_ambiguous_official_and_preprocessed(tmp_path):
    _official(tmp_path)
    (tmp_path / "Training_Labeled").mkdir()
    (tmp_path / "Validation").mkdir()
    assert AffectNet().detect(tmp_path) == ["official", "preprocessed"]
    with pytest.raises(DataError, match="--layout"):
        open_dataset(AffectNet(), tmp_path)
    assert open_dataset(AffectNet(), tmp_path, layout="official").layout == "official"
