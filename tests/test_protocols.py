"""Protocols: generated noise, a user's noise file, cross-dataset, val_fraction, extras policy."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from conftest import write_image
from ferbench.context import load_split
from ferbench.datasets import open_dataset
from ferbench.datasets.base import Dataset
from ferbench.datasets.rafdb import RAFDB
from ferbench.datasets.samples import ArraySource, Samples
from ferbench.errors import ConfigError, DataError
from ferbench.labels import BASIC7, CLASSES
from ferbench.plugins import registry
from ferbench.protocols import (Clean, Cross, Noise, NoiseFile, document_hash, finish_view,
                                generate_noise, parse_protocol)
from ferbench.store import write_noise

RAF = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")  # codes 1..7


# --- fixtures the tests build ---------------------------------------------------------------

def _samples(labels, split="train", name="toy", prefix="img"):
    """A split of `len(labels)` 1x1 images with canonical `labels` (no files)."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    return Samples(dataset=name, split=split, ids=tuple(f"{split}/{prefix}{i:06d}.png"
                                                        for i in range(n)),
                   source=ArraySource(np.zeros((n, 1, 1), np.uint8)), labels=labels,
                   classes=BASIC7)


def _dataset(n_train, n_test=14, name="toy", prefix="img"):
    train = _samples(np.arange(n_train) % 7, "train", name, prefix)
    test = _samples(np.arange(n_test) % 7, "test", name, prefix)
    return Dataset(name=name, root=None, layout="memory", classes=BASIC7,
                   splits={"train": train, "test": test})


def _synthfer(**options):
    opts = {"n_train": 64, "n_test": 32, **options}
    return open_dataset(registry().get("datasets", "synthfer"), None, options=opts)


def _round_half_up(p, n) -> int:
    """round(P/100 · N) in exact arithmetic, halves up."""
    return int(Fraction(str(p)) * n / 100 + Fraction(1, 2))


# --- generated noise -----------------------------------------------------------------------

# (P, N): P=0, P·N/100 ending in .5 (rounds up), and plain cases either side of a half.
COUNTS = [(0, 100), (0, 7), (10, 5), (30, 5), (10, 25), (50, 3), (30, 25), (20, 7),
          (20, 8), (99, 10), (12.5, 4), (30, 1000), (10, 12271)]


@pytest.mark.parametrize("p,n", COUNTS)
def test_generated_noise_flips_exactly_round_half_up_of_p_times_n(p, n):
    ds = _dataset(n)
    view = Noise().apply(ds, {"rate": p, "noise_seed": 0})
    assert int(view.flipped.sum()) == _round_half_up(p, n)
    assert view.noise.document["n_flipped"] == _round_half_up(p, n)
    assert (view.train_labels[view.flipped] != view.clean_train_labels[view.flipped]).all()
    assert (view.train_labels[~view.flipped] == view.clean_train_labels[~view.flipped]).all()
    assert (view.test_labels == np.arange(len(view.test)) % 7).all()  # test labels untouched


@pytest.mark.parametrize("p,n", [(29, 50), (70, 45), (35, 90)])
def test_generated_noise_rounds_halves_up_where_floats_fall_short(p, n):
    labels = np.arange(n) % 7
    noisy = generate_noise(_samples(labels), labels, 7, p, 0)
    assert int((noisy != labels).sum()) == _round_half_up(p, n)


def test_flips_never_keep_the_class_and_spread_evenly_over_the_others():
    n, k = 21000, 7
    labels = np.arange(n) % k
    noisy = generate_noise(_samples(labels), labels, k, 50, 3)
    flipped = noisy != labels
    assert flipped.sum() == n // 2
    shift = (noisy[flipped] - labels[flipped]) % k
    assert shift.min() >= 1  # never to the same class
    counts = np.bincount(shift, minlength=k)[1:]
    expected = flipped.sum() / (k - 1)
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 20.5  # chi-square with 5 degrees of freedom, p = 0.001
    for c in range(k):  # and per clean class: every other class gets about a sixth
        targets = np.bincount(noisy[flipped & (labels == c)], minlength=k)
        assert targets[c] == 0
        share = np.delete(targets, c) / targets.sum()
        assert np.all(np.abs(share - 1 / 6) < 0.05)
    # the flipped samples are chosen uniformly: every class loses about half
    per_class = np.bincount(labels[flipped], minlength=k) / np.bincount(labels, minlength=k)
    assert np.all(np.abs(per_class - 0.5) < 0.05)


