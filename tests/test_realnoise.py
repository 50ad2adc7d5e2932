"""Protocol realnoise: FERPlus faces trained on FER2013's original labels.

One small universe of faces is written three ways, as a user has it on disk: the
FERPlus official tree (lossless PNGs, label.csv votes, fer2013new.csv), the original
fer2013.csv in the same row order, and the FER2013 image-folder export (JPEG, file
names with an unrelated number). Every test asserts the counts designed into it:

row  FER2013          face  FERPlus majority          expected
 0   neutral          A     neutral                   matched, agree
 1   happy            B     happiness                 matched, agree
 2   sad              C     neutral                   matched, neutral → sadness
 3   sad              D     neutral                   matched, neutral → sadness
 4   surprise         E     surprise                  matched, agree
 5   angry            F     anger                     matched, agree
 6   happy            G     happiness                 ambiguous (row 7 is G, labelled fear)
 7   fear             G     happiness                 ambiguous
 8   surprise         H     surprise                  matched through an agreeing duplicate
 9   surprise         H     surprise                  matched through an agreeing duplicate
10   happy            I     (no majority)             left out by FERPlus itself
11   neutral          J     (unnamed row)             not a FERPlus face
12   angry            K     sadness                   matched, sadness → anger
13   disgust          L     contempt                  matched, contempt → disgust
14-15 PublicTest, 16-18 PrivateTest: FERPlus Valid/Test faces, never matched (row 17 is
FER2013 "sad" where FERPlus says neutral: the test label stays FERPlus's).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_match import jpeg, smooth_faces

from ferbench.cli import cli
from ferbench.datasets import fer2013_match as fm
from ferbench.datasets.base import open_dataset
from ferbench.datasets.fer2013 import FER2013
from ferbench.datasets.ferplus import FERPlus
from ferbench.datasets.realnoise import RealNoise
from ferbench.errors import ConfigError, DataError
from ferbench.labels import CLASSES
from ferbench.protocols import finish_view

ix = CLASSES.index

# ---------------------------------------------------------------- the universe

VOTES = {  # ten annotators; the majority scheme keeps the first entry's class
    "neutral": [8, 1, 0, 0, 1, 0, 0, 0, 0, 0],
    "happiness": [0, 9, 1, 0, 0, 0, 0, 0, 0, 0],
    "surprise": [1, 0, 7, 0, 0, 0, 2, 0, 0, 0],
    "sadness": [3, 0, 0, 7, 0, 0, 0, 0, 0, 0],
    "anger": [0, 0, 0, 0, 8, 2, 0, 0, 0, 0],
    "contempt": [2, 0, 0, 0, 1, 0, 0, 6, 1, 0],
    "none": [0, 5, 5, 0, 0, 0, 0, 0, 0, 0],  # a tie: no majority, left out
    "unnamed": [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],
}
# (Usage, FER2013 emotion folder, face, FERPlus votes; "unnamed": a row without an image name)
ROWS = [
    ("Training", "neutral", "A", "neutral"),
    ("Training", "happy", "B", "happiness"),
    ("Training", "sad", "C", "neutral"),
    ("Training", "sad", "D", "neutral"),
    ("Training", "surprise", "E", "surprise"),
    ("Training", "angry", "F", "anger"),
    ("Training", "happy", "G", "happiness"),
    ("Training", "fear", "G", "happiness"),
    ("Training", "surprise", "H", "surprise"),
    ("Training", "surprise", "H", "surprise"),
    ("Training", "happy", "I", "none"),
    ("Training", "neutral", "J", "unnamed"),
    ("Training", "angry", "K", "sadness"),
    ("Training", "disgust", "L", "contempt"),
    ("PublicTest", "surprise", "M", "surprise"),
    ("PublicTest", "happy", "N", "happiness"),
    ("PrivateTest", "angry", "O", "anger"),
    ("PrivateTest", "sad", "P", "neutral"),
    ("PrivateTest", "fear", "Q", "none"),
]
CODE = {"angry": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4, "surprise": 5, "neutral": 6}
SPLIT = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}
# FERPlus's label.csv lists the training faces in another order than the rows.
TRAIN_LISTING = [13, 2, 7, 0, 10, 9, 4, 12, 1, 6, 3, 8, 5]

# What the match must find, per row of each FERPlus training face (row 10 is left out).
EXPECTED = {
    0: ("matched", "neutral"), 1: ("matched", "happiness"), 2: ("matched", "sadness"),
    3: ("matched", "sadness"), 4: ("matched", "surprise"), 5: ("matched", "anger"),
    6: ("ambiguous", None), 7: ("ambiguous", None), 8: ("matched", "surprise"),
    9: ("matched", "surprise"), 12: ("matched", "anger"), 13: ("matched", "disgust"),
}
FACES, MATCHED, AMBIGUOUS, DISAGREE = 12, 10, 2, 4
FLIPPED_ROWS = {2, 3, 12, 13}
PER_CLASS = {
    "neutral": {"faces": 3, "disagree": 2, "rate": 0.666667},
    "happiness": {"faces": 1, "disagree": 0, "rate": 0.0},
    "surprise": {"faces": 3, "disagree": 0, "rate": 0.0},
    "sadness": {"faces": 1, "disagree": 1, "rate": 1.0},
    "anger": {"faces": 1, "disagree": 0, "rate": 0.0},
    "disgust": {"faces": 0, "disagree": 0, "rate": None},
    "fear": {"faces": 0, "disagree": 0, "rate": None},
    "contempt": {"faces": 1, "disagree": 1, "rate": 1.0},
}


def transition(*cells):
    """8x8 counts, rows FERPlus majority, columns FER2013 label: (from, to, count)..."""
    t = np.zeros((8, 8), np.int64)
    for a, b, n in cells:
        t[ix(a), ix(b)] = n
    return t.tolist()


TRANSITION = transition(("neutral", "neutral", 1), ("neutral", "sadness", 2),
                        ("happiness", "happiness", 1), ("surprise", "surprise", 3),
                        ("sadness", "anger", 1), ("anger", "anger", 1),
                        ("contempt", "disgust", 1))
REASONS_CONTENT = {"duplicates_conflicting": 2, "duplicates_agreeing": 2, "not_found": 0}
REASONS_ROWS = {**REASONS_CONTENT, "name_not_in_fer2013new": 0, "row_pixels_differ": 0}


def name(row: int) -> str:
    return f"fer{row:07d}.png"


@dataclass
class Universe:
    ferplus: Path        # FERPlus official tree with fer2013new.csv at its root
    csv_dir: Path        # a folder holding fer2013.csv
    export: Path         # the FER2013 image-folder export
    pixels: np.ndarray   # [rows, 48, 48]: each row's face
    files: dict          # row → its JPEG in the export

    @property
    def csv(self) -> Path:
        return self.csv_dir / "fer2013.csv"

    def open_ferplus(self, layout=None):
        return open_dataset(FERPlus(), self.ferplus, layout)


def write_fer2013_csv(path: Path, pixels: np.ndarray) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        for (usage, folder, _, _), img in zip(ROWS, pixels):
            w.writerow([CODE[folder], " ".join(map(str, img.reshape(-1))), usage])
    return path


def write_new_csv(path: Path, blank=()) -> Path:
    """fer2013new.csv in fer2013.csv's row order; rows in `blank` lose their image name."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Usage", "Image name", "neutral", "happiness", "surprise", "sadness",
                    "anger", "disgust", "fear", "contempt", "unknown", "NF"])
        for row, (usage, _, _, votes) in enumerate(ROWS):
            named = votes != "unnamed" and row not in blank
            w.writerow([usage, name(row) if named else "", *VOTES[votes]])
    return path


