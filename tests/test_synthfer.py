"""synthfer: determinism, ground-truth distributions, landmarks, options, and learnability."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import benchmark_script

from ferbench.datasets import open_dataset
from ferbench.datasets.synthfer import LANDMARKS, SynthFER, generate
from ferbench.errors import ConfigError
from ferbench.labels import BASIC7, CLASSES

SMALL = {"n_train": 300, "n_test": 100}


def synth(**options):
    return open_dataset(SynthFER(), None, options={**SMALL, **options})


def images(samples) -> np.ndarray:
    return np.stack([samples.source.read(i) for i in range(len(samples))])


def test_defaults_open_without_root():
    ds = open_dataset(SynthFER(), None)
    assert ds.layout == "generated" and ds.root is None and ds.classes == BASIC7
    assert set(ds.splits) == {"train", "test"} and ds.val is None
    train = ds.split("train")
    assert len(train) == SynthFER.options["n_train"]
    assert len(ds.split("test")) == SynthFER.options["n_test"]
    assert train.source.read(0).shape == (48, 48) and train.source.read(0).dtype == np.uint8
    assert train.extras["distribution"].shape == (len(train), 7)
    assert train.extras["distribution"].dtype == np.float32
    assert train.extras["landmarks"].shape == (len(train), len(LANDMARKS), 2)
    assert train.label_extras == frozenset({"distribution"})  # landmarks are image-derived
    assert train.ids[123].endswith("/train/000123") and train.ids[0].startswith("synthfer-")


def test_same_options_give_identical_splits():
    a, b = synth(n_val=50), synth(n_val=50)
    for split in ("train", "val", "test"):
        sa, sb = a.split(split), b.split(split)
        assert sa.ids == sb.ids and sa.fingerprint == sb.fingerprint
        assert images(sa).tobytes() == images(sb).tobytes()
        assert np.array_equal(sa.labels, sb.labels)
        for name in ("distribution", "landmarks"):
            assert sa.extras[name].tobytes() == sb.extras[name].tobytes()


def test_splits_and_seeds_differ():
    a, b = synth(), synth(seed=1)
    assert not np.array_equal(images(a.split("train")), images(b.split("train")))
    assert not np.array_equal(a.split("train").labels, b.split("train").labels)
    assert a.split("train").fingerprint != b.split("train").fingerprint
    assert a.split("train").source.stamp() != b.split("train").source.stamp()
    test = a.split("test")
    assert not np.array_equal(images(a.split("train"))[:100], images(test))


def test_larger_split_extends_smaller_one():
    """Chunks are seeded by position, so n_train=300 is the prefix of n_train=600."""
    small, large = synth().split("train"), synth(n_train=600).split("train")
    assert np.array_equal(images(small), images(large)[:300])
    assert np.array_equal(small.labels, large.labels[:300])
    assert small.ids == large.ids[:300]


def test_every_drawing_option_changes_the_fingerprint():
    base = synth().split("train").fingerprint
    for change in ({"size": 32}, {"contempt": True}, {"alpha": 0.3}, {"concentration": 3.0}):
        assert synth(**change).split("train").fingerprint != base, change


def test_distributions_are_the_labels_source():
    _, labels, dist, _ = generate(4000, "train", SynthFER().options | {"contempt": False})
    assert (dist >= 0).all()
    np.testing.assert_allclose(dist.sum(1), 1, atol=1e-5)
    assert set(np.unique(labels)) == set(range(7))
    counts = np.bincount(labels, minlength=7)
    assert counts.min() > 0.6 * counts.mean()  # dominant classes are drawn uniformly
    # Drawn from the distribution: P(label = mode) = E[max p], and E[p_label] = E[sum p²].
    agree = (labels == dist.argmax(1)).mean()
    assert abs(agree - dist.max(1).mean()) < 0.03
    assert abs(dist[np.arange(len(labels)), labels].mean() - (dist**2).sum(1).mean()) < 0.03
    assert 0.7 < agree < 0.9  # ambiguous, but the mode still dominates


def test_concentration_controls_ambiguity():
    opts = SynthFER().options
    peak = {c: generate(1000, "train", opts | {"concentration": c})[2].max(1).mean()
            for c in (1.0, 5.0, 20.0)}
    assert peak[20.0] > 0.9 and peak[20.0] > peak[5.0] + 0.05 > peak[1.0] + 0.1


def test_landmarks_lie_inside_and_on_the_drawing():
    ds = synth()
    train = ds.split("train")
    marks, imgs = train.extras["landmarks"], images(train).astype(np.float64)
    assert marks.dtype == np.float32 and marks.shape == (300, len(LANDMARKS), 2)
    assert (marks >= 0).all() and (marks <= 47).all()
    on_border = ((marks == 0) | (marks == 47)).any(-1).mean()
    assert on_border < 0.01  # the clip to the image rarely bites
    # Eye centres are dark on the face: darker than the face point halfway to the nose.
    xy = np.rint(marks).astype(int)
    rows = np.arange(len(imgs))[:, None]
    eyes = imgs[rows, xy[:, :2, 1], xy[:, :2, 0]].mean()
    cheek_xy = np.rint((marks[:, :2] + marks[:, 6:7]) / 2).astype(int)
    cheeks = imgs[rows, cheek_xy[..., 1], cheek_xy[..., 0]].mean()
    assert eyes < cheeks - 10


def test_size_option_scales_the_same_faces():
    small, large = synth(), synth(size="96")  # strings come from the command line
    s, big = small.split("train"), large.split("train")
    assert big.source.read(0).shape == (96, 96)
    assert np.array_equal(s.labels, big.labels)  # pose and features do not depend on size
    np.testing.assert_array_equal(s.extras["distribution"], big.extras["distribution"])
    m48, m96 = s.extras["landmarks"], big.extras["landmarks"]
    inside = ((m48 > 0) & (m48 < 47)).all(-1) & ((m96 > 0) & (m96 < 95)).all(-1)
    np.testing.assert_allclose(m96[inside], 2 * m48[inside] + 0.5, atol=1e-3)


def test_contempt_adds_an_eighth_class_with_an_asymmetric_mouth():
    ds = synth(contempt=True, n_train=2000)
    train = ds.split("train")
    assert ds.classes == CLASSES and train.extras["distribution"].shape == (2000, 8)
    assert 7 in set(train.labels)
    # Tilt of the mouth-corner line against the eye line: contempt lifts the right corner.
    m = train.extras["landmarks"].astype(np.float64)
    eye, mouth = m[:, 1] - m[:, 0], m[:, 8] - m[:, 7]
    tilt = np.arctan2(mouth[:, 1], mouth[:, 0]) - np.arctan2(eye[:, 1], eye[:, 0])
    mode = train.extras["distribution"].argmax(1)
    assert tilt[mode == 7].mean() < tilt[mode != 7].mean() - 0.1


def test_validation_split_on_request():
    ds = synth(n_val=40)
    assert ds.val == "val" and len(ds.split("val")) == 40
    assert ds.split("val").ids[0].split("/")[1] == "val"


@pytest.mark.parametrize("bad", [{"size": 8}, {"n_test": 0}, {"alpha": 0.0}, {"seed": -1},
                                 {"size": "big"}])
def test_bad_options_are_config_errors(bad):
    with pytest.raises(ConfigError):
        synth(**bad)


def test_generation_speed(benchmark):
    """Generation throughput (pytest-benchmark; the figure with a CPU pinned is in benchmarks/)."""
    out = benchmark(generate, 512, "train", SynthFER().options)
    assert out[0].shape == (512, 48, 48)


def _bench_module():
    return benchmark_script("bench_synthfer")


@pytest.mark.slow
def test_small_cnn_learns_but_does_not_solve_it():
    """A short version of the two-minute benchmark: above chance by a margin, below perfect.

    It trains for a fixed number of epochs rather than seconds, so a busy machine changes
    how long it takes but not the figure.
    """
    cnn = _bench_module().train_cnn(budget_s=None, epochs=8, n_train=2000, n_test=500)
    assert 0.30 < cnn["test_acc"] < 0.95, cnn