def test_same_fingerprint_rate_and_seed_give_identical_flips_and_document():
    a = Noise().apply(_dataset(500), {"rate": 30.0, "noise_seed": 4})
    b = Noise().apply(_dataset(500), {"rate": 30, "noise_seed": 4})  # a fresh, equal dataset
    assert a.train.fingerprint == b.train.fingerprint
    assert (a.train_labels == b.train_labels).all()
    assert json.dumps(a.noise.document, sort_keys=True) == \
        json.dumps(b.noise.document, sort_keys=True)
    assert a.noise.hash == b.noise.hash == document_hash(b.noise.document)


def test_noise_seed_and_fingerprint_change_the_flips():
    base = Noise().apply(_dataset(500), {"rate": 30.0, "noise_seed": 0})
    other_seed = Noise().apply(_dataset(500), {"rate": 30.0, "noise_seed": 1})
    other_data = Noise().apply(_dataset(500, prefix="other"), {"rate": 30.0, "noise_seed": 0})
    assert other_data.train.fingerprint != base.train.fingerprint
    for other in (other_seed, other_data):
        assert not np.array_equal(other.flipped, base.flipped)
        assert other.noise.hash != base.noise.hash
    assert base.noise.document["noise_seed"] == 0 and other_seed.noise.document["noise_seed"] == 1


def test_noise_document_reports_realised_rate_transitions_and_flips_by_id():
    view = Noise().apply(_dataset(70), {"rate": 20, "noise_seed": 0})
    doc = view.noise.document
    clean, noisy = view.clean_train_labels, view.train_labels
    assert doc["protocol"] == "noise20" and doc["source"] == "generated" and doc["rate"] == 20
    assert doc["fingerprint"] == view.train.fingerprint and doc["classes"] == list(BASIC7)
    assert doc["n_train"] == 70 and doc["n_flipped"] == 14
    assert doc["realised_rate"] == pytest.approx(14 / 70)
    assert view.noise.rate == pytest.approx(0.2)
    expected = np.zeros((7, 7), int)
    for c, y in zip(clean, noisy):
        expected[c, y] += 1
    assert doc["transition"] == expected.tolist()  # rows clean, columns noisy, diagonal kept
    assert np.trace(np.array(doc["transition"])) == 70 - 14
    flips = {f["id"]: (f["clean"], f["noisy"]) for f in doc["flips"]}
    assert flips == {view.train.ids[i]: (BASIC7[clean[i]], BASIC7[noisy[i]])
                     for i in np.flatnonzero(view.flipped)}


def test_noise_file_written_by_a_run_is_byte_identical_across_runs(tmp_path):
    ds = _synthfer()
    paths = []
    for out in ("a", "b"):
        view = finish_view(Noise().apply(ds, {"rate": 30.0, "noise_seed": 0}), {})
        info = write_noise(tmp_path / out, ds.name, view)
        paths.append(tmp_path / out / info["file"])
        assert info["hash"] == view.noise.hash and info["n_flipped"] == round(0.3 * 64)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].name == f"noise30-{view.noise.hash}.json"