def build_universe(root: Path, seed: int = 0) -> Universe:
    faces = sorted({face for _, _, face, _ in ROWS})
    drawn = dict(zip(faces, smooth_faces(len(faces), seed=seed)))
    pixels = np.stack([drawn[face] for _, _, face, _ in ROWS])
    # FERPlus: PNGs (lossless) and label.csv per split; the unnamed row has no image.
    fp = root / "ferplus"
    listing = {s: [] for s in SPLIT.values()}
    order = TRAIN_LISTING + [r for r in range(len(ROWS)) if r not in TRAIN_LISTING]
    for row in order:
        usage, _, _, votes = ROWS[row]
        if votes == "unnamed":
            continue
        split = SPLIT[usage]
        (fp / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[row]).save(fp / split / name(row))
        listing[split].append([name(row), "(0, 0, 48, 48)", *VOTES[votes]])
    for split, lines in listing.items():
        with open(fp / split / "label.csv", "w", newline="") as f:
            csv.writer(f).writerows(lines)
    write_new_csv(fp / "fer2013new.csv")
    # fer2013.csv, the same rows in the same order.
    (root / "fer2013-csv").mkdir()
    write_fer2013_csv(root / "fer2013-csv" / "fer2013.csv", pixels)
    # The image-folder export: JPEG, a number in the name unrelated to the row.
    ex, files = root / "fer2013", {}
    numbers = np.random.default_rng(seed + 100).choice(10 ** 6, len(ROWS), replace=False)
    for row, ((usage, folder, _, _), number) in enumerate(zip(ROWS, numbers)):
        top = "train" if usage == "Training" else "test"
        path = ex / top / folder / f"{usage}_{number}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg(pixels[row], 90))
        files[row] = path
    return Universe(fp, root / "fer2013-csv", ex, pixels, files)


