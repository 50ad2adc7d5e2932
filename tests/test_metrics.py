"""Every metric against values computed by hand on tiny arrays."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ferbench.metrics import (
    HIGHER_IS_BETTER, accuracy_by_ambiguity, classification_metrics, higher_is_better,
    kl_to_distribution, memorisation, noise_detection, quartiles_by_flip, rejection_curve,
    reliability, shared_class_predictions, summarise_by_flip, votes_to_distribution,
)

RESULTS_DOC = Path(__file__).resolve().parents[1] / "docs" / "results.md"

# 4 samples, 3 classes: predictions 0, 1, 0, 2 against labels 0, 1, 1, 2 (sample 2 wrong).
PROBS = np.array([[0.7, 0.2, 0.1], [0.2, 0.6, 0.2], [0.5, 0.4, 0.1], [0.1, 0.3, 0.6]])
LABELS = np.array([0, 1, 1, 2])


def test_classification_metrics_by_hand():
    m = classification_metrics(PROBS, LABELS)
    assert m["acc"] == pytest.approx(0.75)
    assert m["per_class_acc"] == pytest.approx([1.0, 0.5, 1.0])
    assert m["mean_class_acc"] == pytest.approx((1 + 0.5 + 1) / 3)
    # F1: class 0 P=1/2 R=1 -> 2/3; class 1 P=1 R=1/2 -> 2/3; class 2 -> 1.
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert m["confusion"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert all(type(v) is int for row in m["confusion"] for v in row)
    logs = math.log(0.7) + math.log(0.6) + math.log(0.4) + math.log(0.6)
    assert m["nll"] == pytest.approx(-logs / 4)
    # Brier rows: .09+.04+.01, .04+.16+.04, .25+.36+.01, .01+.09+.16
    assert m["brier"] == pytest.approx((0.14 + 0.24 + 0.62 + 0.26) / 4)


def test_ece_two_bins_by_hand():
    # Bins (0, .5] and (.5, 1]: conf .5 (wrong) alone in bin 0; .7, .6, .6 (all right) in bin 1.
    m = classification_metrics(PROBS, LABELS, n_bins=2)
    assert m["ece"] == pytest.approx(1 / 4 * abs(0 - 0.5) + 3 / 4 * abs(1 - (0.7 + 0.6 + 0.6) / 3))
    assert m["ece"] == pytest.approx(0.4)


def test_ece_all_correct_is_mean_underconfidence():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    m = classification_metrics(probs, np.array([0, 1, 0]))
    assert m["ece"] == pytest.approx((0.1 + 0.3 + 0.4) / 3)


def test_absent_class_is_left_out_of_class_averages():
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1]])
    m = classification_metrics(probs, np.array([0, 0, 1]))
    assert m["per_class_acc"] == [0.5, 1.0, None]
    assert m["mean_class_acc"] == pytest.approx(0.75)
    # Class 2 is never a label: F1 over classes 0 (P=1, R=1/2) and 1 (P=R=1).
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["confusion"] == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]


def test_nll_clips_zero_probability():
    m = classification_metrics(np.array([[1.0, 0.0]]), np.array([1]))
    assert m["nll"] == pytest.approx(-math.log(1e-12))


def test_reliability_bins():
    r = reliability(PROBS, LABELS, n_bins=4)  # bins (0,.25] (.25,.5] (.5,.75] (.75,1]
    assert r["edges"] == pytest.approx([0, 0.25, 0.5, 0.75, 1])
    assert r["count"] == [0, 1, 3, 0]
    assert r["confidence"][0] is None and r["confidence"][3] is None
    assert r["confidence"][1:3] == pytest.approx([0.5, (0.7 + 0.6 + 0.6) / 3])
    assert r["accuracy"][1:3] == pytest.approx([0.0, 1.0])


@pytest.mark.parametrize("probs, labels", [
    (np.ones((3, 2)) / 2, np.array([0, 1])),        # length mismatch
    (np.ones((2, 2)) / 2, np.array([0, 2])),        # label out of range
    (np.array([[np.nan, 1.0]]), np.array([0])),     # NaN probability
])
def test_bad_inputs_raise(probs, labels):
    with pytest.raises(ValueError):
        classification_metrics(probs, labels)


def test_kl_by_hand_skips_empty_rows():
    target = np.array([[2, 2], [3, 1], [0, 0], [np.nan, np.nan]])
    probs = np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.1], [0.9, 0.1]])
    # Row 0 matches exactly (KL 0); row 1 is (.75, .25) against (.5, .5); rows 2-3 skipped.
    expected = (0 + 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)) / 2
    assert kl_to_distribution(target, probs) == pytest.approx(expected)


def test_kl_zero_prediction_is_finite_and_no_rows_is_none():
    assert kl_to_distribution([[1, 0]], [[0.0, 1.0]]) == pytest.approx(math.log(1 / 1e-12))
    assert kl_to_distribution([[0, 0]], [[0.5, 0.5]]) is None


def test_votes_to_distribution():
    votes = np.array([
        [4, 0, 0, 0, 0, 0, 0, 1, 3, 2],   # contempt, unknown and NF dropped for a 7-class run
        [2, 6, 0, 0, 0, 0, 0, 0, 2, 0],
        [0, 0, 0, 0, 0, 0, 0, 5, 3, 2],   # only contempt: no vote for the run's classes
    ])
    d = votes_to_distribution(votes, list(range(7)))
    assert d[0] == pytest.approx([1, 0, 0, 0, 0, 0, 0])
    assert d[1] == pytest.approx([0.25, 0.75, 0, 0, 0, 0, 0])
    assert np.isnan(d[2]).all()
    # The run's own column order: happiness first, then neutral.
    swapped = votes_to_distribution(votes[:2], [1, 0])
    assert swapped == pytest.approx(np.array([[0, 1], [0.75, 0.25]]))
    assert votes_to_distribution(votes[:, :8], list(range(8)))[2] == pytest.approx([0] * 7 + [1])
    with pytest.raises(ValueError):
        votes_to_distribution(votes, [8])


def test_accuracy_by_ambiguity_tertiles():
    one, two, three = [1, 0, 0], [1, 1, 0], [1, 1, 1]   # entropies 0, ln 2, ln 3
    dist = np.array([one, one, two, two, three, three, [0, 0, 0]], dtype=float)
    labels = np.zeros(7, dtype=int)
    probs = np.array([[1, 0, 0]] * 3 + [[0, 1, 0]] * 4, dtype=float)   # right on 0, 1, 2 only
    r = accuracy_by_ambiguity(probs, labels, dist)
    # np.quantile of [0, 0, ln2, ln2, ln3, ln3] at 1/3 and 2/3 (linear interpolation).
    ln2, ln3 = math.log(2), math.log(3)
    assert r["thresholds"] == pytest.approx([2 / 3 * ln2, ln2 + (ln3 - ln2) / 3])
    assert (r["low_count"], r["mid_count"], r["high_count"]) == (2, 2, 2)
    assert (r["low_acc"], r["mid_acc"], r["high_acc"]) == (1.0, 0.5, 0.0)


def test_accuracy_by_ambiguity_without_distributions():
    r = accuracy_by_ambiguity(PROBS, LABELS, np.full((4, 3), np.nan))
    assert r["thresholds"] is None and r["low_acc"] is None and r["high_count"] == 0


def test_rejection_curve_by_hand_and_monotone():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])   # certain → uncertain
    r = rejection_curve(probs, np.array([0, 0, 1, 1]), points=4)
    assert r["coverage"] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert r["count"] == [1, 2, 3, 4]
    assert r["accuracy"] == pytest.approx([1, 1, 2 / 3, 0.5])
    assert np.all(np.diff(r["accuracy"]) <= 0)
    assert r["rejection_auc"] == pytest.approx((1 + 1 + 2 / 3 + 0.5) / 4)
    # A given uncertainty overrides 1 - max probability: reversed order, rising curve.
    r = rejection_curve(probs, np.array([0, 0, 1, 1]), uncertainty=[4, 3, 2, 1], points=4)
    assert r["accuracy"] == pytest.approx([0, 0, 1 / 3, 0.5])


def test_rejection_curve_ties_share_accuracy():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])
    r = rejection_curve(probs, np.array([0, 1, 0, 0]), uncertainty=[0, 0, 1, 1], points=4)
    # First tie group {right, wrong} gives .5 per kept sample, then two more right.
    assert r["accuracy"] == pytest.approx([0.5, 0.5, 2 / 3, 0.75])
    flat = rejection_curve(probs, np.array([0, 1, 0, 0]), uncertainty=np.zeros(4), points=4)
    assert flat["accuracy"] == pytest.approx([0.75] * 4)
    with pytest.raises(ValueError):
        rejection_curve(probs, np.array([0, 1, 0, 0]), uncertainty=[0, np.nan, 0, 0])


def test_memorisation_by_hand():
    noisy = np.array([1, 1, 0, 2, 0])
    clean = np.array([0, 1, 2, 1, 0])
    flipped = noisy != clean                   # samples 0, 2, 3
    preds = np.array([1, 1, 2, 0, 0])          # 0: noisy label; 2: clean label; 3: neither
    m = memorisation(preds, noisy, clean, flipped)
    third = pytest.approx(1 / 3)
    assert m == {"memorised": third, "corrected": third, "n_flipped": 3}
    assert memorisation(np.eye(3)[preds], noisy, clean, flipped) == m   # probabilities: arg-max
    none = memorisation(preds, clean, clean, np.zeros(5, bool))
    assert none == {"memorised": None, "corrected": None, "n_flipped": 0}
    with pytest.raises(ValueError):
        memorisation(preds, clean, clean, flipped)   # a "flip" to the same label


def test_noise_detection_auroc():
    flipped = np.array([True, True, False, False])
    assert noise_detection([0.9, 0.8, 0.1, 0.2], flipped)["auroc"] == 1.0
    assert noise_detection([0.1, 0.2, 0.9, 0.8], flipped)["auroc"] == 0.0
    # Pairs (flipped, clean): (.9,.5) (.9,.1) (.3,.1) ranked right, (.3,.5) wrong -> 3/4.
    assert noise_detection([0.9, 0.3, 0.5, 0.1], flipped)["auroc"] == pytest.approx(0.75)
    assert noise_detection([0.9, 0.3, 0.5, 0.1], np.zeros(4, bool))["auroc"] is None
    with pytest.raises(ValueError):
        noise_detection([0.9, np.nan, 0.5, 0.1], flipped)


def test_noise_detection_top_k_and_decisions():
    flipped = np.array([True, True, False, False])
    r = noise_detection([0.9, 0.3, 0.5, 0.1], flipped)   # top 2: .9 (flipped), .5 (clean)
    assert (r["at"], r["k"], r["precision"], r["recall"]) == ("top_k", 2, 0.5, 0.5)
    r = noise_detection([0.9, 0.3, 0.5, 0.1], flipped, decisions=[True, False, True, True])
    assert (r["at"], r["k"]) == ("decision", 3)
    assert r["precision"] == pytest.approx(1 / 3) and r["recall"] == pytest.approx(1 / 2)
    r = noise_detection([0.9, 0.3, 0.5, 0.1], flipped, decisions=np.zeros(4, bool))
    assert r["precision"] is None and r["recall"] == 0.0
    # Three tied top scores, one of them flipped: the single top-k slot holds 1/3 of a hit.
    r = noise_detection([1, 1, 1, 0], np.array([True, False, False, False]))
    assert r["precision"] == pytest.approx(1 / 3) and r["recall"] == pytest.approx(1 / 3)


def test_summarise_by_flip():
    s = summarise_by_flip([1.0, 2.0, 3.0, 4.0], [True, False, True, False])
    assert s == {"flipped_mean": 2.0, "clean_mean": 3.0, "n_flipped": 2, "n_clean": 2}
    assert summarise_by_flip([1.0, 2.0], [False, False])["flipped_mean"] is None


def test_quartiles_by_flip_by_hand_leave_out_values_that_are_not_there():
    flipped = np.array([True, True, True, True, True, False, False, False])
    values = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 7.0, np.nan, 9.0])
    q = quartiles_by_flip(values, flipped)
    assert q["flipped"] == {"mean": 2.0, "q25": 1.0, "q50": 2.0, "q75": 3.0}
    assert q["clean"] == {"mean": 8.0, "q25": 7.5, "q50": 8.0, "q75": 8.5}  # NaN left out
    empty = quartiles_by_flip(np.full(8, np.nan), flipped)["flipped"]
    assert empty == {"mean": None, "q25": None, "q50": None, "q75": None}
    with pytest.raises(ValueError):
        quartiles_by_flip(np.zeros((8, 2)), flipped)


def test_shared_class_predictions():
    probs = np.array([[0.2, 0.6, 0.2], [0.5, 0.0, 0.5], [0.0, 0.0, 1.0]])
    sub, shared, test_to_shared = shared_class_predictions(
        probs, ("neutral", "happiness", "surprise"), ("happiness", "contempt", "neutral"))
    assert shared == ("neutral", "happiness")
    assert sub == pytest.approx(np.array([[0.25, 0.75], [1.0, 0.0], [0.5, 0.5]]))
    assert test_to_shared.tolist() == [1, -1, 0]
    with pytest.raises(ValueError):
        shared_class_predictions(probs, ("neutral", "happiness", "surprise"), ("contempt",))


# --- which way each stored metric is better ---------------------------------------------------


def test_every_metric_key_the_results_schema_lists_has_a_direction():
    """A key documented in docs/results.md's `metrics` has its direction in ferbench.metrics."""
    schema = RESULTS_DOC.read_text()
    block = schema[schema.index("\nmetrics "):schema.index("\noracle ")]
    keys = set(re.findall(r"\b(?:test|train)_[a-z0-9_]*[a-z0-9]\b|\bparams\b|\bflops_per_image\b",
                          block))
    assert {"test_acc", "test_ece", "train_memorised", "params"} <= keys
    assert sorted(keys - set(HIGHER_IS_BETTER)) == []