def test_noise_hash_is_the_same_in_runs_with_different_training_seeds(tmp_path):
    from click.testing import CliRunner

    from ferbench.cli import cli

    out = tmp_path / "results"
    res = CliRunner().invoke(cli, ["run", "--method", "baseline", "--protocol", "noise30",
                                   "-o", "n_train=64", "-o", "n_test=32", "--epochs", "1",
                                   "--batch-size", "16", "--seeds", "0,1", "--no-leaderboard",
                                   "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    records = [json.loads(p.read_text()) for p in sorted(out.rglob("seed*.json"))]
    assert [r["key"]["seed"] for r in records] == [0, 1]
    noise = [r["protocol"]["noise"] for r in records]
    assert noise[0] == noise[1] and noise[0]["hash"]
    expected = Noise().apply(_synthfer(), {"rate": 30.0, "noise_seed": 0}).noise.hash
    assert noise[0]["hash"] == expected  # what a method or seed does never changes the noise


def test_noise_rate_outside_0_100_is_a_config_error():
    for rate in (100, 150, -5):
        with pytest.raises(ConfigError, match="outside"):
            Noise().apply(_dataset(20), {"rate": rate})


def test_protocol_short_forms():
    fams = {name: p.obj for name, p in registry().protocols.items()}
    assert parse_protocol("noise30", fams) == ("noise", {"rate": 30.0})
    assert parse_protocol("noise12.5", fams) == ("noise", {"rate": 12.5})
    assert parse_protocol("clean", fams) == ("clean", {})
    assert parse_protocol("noise_file=/x/noise01.txt", fams) == \
        ("noise_file", {"path": "/x/noise01.txt"})
    assert parse_protocol("cross=ckplus", fams) == ("cross", {"target": "ckplus"})
    with pytest.raises(ConfigError, match="did you mean 'noise30'"):
        parse_protocol("nosie30", fams)


# --- a user's noise file (RAF-DB official layout) --------------------------------------------

def _raf_official(root: Path):
    """14 train images (two of each RAF code) and 7 test images: [(name, code)] of train."""
    train = [(f"train_{i + 1:05d}.jpg", c) for i, c in enumerate(c for c in range(1, 8)
                                                                  for _ in range(2))]
    test = [(f"test_{i + 1:04d}.jpg", c) for i, c in enumerate(range(1, 8))]
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text(
        "".join(f"{n} {c}\n" for n, c in train + test))
    for i, (n, _) in enumerate(train + test):
        write_image(root / "Image" / "aligned" / n.replace(".jpg", "_aligned.jpg"), i, size=16,
                    mode="RGB")
    return train


@pytest.fixture
def raf(tmp_path):
    train = _raf_official(tmp_path / "raf")
    return open_dataset(RAFDB(), tmp_path / "raf"), train


def _noise_lines(train, changes: dict[str, int]):
    return "".join(f"{n} {changes.get(n, c)}\n" for n, c in train)


def test_noise_file_flips_are_measured_against_the_clean_labels(raf, tmp_path):
    ds, train = raf
    # Three rows carry another RAF code; every other row repeats its clean code.
    changes = {"train_00001.jpg": 3, "train_00004.jpg": 7, "train_00014.jpg": 1}
    path = tmp_path / "mynoise.txt"
    path.write_text(_noise_lines(train, changes))
    view = finish_view(NoiseFile().apply(ds, {"path": str(path)}), {"path": str(path)})
    assert view.id == "noisefile:mynoise" and view.family == "noise_file"
    ids = [i.rsplit("/", 1)[-1].replace("_aligned", "") for i in view.train.ids]
    flipped = {ids[i] for i in np.flatnonzero(view.flipped)}
    assert flipped == set(changes)
    for name, code in changes.items():
        i = ids.index(name)
        assert view.classes[view.train_labels[i]] == RAF[code - 1]
        assert view.classes[view.clean_train_labels[i]] == RAF[dict(train)[name] - 1]
    assert view.noise.rate == pytest.approx(3 / 14)
    doc = view.noise.document
    assert doc["source"] == "file" and doc["file"] == "mynoise.txt"
    assert doc["n_flipped"] == 3 and doc["realised_rate"] == pytest.approx(3 / 14, abs=1e-6)
    t = np.array(doc["transition"])
    assert t.sum() == 14 and np.trace(t) == 11
    assert t[BASIC7.index("surprise"), BASIC7.index("disgust")] == 1  # train_00001: 1 → 3
    assert view.withhold_label_extras  # a noise file is noise: label extras withheld
    assert view.noise.hash == document_hash(doc)


def test_noise_file_with_other_content_has_another_hash(raf, tmp_path):
    ds, train = raf
    a, b = tmp_path / "a" / "noise.txt", tmp_path / "b" / "noise.txt"
    a.parent.mkdir(), b.parent.mkdir()
    a.write_text(_noise_lines(train, {"train_00001.jpg": 3}))
    b.write_text(_noise_lines(train, {"train_00001.jpg": 4}))
    va = NoiseFile().apply(ds, {"path": str(a)})
    vb = NoiseFile().apply(ds, {"path": str(b)})
    assert va.id == vb.id == "noisefile:noise"
    assert va.noise.hash != vb.noise.hash


@pytest.mark.parametrize("lines,line,message", [
    (["train_00001.jpg 3", "train_09999.jpg 3"], 2, "unknown image name train_09999.jpg"),
    (["train_00001.jpg 3", "train_00002.jpg 1", "train_00001.jpg 2"], 3, "duplicate"),
    (["train_00001.jpg 3", "test_0001.jpg 3"], 2, "test image"),
    (["train_00001.jpg 9"], 1, "label '9'"),
    (["train_00001.jpg 0"], 1, "label '0'"),
    (["train_00001.jpg 3", "train_00002.jpg"], 2, "expected 'name label'"),
    (["train_00001.jpg 3 extra"], 1, "expected 'name label'"),
])
def test_noise_file_errors_name_file_and_line(raf, tmp_path, lines, line, message):
    ds, _ = raf
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message) as e:
        NoiseFile().apply(ds, {"path": str(path)})
    assert str(e.value).startswith(f"{path}:{line}: ")


def test_a_file_name_two_training_images_share_must_be_given_as_a_path(tmp_path):
    from ferbench.datasets.imagefolder import ImageFolder

    for i, (split, cls) in enumerate([("train", "angry"), ("train", "happy"),
                                      ("test", "angry"), ("test", "happy")]):
        write_image(tmp_path / "faces" / split / cls / ("x.png" if split == "train"
                                                         else f"t{i}.png"), i)
    ds = open_dataset(ImageFolder(), tmp_path / "faces")
    bare, full = tmp_path / "bare.txt", tmp_path / "full.txt"
    bare.write_text("x.png happiness\n")
    with pytest.raises(DataError, match=r"x.png names 2 training images \(one file name in "
                                        r"several folders\): give its path relative to the "
                                        r"data root") as e:
        NoiseFile().apply(ds, {"path": str(bare)})
    assert str(e.value).startswith(f"{bare}:1: ")
    full.write_text("train/angry/x.png happiness\ntrain/happy/x.png happiness\n")
    view = NoiseFile().apply(ds, {"path": str(full)})
    assert int(view.noise.flipped.sum()) == 1


def test_missing_or_empty_noise_file_is_a_data_error(raf, tmp_path):
    ds, _ = raf
    with pytest.raises(DataError, match="does not exist") as e:
        NoiseFile().apply(ds, {"path": str(tmp_path / "nope.txt")})
    assert str(tmp_path / "nope.txt") in str(e.value)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no images"):
        NoiseFile().apply(ds, {"path": str(empty)})


# --- cross-dataset -------------------------------------------------------------------------

FOLDERS = {"neutral": "neutral", "happiness": "happy", "surprise": "surprise",
           "sadness": "sad", "anger": "angry", "disgust": "disgust", "fear": "fear"}


def _imagefolder(root: Path, classes, n_train=2, n_test=1, splits=True, seed=0):
    for c in classes:
        parts = {"train": n_train, "test": n_test} if splits else {"": n_test}
        for part, n in parts.items():
            for i in range(n):
                seed += 1
                write_image(root / part / FOLDERS.get(c, c) / f"{c}{i}.png", seed, size=16)
    return root


def _open_target(roots):
    return lambda name, root: open_dataset(registry().get("datasets", name), roots[root])


def test_cross_scores_shared_classes_and_drops_other_test_samples(tmp_path):
    full = _imagefolder(tmp_path / "full", BASIC7, n_test=2)
    sub = _imagefolder(tmp_path / "sub", ["happiness", "sadness", "anger"], seed=100)
    roots = {"full": full, "sub": sub}
    ds_sub = open_dataset(registry().get("datasets", "imagefolder"), sub)
    view = Cross().apply(ds_sub, {"target": "imagefolder", "target_root": "full"},
                         open_target=_open_target(roots))
    assert view.id == "cross-imagefolder"
    assert view.classes == ("happiness", "sadness", "anger")
    assert view.scored_classes == (0, 1, 2)
    assert len(view.test) == 6  # 2 per shared class; 8 test images of other classes dropped
    assert sorted(CLASSES[c] for c in set(view.test.labels.tolist())) == \
        ["anger", "happiness", "sadness"]
    assert [view.classes[y] for y in view.test_labels] == \
        [CLASSES[c] for c in view.test.labels]
    assert all(i.startswith("test/") for i in view.test.ids)
    rec = view.record["cross"]
    assert rec["target"] == "imagefolder" and rec["shared_classes"] == ["happiness", "sadness",
                                                                        "anger"]
    assert rec["target_fingerprint"] == view.test.fingerprint
    assert len(view.train) == 6 and view.noise is None  # trained on clean labels


def test_cross_from_the_larger_label_space_keeps_every_target_sample(tmp_path):
    full = _imagefolder(tmp_path / "full", BASIC7)
    sub = _imagefolder(tmp_path / "sub", ["happiness", "sadness"], n_test=3, seed=100)
    ds_full = open_dataset(registry().get("datasets", "imagefolder"), full)
    view = Cross().apply(ds_full, {"target": "imagefolder", "target_root": "sub"},
                         open_target=_open_target({"sub": sub}))
    assert view.classes == BASIC7
    assert view.scored_classes == (BASIC7.index("happiness"), BASIC7.index("sadness"))
    assert len(view.test) == 6
    assert set(view.test_labels.tolist()) == {1, 3}


def test_cross_on_a_small_lab_set_tests_on_all_of_it(tmp_path):
    full = _imagefolder(tmp_path / "full", BASIC7)
    lab = _imagefolder(tmp_path / "lab", ["happiness", "fear"], n_test=2, splits=False, seed=50)
    ds = open_dataset(registry().get("datasets", "imagefolder"), full)
    view = Cross().apply(ds, {"target": "imagefolder", "target_root": "lab"},
                         open_target=_open_target({"lab": lab}))
    assert view.record["cross"]["target_split"] == "all" and len(view.test) == 4


def test_cross_records_how_many_target_test_samples_were_dropped(tmp_path):
    full = _imagefolder(tmp_path / "full", BASIC7, n_test=2)
    sub = _imagefolder(tmp_path / "sub", ["happiness", "sadness", "anger"], seed=100)
    ds_sub = open_dataset(registry().get("datasets", "imagefolder"), sub)
    view = Cross().apply(ds_sub, {"target": "imagefolder", "target_root": "full"},
                         open_target=_open_target({"full": full}))
    assert view.record["cross"]["dropped_test_samples"] == 8


@pytest.mark.parametrize("a,b", [("fer2013", "ferplus"), ("ferplus", "fer2013")])
def test_cross_refuses_fer2013_with_ferplus_either_way(a, b):
    ds = Dataset(name=a, root=None, layout="csv", classes=BASIC7, splits={})

    def never(name, root):
        raise AssertionError("the target is refused before it is opened")

    with pytest.raises(ConfigError, match="same faces"):
        Cross().apply(ds, {"target": b}, open_target=never)


def test_cross_onto_the_training_dataset_itself_is_refused_but_another_folder_is_not(tmp_path):
    src = _imagefolder(tmp_path / "src", ["happiness", "sadness"])
    other = _imagefolder(tmp_path / "other", ["happiness", "sadness"], seed=50)
    ds = open_dataset(registry().get("datasets", "imagefolder"), src)
    opener = _open_target({"src": src, "same": tmp_path / "src" / ".." / "src", "other": other})
    for root in ("src", "same"):
        with pytest.raises(ConfigError, match="the target is the training dataset itself"):
            Cross().apply(ds, {"target": "imagefolder", "target_root": root}, open_target=opener)
    view = Cross().apply(ds, {"target": "imagefolder", "target_root": "other"},
                         open_target=opener)
    assert len(view.test) == 2


def test_cross_without_a_target_or_a_shared_class_is_a_config_error(tmp_path):
    src = _imagefolder(tmp_path / "src", ["happiness", "sadness"])
    other = tmp_path / "other"
    for i in range(2):
        write_image(other / "contempt" / f"c{i}.png", 70 + i, size=16)
    ds = open_dataset(registry().get("datasets", "imagefolder"), src)
    with pytest.raises(ConfigError, match="needs a target"):
        Cross().apply(ds, {"target": None}, open_target=_open_target({}))
    with pytest.raises(ConfigError, match="share no class"):
        Cross().apply(ds, {"target": "imagefolder", "target_root": "other"},
                      open_target=_open_target({"other": other}))


# --- val_fraction --------------------------------------------------------------------------

def test_val_fraction_holds_out_a_stratified_deterministic_share_of_noisy_labels():
    ds = _dataset(700)
    views = [finish_view(Noise().apply(ds, {"rate": 30, "noise_seed": 0}),
                         {"val_fraction": 0.2}) for _ in range(2)]
    view = views[0]
    full = Noise().apply(ds, {"rate": 30, "noise_seed": 0})
    assert views[1].val.ids == view.val.ids  # deterministic
    train_ids, val_ids = set(view.train.ids), set(view.val.ids)
    assert not train_ids & val_ids and train_ids | val_ids == set(full.train.ids)
    # stratified over the labels the run sees (the noisy ones): a fifth of each class
    by_id = dict(zip(full.train.ids, full.train_labels))
    counts = np.bincount(full.train_labels, minlength=7)
    held = np.bincount(view.val_labels, minlength=7)
    assert held.tolist() == [_round_half_up(20, c) for c in counts]
    assert [by_id[i] for i in view.val.ids] == view.val_labels.tolist()  # noisy labels kept
    flipped_ids = {full.train.ids[i] for i in np.flatnonzero(full.flipped)}
    assert view.record["val_flipped"] == len(val_ids & flipped_ids) > 0
    # the noise record follows the smaller training set
    assert len(view.flipped) == len(view.train)
    assert (view.flipped == (view.train_labels != view.clean_train_labels)).all()
    assert {view.train.ids[i] for i in np.flatnonzero(view.flipped)} == \
        flipped_ids - val_ids
    assert view.record["val_fraction"] == 0.2


@pytest.mark.parametrize("frac", [
    1.0, 1.5,
    -0.2,
])
def test_val_fraction_out_of_range_is_a_config_error(frac):
    with pytest.raises(ConfigError, match="val_fraction"):
        finish_view(Clean()._base_view(_dataset(70), {}), {"val_fraction": frac})


def test_each_run_of_one_view_gets_the_same_holdout():
    view = Noise().apply(_dataset(700), {"rate": 30, "noise_seed": 0})
    first = finish_view(view, {"val_fraction": 0.2})
    second = finish_view(view, {"val_fraction": 0.2})
    assert len(view.noise.flipped) == 700
    assert (second.flipped == first.flipped).all()


# --- label-carrying extras -----------------------------------------------------------------

def test_label_carrying_extras_are_withheld_under_noise_unless_allowed():
    ds = _synthfer()
    assert ds.splits["train"].label_extras == {"distribution"}
    noisy = finish_view(Noise().apply(ds, {"rate": 30}), {})
    allowed = finish_view(Noise().apply(ds, {"rate": 30}), {"allow_label_extras": True})
    clean = finish_view(Clean()._base_view(ds, {}), {})
    assert noisy.withhold_label_extras and noisy.record["label_extras_withheld"] is True
    assert not allowed.withhold_label_extras and not clean.withhold_label_extras
    split = load_split("train", noisy.train, noisy.train_labels, mode="L", size=48,
                       withhold=noisy.withhold_label_extras, show_progress=False)
    assert set(split.extras) == {"landmarks"}  # image-derived extras always reach the method
    assert (split.labels.numpy() == noisy.train_labels).all()  # the noisy labels
    split = load_split("train", allowed.train, allowed.train_labels, mode="L", size=48,
                       withhold=allowed.withhold_label_extras, show_progress=False)
    assert set(split.extras) == {"distribution", "landmarks"}
    # still there for the harness's evaluation
    assert "distribution" in noisy.test.extras and "distribution" in noisy.train.extras