@pytest.fixture
def universe(tmp_path) -> Universe:
    return build_universe(tmp_path / "u")


def row_of(sample_id: str) -> int:
    """The fer2013.csv row of a FERPlus face id (official `FER2013Train/ferNNNNNNN.png`
    or csv layout `fer2013.csv#N`)."""
    if "#" in sample_id:
        return int(sample_id.rsplit("#", 1)[1])
    return int(sample_id.rsplit("/", 1)[1][3:10])


def expected_arrays(ids, changes=None):
    """(status names, original canonical labels) for faces `ids` from EXPECTED (+ changes)."""
    exp = {**EXPECTED, **(changes or {})}
    status = [exp[row_of(i)][0] for i in ids]
    original = [-1 if exp[row_of(i)][1] is None else ix(exp[row_of(i)][1]) for i in ids]
    return status, original


def assert_as_designed(match, ids, changes=None):
    status, original = expected_arrays(ids, changes)
    assert [fm.STATUS[s] for s in match.status] == status
    assert match.original.tolist() == original
    assert match.status.dtype == np.int8 and match.original.dtype == np.int64


def touch(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10 ** 9))


# ---------------------------------------------------------------- the universe itself

def test_universe_is_what_the_table_says(universe):
    ds = universe.open_ferplus()
    train = ds.splits["train"]
    assert [row_of(i) for i in train.ids] == [r for r in TRAIN_LISTING if r != 10]
    assert sorted(row_of(i) for i in train.ids) == sorted(EXPECTED)
    # JPEG moves each face by about one grey level; distinct faces are far apart
    for row, path in universe.files.items():
        with Image.open(path) as im:
            d = np.asarray(im, np.float64) - universe.pixels[row]
        assert np.sqrt((d ** 2).mean()) < 1.5
    assert universe.files[0].name != "Training_0.jpg"
    fer = open_dataset(FER2013(), universe.export)
    assert (len(fer.splits["train"]), len(fer.splits["val"]), len(fer.splits["test"])) == (14, 2, 3)


# ---------------------------------------------------------------- content route

def test_content_route_matches_each_face_as_designed(universe):
    ds = universe.open_ferplus()
    match = fm.fer2013_labels(ds, universe.export)
    assert match.route == "content"
    assert match.source == f"{universe.export} (folders)"
    assert_as_designed(match, ds.splits["train"].ids)
    assert match.reasons == REASONS_CONTENT
    assert match.matched.sum() == MATCHED