def test_lower_is_better_for_errors_divergences_and_memorisation_only():
    lower = {k for k, higher in HIGHER_IS_BETTER.items() if higher is False}
    assert lower == {"test_ece", "test_nll", "test_brier", "test_kl", "train_memorised"}
    assert higher_is_better("test_acc") is True and higher_is_better("test_rejection_auc") is True
    # Not scores: a model's cost, the machine's speed, how often ensemble members disagree.
    assert higher_is_better("params") is None and higher_is_better("train_images_per_s") is None
    assert higher_is_better("test_member_disagreement") is None
    # A method's further noise scores are AUROCs too; a key ferbench does not know has none.
    assert higher_is_better("train_noise_auroc_loss") is True
    assert higher_is_better("test_some_method_extra") is None
    # The KL of a distribution a method built, to the ground truth: lower, like test_kl.
    assert higher_is_better("train_targets_kl") is False
    assert higher_is_better("test_member_acc_min") is True
    assert higher_is_better("test_member_acc_max") is True


def test_the_leaderboard_ranks_each_metric_the_way_metrics_says():
    from ferbench import leaderboard

    columns = [c for table in (leaderboard.CALIBRATION, leaderboard.NOISE, leaderboard.AMBIGUITY,
                               leaderboard.ENSEMBLE) for c in table if isinstance(c[1], str)]
    assert {"test_ece", "test_kl", "train_memorised", "train_noise_precision"} <= {
        key for _, key, _ in columns}
    for header, key, spec in columns:
        if key in ("train_noise_precision", "train_noise_recall"):
            # Higher is better, but each is at its method's own operating point: never bold.
            assert HIGHER_IS_BETTER[key] is True and spec.better == 0, header
        else:
            assert spec.better == {True: 1, False: -1, None: 0}[HIGHER_IS_BETTER[key]], header


def test_reading_the_directions_loads_neither_scipy_nor_scikit_learn():
    code = ("import sys; from ferbench.metrics import HIGHER_IS_BETTER\n"
            "heavy = sorted(m for m in ('scipy', 'sklearn', 'torch') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
