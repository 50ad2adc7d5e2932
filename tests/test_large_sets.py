"""A million-face set: ids, annotations and result files that do not grow the process."""

from __future__ import annotations

import numpy as np
import pytest

from ferbench.datasets import open_dataset
from ferbench.datasets.samples import NumberedIds, Samples
from ferbench.datasets.synthfer import ON_DISK, SynthFER, _check, annotations
from ferbench.results import write_npz


def test_numbered_ids_read_like_the_tuple_they_stand_for():
    ids = NumberedIds("set/train/", 1_000_001)
    as_tuple = ("set/train/000000", "set/train/000001")
    assert len(ids) == 1_000_001 and ids[:2] == as_tuple and ids[-1] == "set/train/1000000"
    assert ids[1] == ids[-1_000_000] and list(ids.subset([1_000_000, 3])) == [
        "set/train/1000000", "set/train/000003"]
    assert ids.subset([5, 7]).subset([1]) == ("set/train/000007",)
    assert NumberedIds("a/", 3) == ("a/000000", "a/000001", "a/000002")
    assert NumberedIds("a/", 3) != ("a/000000", "a/000001")
    with pytest.raises(IndexError):
        ids[1_000_001]


def test_a_fingerprint_is_the_same_for_numbered_ids_and_their_tuple():
    from ferbench.datasets.samples import ImageSource

    class Blank(ImageSource):
        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

        def sizes(self):
            return [1] * self.n

    n = 70_000  # more than one hashing block
    numbered = NumberedIds("s/", n)
    fps = [Samples("d", "train", ids, Blank(n), np.zeros(n, np.int64), ("neutral",)).fingerprint
           for ids in (numbered, tuple(numbered))]
    assert fps[0] == fps[1]


def test_result_arrays_hold_the_ids_as_unicode_as_before(tmp_path):
    ids = NumberedIds("synthfer-x/train/", 70_000)
    write_npz(tmp_path / "r.npz", {"train_ids": ids, "test_ids": ("a.png", "bb.png"),
                                   "probs": np.eye(3, dtype=np.float32), "none": None})
    z = np.load(tmp_path / "r.npz", allow_pickle=True)
    assert np.array_equal(z["train_ids"], np.asarray(list(ids)))
    assert z["test_ids"].dtype == np.asarray(("a.png", "bb.png")).dtype
    assert np.array_equal(z["probs"], np.eye(3)) and z["none"].item() is None
    assert [p.name for p in tmp_path.iterdir()] == ["r.npz"]


def test_a_large_synthfer_split_keeps_its_annotations_in_files(tmp_path, monkeypatch):
    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path))
    n = ON_DISK
    ds = open_dataset(SynthFER(), None, options={"n_train": n, "n_test": 100})
    train = ds.splits["train"]
    assert isinstance(train.ids, NumberedIds)
    assert isinstance(train.extras["landmarks"], np.memmap)
    assert isinstance(ds.splits["test"].extras["landmarks"], np.ndarray)  # small: in memory
    labels, dist, marks = annotations(n, "train", _check({"n_train": n, "n_test": 100}))
    assert np.array_equal(train.labels, labels) and np.array_equal(train.extras["distribution"],
                                                                   dist)
    train.extras["landmarks"][0] = -1  # a method's copy may change; the file does not
    again = open_dataset(SynthFER(), None, options={"n_train": n, "n_test": 100})
    assert np.array_equal(again.splits["train"].extras["landmarks"], marks)
    assert train.fingerprint == again.splits["train"].fingerprint