def test_content_route_report_counts_disagreement_per_class(universe):
    ds = universe.open_ferplus()
    report = fm.fer2013_labels(ds, universe.export).report(ds.splits["train"].labels, ds.classes)
    assert {k: report[k] for k in ("route", "faces", "matched", "ambiguous", "unmatched",
                                   "disagree", "disagreement_rate")} == {
        "route": "content", "faces": FACES, "matched": MATCHED, "ambiguous": AMBIGUOUS,
        "unmatched": 0, "disagree": DISAGREE, "disagreement_rate": 0.4}
    assert report["per_class"] == PER_CLASS
    assert report["transition"] == TRANSITION
    assert report["classes"] == list(CLASSES)
    assert report["reasons"] == REASONS_CONTENT


def test_face_missing_from_the_export_is_unmatched_not_found(universe):
    universe.files[1].unlink()  # face B's JPEG
    ds = universe.open_ferplus()
    match = fm.fer2013_labels(ds, universe.export)
    assert_as_designed(match, ds.splits["train"].ids, {1: ("unmatched", None)})
    assert match.reasons == {**REASONS_CONTENT, "not_found": 1}
    report = match.report(ds.splits["train"].labels)
    assert (report["matched"], report["ambiguous"], report["unmatched"]) == (9, 2, 1)
    assert report["per_class"]["happiness"] == {"faces": 0, "disagree": 0, "rate": None}
    assert (report["disagree"], report["disagreement_rate"]) == (4, round(4 / 9, 6))


def test_deleting_one_of_a_conflicting_pair_resolves_both_faces(universe):
    universe.files[7].unlink()  # G labelled fear: only G labelled happy is left
    ds = universe.open_ferplus()
    match = fm.fer2013_labels(ds, universe.export)
    changes = {6: ("matched", "happiness"), 7: ("matched", "happiness")}
    assert_as_designed(match, ds.splits["train"].ids, changes)
    assert match.reasons == {"duplicates_conflicting": 0, "duplicates_agreeing": 2,
                             "not_found": 0}


# ---------------------------------------------------------------- rows route

def with_csv_in_ferplus_root(u: Universe) -> Universe:
    shutil.copy(u.csv, u.ferplus / "fer2013.csv")
    return u


@pytest.mark.parametrize("where", ["folder", "file", "ferplus-root", "ferplus-root-csv-layout"])
def test_rows_route_gives_the_same_labels_as_the_content_route(universe, where):
    if where.startswith("ferplus-root"):
        with_csv_in_ferplus_root(universe)
        # both FERPlus layouts are now there; the user names one
        ds = universe.open_ferplus("csv" if where.endswith("csv-layout") else "official")
        root = None
    else:
        ds = universe.open_ferplus()
        root = universe.csv_dir if where == "folder" else universe.csv
    rows = fm.fer2013_labels(ds, root)
    assert rows.route == "rows"
    expect_csv = (universe.ferplus if root is None else universe.csv_dir) / "fer2013.csv"
    assert rows.source == f"{expect_csv} (csv)"
    assert_as_designed(rows, ds.splits["train"].ids)
    assert rows.reasons == REASONS_ROWS
    if where != "ferplus-root-csv-layout":
        content = fm.fer2013_labels(universe.open_ferplus("official"), universe.export)
        np.testing.assert_array_equal(rows.status, content.status)
        np.testing.assert_array_equal(rows.original, content.original)


def test_realnoise_training_labels_are_the_same_whatever_the_route(universe):
    ds = universe.open_ferplus()
    by_rows = RealNoise().apply(ds, {"fer2013_root": str(universe.csv_dir)})
    by_content = RealNoise().apply(ds, {"fer2013_root": str(universe.export)})
    assert by_rows.record["realnoise"]["route"] == "rows"
    assert by_content.record["realnoise"]["route"] == "content"
    assert by_rows.train.ids == by_content.train.ids
    np.testing.assert_array_equal(by_rows.train_labels, by_content.train_labels)
    np.testing.assert_array_equal(by_rows.noise.flipped, by_content.noise.flipped)
    # the noise file, and so every result's noise hash, is one artefact whatever the route
    assert by_rows.noise.hash == by_content.noise.hash


@pytest.mark.parametrize("damage, reason", [("pixels", "row_pixels_differ"),
                                            ("name", "name_not_in_fer2013new")])
def test_rows_route_face_whose_row_does_not_hold_it_is_unmatched(universe, damage, reason):
    if damage == "pixels":  # row 0 now holds another face (same size, so no other change)
        pixels = universe.pixels.copy()
        pixels[0] = smooth_faces(1, seed=99)[0]
        write_fer2013_csv(universe.csv, pixels)
    else:  # row 0 has no image name in fer2013new.csv
        write_new_csv(universe.ferplus / "fer2013new.csv", blank={0})
    ds = universe.open_ferplus()
    match = fm.fer2013_labels(ds, universe.csv_dir)
    assert_as_designed(match, ds.splits["train"].ids, {0: ("unmatched", None)})
    assert match.reasons == {**REASONS_ROWS, reason: 1}
    report = match.report(ds.splits["train"].labels)
    assert (report["matched"], report["ambiguous"], report["unmatched"]) == (9, 2, 1)
    assert report["per_class"]["neutral"] == {"faces": 2, "disagree": 2, "rate": 1.0}


def test_rows_route_without_fer2013new_names_the_missing_file(universe):
    (universe.ferplus / "fer2013new.csv").unlink()
    ds = universe.open_ferplus()
    with pytest.raises(DataError, match=r"fer2013new\.csv") as err:
        fm.fer2013_labels(ds, universe.csv_dir)
    assert err.value.path == universe.ferplus / "fer2013new.csv"
    with pytest.raises(DataError, match=r"fer2013new\.csv"):
        RealNoise().apply(ds, {"fer2013_root": str(universe.csv)})


# ---------------------------------------------------------------- the protocol

def test_realnoise_trains_on_matched_faces_with_fer2013_labels(universe):
    ds = universe.open_ferplus()
    view = RealNoise().apply(ds, {"fer2013_root": str(universe.export)})
    train_rows = [row_of(i) for i in view.train.ids]
    assert train_rows == [r for r in TRAIN_LISTING if EXPECTED.get(r, ("",))[0] == "matched"]
    assert len(view.train) == MATCHED and not {6, 7} & set(train_rows)  # ambiguous left out
    assert view.family == "realnoise" and view.classes == CLASSES
    # run-class indices: for FERPlus, the canonical order
    assert view.train_labels.tolist() == [ix(EXPECTED[r][1]) for r in train_rows]
    majority = {r: ix(v) for r, (_, _, _, v) in enumerate(ROWS) if v in CLASSES}
    assert view.clean_train_labels.tolist() == [majority[r] for r in train_rows]
    assert view.flipped.tolist() == [r in FLIPPED_ROWS for r in train_rows]
    noise = view.noise
    assert noise.source == "reference" and noise.rate == 0.4
    np.testing.assert_array_equal(noise.noisy, view.train_labels)
    doc = noise.document
    assert doc["source"] == "reference" and doc["realised_rate"] == 0.4
    assert (doc["n_train"], doc["n_flipped"]) == (MATCHED, DISAGREE)
    assert doc["match"] == {"faces": FACES, "matched": MATCHED, "ambiguous": AMBIGUOUS,
                            "unmatched": 0}
    # why faces were left out depends on the route: in the result's record, not the hashed file
    assert doc["per_class"] == PER_CLASS and doc["transition"] == TRANSITION
    assert {(f["id"], f["clean"], f["noisy"]) for f in doc["flips"]} == {
        ("FER2013Train/fer0000002.png", "neutral", "sadness"),
        ("FER2013Train/fer0000003.png", "neutral", "sadness"),
        ("FER2013Train/fer0000012.png", "sadness", "anger"),
        ("FER2013Train/fer0000013.png", "contempt", "disgust")}
    record = dict(view.record["realnoise"])
    assert record.pop("source").endswith("(folders)")
    assert record == {"route": "content", "faces": FACES, "matched": MATCHED,
                      "ambiguous": AMBIGUOUS, "unmatched": 0, "reasons": REASONS_CONTENT,
                      "disagreement_rate": DISAGREE / MATCHED}
    # Valid/Test are FERPlus's own, untouched (row 17 is "sad" in FER2013, neutral here)
    assert [row_of(i) for i in view.test.ids] == [16, 17]
    assert view.test_labels.tolist() == [ix("anger"), ix("neutral")]
    assert view.val_labels.tolist() == [ix("surprise"), ix("happiness")]


def test_realnoise_withholds_the_votes_like_generated_noise(universe):
    from ferbench.context import load_split

    ds = universe.open_ferplus()
    view = finish_view(RealNoise().apply(ds, {"fer2013_root": str(universe.export)}), {})
    assert view.withhold_label_extras and view.record["label_extras_withheld"] is True
    assert view.train.label_extras == {"votes"} and len(view.train.extras["votes"]) == MATCHED
    split = load_split("train", view.train, view.train_labels, mode="L", size=48,
                       withhold=view.withhold_label_extras, show_progress=False)
    assert "votes" not in split.extras
    assert split.labels.tolist() == view.train_labels.tolist()  # FER2013's labels
    allowed = finish_view(RealNoise().apply(ds, {"fer2013_root": str(universe.export)}),
                          {"allow_label_extras": True})
    assert not allowed.withhold_label_extras


def test_half_the_faces_matched_is_enough_one_fewer_is_not(universe):
    for row in (0, 1, 2, 3):
        universe.files[row].unlink()
    view = RealNoise().apply(universe.open_ferplus(), {"fer2013_root": str(universe.export)})
    assert len(view.train) == 6  # exactly half of 12
    universe.files[4].unlink()
    with pytest.raises(DataError, match=r"only 5 of 12 FERPlus training faces match a FER2013 "
                                        r"Training image: not the same faces"):
        RealNoise().apply(universe.open_ferplus(), {"fer2013_root": str(universe.export)})


def test_realnoise_on_a_different_fer2013_is_not_the_same_faces(universe, tmp_path):
    other = build_universe(tmp_path / "other", seed=1)
    ds = universe.open_ferplus()
    with pytest.raises(DataError, match="only 0 of 12 .* not the same faces") as err:
        RealNoise().apply(ds, {"fer2013_root": str(other.export)})
    assert str(other.export) in str(err.value)


def test_data_check_against_a_different_fer2013_says_not_the_same_faces(universe, tmp_path):
    other = build_universe(tmp_path / "other", seed=1)
    report = tmp_path / "r.json"
    result = ferbench("data", "check", "ferplus", "--data-root", universe.ferplus,
                      "--fer2013-root", other.export, "--no-audit", "--report", report)
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"ferbench: error: {other.export}") and \
        line.endswith("only 0 of 12 FERPlus training faces match a FER2013 Training image: "
                      "not the same faces")
    assert not report.exists()


def test_realnoise_on_another_dataset_is_a_config_error(universe, tmp_path):
    fer = open_dataset(FER2013(), universe.export)
    with pytest.raises(ConfigError, match="runs on --dataset ferplus, not fer2013"):
        RealNoise().apply(fer, {"fer2013_root": str(universe.export)})
    with pytest.raises(ConfigError, match="not to fer2013"):
        fm.fer2013_labels(fer, universe.export)
    from ferbench.plugins import registry

    folder = open_dataset(registry().get("datasets", "imagefolder"), universe.export)
    with pytest.raises(ConfigError, match="not imagefolder"):
        RealNoise().apply(folder, {"fer2013_root": str(universe.export)})


def test_realnoise_without_a_fer2013_root_says_how_to_give_one(universe):
    ds = universe.open_ferplus()
    for params in ({}, {"fer2013_root": None}):
        with pytest.raises(ConfigError, match="pass --fer2013-root"):
            RealNoise().apply(ds, params)


def test_realnoise_with_a_missing_or_wrong_root_names_it(universe, tmp_path):
    ds = universe.open_ferplus()
    missing = tmp_path / "no-such-fer2013"
    with pytest.raises(DataError, match="FER2013 root does not exist") as err:
        RealNoise().apply(ds, {"fer2013_root": str(missing)})
    assert err.value.path == missing
    with pytest.raises(DataError, match="expected fer2013.csv or a folder"):
        RealNoise().apply(ds, {"fer2013_root": str(universe.files[0])})


# ---------------------------------------------------------------- the cache

def test_second_match_reuses_the_cache_and_a_changed_image_recomputes(universe, monkeypatch,
                                                                     isolated_cache):
    from ferbench.data.match import same_images as real

    first = fm.fer2013_labels(universe.open_ferplus(), universe.export)
    assert len(list((isolated_cache / "fer2013-match").glob("*.npz"))) == 1

    def refuse(*a, **k):
        raise AssertionError("the stored match should have been used")

    monkeypatch.setattr(fm, "same_images", refuse)
    again = fm.fer2013_labels(universe.open_ferplus(), universe.export)
    np.testing.assert_array_equal(again.status, first.status)
    np.testing.assert_array_equal(again.original, first.original)
    assert again.reasons == first.reasons and again.route == first.route

    calls = []

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(fm, "same_images", counting)
    touch(universe.files[3])  # an export JPEG: same bytes, new mtime
    again = fm.fer2013_labels(universe.open_ferplus(), universe.export)
    assert len(calls) == 1
    np.testing.assert_array_equal(again.status, first.status)
    # a FERPlus face replaced by another one: recomputed, and now unmatched
    Image.fromarray(smooth_faces(1, seed=99)[0]).save(universe.ferplus / "FER2013Train" /
                                                     name(5))
    ds = universe.open_ferplus()
    again = fm.fer2013_labels(ds, universe.export)
    assert len(calls) == 2
    assert_as_designed(again, ds.splits["train"].ids, {5: ("unmatched", None)})
    fm.fer2013_labels(universe.open_ferplus(), universe.export)
    assert len(calls) == 2


def test_rows_route_cache_follows_an_edited_fer2013new(universe):
    first = fm.fer2013_labels(universe.open_ferplus(), universe.csv_dir)
    assert_as_designed(first, universe.open_ferplus().splits["train"].ids)
    write_new_csv(universe.ferplus / "fer2013new.csv", blank={0})
    ds = universe.open_ferplus()
    again = fm.fer2013_labels(ds, universe.csv_dir)
    assert_as_designed(again, ds.splits["train"].ids, {0: ("unmatched", None)})
    assert again.reasons["name_not_in_fer2013new"] == 1


# ---------------------------------------------------------------- the command line

CONSOLE_SCRIPT = "import sys; from ferbench.cli import main; sys.exit(main())"


def ferbench(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def match_table(output: str) -> dict[str, list[float]]:
    """The per-class table after the match lines: {class: [faces, differs, (%)]}, as numbers
    (the table shows 100.0 as 100)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("FERPlus class"))
    return {line.split()[0]: [float(c) for c in line.split()[1:]]
            for line in lines[start + 2:start + 10]}


def test_data_check_prints_the_match_and_its_table(universe, tmp_path):
    report = tmp_path / "r.json"
    result = ferbench("data", "check", "ferplus", "--data-root", universe.ferplus,
                      "--fer2013-root", universe.export, "--no-audit", "--report", report)
    assert result.exit_code == 0, result.output
    assert (f"FER2013 match (content route, {universe.export} (folders)): 12 FERPlus training "
            f"faces; 10 matched (2 of them through duplicates that agree), 2 ambiguous (FER2013 "
            f"duplicates with conflicting labels), 0 unmatched") in result.stdout.splitlines()
    assert ("FER2013 label differs from the FERPlus majority on 4 of 10 matched faces "
            "(40.00 %):") in result.stdout.splitlines()
    assert match_table(result.stdout) == {  # disgust and fear: no faces, no rate
        "neutral": [3, 2, 66.7], "happiness": [1, 0, 0], "surprise": [3, 0, 0],
        "sadness": [1, 1, 100], "anger": [1, 0, 0], "disgust": [0, 0], "fear": [0, 0],
        "contempt": [1, 1, 100]}
    info = json.loads(report.read_text())["fer2013_match"]
    assert {k: info[k] for k in ("route", "faces", "matched", "ambiguous", "unmatched",
                                 "disagree", "disagreement_rate", "reasons")} == {
        "route": "content", "faces": 12, "matched": 10, "ambiguous": 2, "unmatched": 0,
        "disagree": 4, "disagreement_rate": 0.4, "reasons": REASONS_CONTENT}
    assert info["per_class"] == PER_CLASS and info["transition"] == TRANSITION


def test_data_check_rows_route_prints_the_same_counts(universe):
    result = ferbench("data", "check", "ferplus", "--data-root", universe.ferplus,
                      "--fer2013-root", universe.csv, "--no-audit")
    assert result.exit_code == 0, result.output
    assert (f"FER2013 match (rows route, {universe.csv} (csv)): 12 FERPlus training faces; "
            f"10 matched (2 of them through duplicates that agree), 2 ambiguous")\
        in result.stdout


def test_fer2013_root_with_another_dataset_is_one_line_exit_2(universe, tmp_path):
    proc = subprocess.run([sys.executable, "-c", CONSOLE_SCRIPT, "data", "check", "fer2013",
                           "--data-root", str(universe.export), "--fer2013-root",
                           str(universe.export), "--no-audit"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [("ferbench: error: --fer2013-root matches FERPlus "
                                         "faces; dataset fer2013 is not FERPlus")]
    result = ferbench("run", "--dataset", "fer2013", "--data-root", universe.export,
                      "--protocol", "realnoise", "--fer2013-root", universe.export,
                      "--out", tmp_path / "results", "--no-leaderboard")
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("ferbench: error: protocol realnoise pairs FERPlus's votes") and \
        "not fer2013" in line
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- real data

@pytest.mark.realdata
@pytest.mark.slow  # decodes the ~54k FERPlus and FER2013 training images (about 40 s)
def test_real_ferplus_matches_fer2013_export(unpacked):
    ds = open_dataset(FERPlus(), unpacked("ferplus"))
    match = fm.fer2013_labels(ds, unpacked("fer2013"))
    report = match.report(ds.splits["train"].labels, ds.classes)
    assert report["route"] == "content"
    assert {k: report[k] for k in ("faces", "matched", "ambiguous", "unmatched", "disagree")} \
        == {"faces": 25045, "matched": 24959, "ambiguous": 86, "unmatched": 0, "disagree": 8046}
    assert report["disagreement_rate"] == round(8046 / 24959, 6)
    assert f"{100 * report['disagreement_rate']:.2f}" == "32.24"


# ---------------------------------------------------------------- a run, end to end

@pytest.mark.slow  # two one-epoch training runs on the tiny universe
def test_run_realnoise_beside_noise30_reaches_the_leaderboard(universe, tmp_path):
    out = tmp_path / "results"
    result = ferbench("run", "--method", "baseline", "--dataset", "ferplus", "--data-root",
                      universe.ferplus, "--fer2013-root", universe.export, "--protocol",
                      "realnoise", "--protocol", "noise30", "--preset", "quick", "--epochs", "1",
                      "--batch-size", "4", "--out", out)
    assert result.exit_code == 0, result.output
    [path] = (out / "ferplus" / "realnoise").rglob("seed0.json")
    rec = json.loads(path.read_text())
    assert rec["protocol"]["family"] == "realnoise"
    assert rec["protocol"]["noise"]["source"] == "reference"
    assert (rec["protocol"]["noise"]["n_flipped"], rec["dataset"]["n_train"]) == (DISAGREE,
                                                                                 MATCHED)
    assert rec["protocol"]["record"]["realnoise"]["route"] == "content"
    assert rec["protocol"]["record"]["label_extras_withheld"] is True
    # noise detection and memorisation are scored against the disagreement set
    assert 0 <= rec["metrics"]["train_noise_auroc"] <= 1
    assert rec["metrics"]["train_memorised"] is not None
    stored = json.loads((out / rec["protocol"]["noise"]["file"]).read_text())
    assert stored["transition"] == TRANSITION and stored["source"] == "reference"
    board = (out / "leaderboard.md").read_text()
    header = next(line for line in board.splitlines() if line.startswith("| method"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["method", "noise30",
                                                                 "realnoise"]
    assert "real annotation disagreement: 4 of 10 training labels differ" in board
