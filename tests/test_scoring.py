"""Scoring a finished run: per-sample figures by epoch, built distributions against the ground
truth the method never saw, each ensemble member's accuracy; from hand-made numbers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ferbench.datasets.base import open_dataset
from ferbench.datasets.synthfer import SynthFER
from ferbench.engine import EngineResult
from ferbench.errors import ConfigError
from ferbench.labels import CLASSES
from ferbench.protocols import Clean, Noise, finish_view
from ferbench.scoring import score_run, train_distributions


@pytest.fixture(scope="module")
def view():
    ds = open_dataset(SynthFER(), None, None, {"n_train": 64, "n_test": 32})
    return finish_view(Noise().apply(ds, {"rate": 30, "noise_seed": 0}), {})


def result(view, per_sample=None, distributions=(), members=None, test_extras=None):
    n, k = len(view.test), len(view.classes)
    probs = np.eye(k)[view.test_labels]  # every test face right
    return EngineResult(
        model=None, history=[], test_probs=probs, test_uncertainty=np.zeros(n),
        test_members=members, test_extras=test_extras or {}, oracle=None, selected=None,
        per_sample=per_sample or {}, train_probs=None, noise_scores={}, noise_decisions=None,
        method_results={}, flops_per_image=None, params=1, wall_time_s=1.0,
        images_per_s=1.0, distributions=set(distributions))


def test_a_per_sample_figure_is_summarised_every_epoch_flipped_against_clean(view):
    flipped = view.noise.flipped.astype(float)
    # epoch 0: 1 on flipped faces, 0 on clean ones; epoch 1: the other way round
    scores = score_run(view, result(view, {"lam": [flipped, 1 - flipped]}))
    series = scores["noise_summary_epochs"]["lam"]
    assert series["epoch"] == [0, 1]
    assert series["flipped"]["mean"] == [1.0, 0.0] and series["clean"]["mean"] == [0.0, 1.0]
    assert series["flipped"]["q25"] == [1.0, 0.0] and series["clean"]["q75"] == [0.0, 1.0]
    assert series["n_flipped"] == round(0.3 * 64) and series["n_clean"] == 64 - round(0.3 * 64)
    assert scores["noise_summary"]["lam"]["flipped_mean"] == 0.0  # the last epoch, as before


def test_a_built_distribution_is_scored_against_the_withheld_ground_truth(view):
    truth = train_distributions(view)
    assert truth is not None and truth.shape == (64, len(view.classes))
    uniform = np.full_like(truth, 1 / truth.shape[1])
    scores = score_run(view, result(view, {"targets": [uniform, truth]}, {"targets"}))
    kl = scores["distributions"]["targets"]
    assert kl["kl"][1] == pytest.approx(0.0, abs=1e-6)  # equal to the ground truth
    assert kl["kl"][0] > 0.1 and kl["kl_flipped"][1] == pytest.approx(0.0, abs=1e-6)
    assert scores["metrics"]["train_targets_kl"] == kl["kl"][1]


def test_a_distribution_that_is_not_one_is_one_line_naming_the_array(view):
    bad = np.ones((64, len(view.classes)))
    with pytest.raises(ConfigError, match="method array 'targets' is not a distribution"):
        score_run(view, result(view, {"targets": [bad]}, {"targets"}))


def test_each_member_s_accuracy_is_stored(view):
    k = len(view.classes)
    right = np.eye(k)[view.test_labels]
    wrong = np.eye(k)[(view.test_labels + 1) % k]
    scores = score_run(view, result(view, members=np.stack([right, wrong, right], 1)))
    assert scores["members"]["acc"] == [1.0, 0.0, 1.0]
    m = scores["metrics"]
    assert m["test_member_acc_min"] == 0.0 and m["test_member_acc_max"] == 1.0
    assert m["test_member_acc_mean"] == pytest.approx(2 / 3)
    assert m["test_ensemble_gain"] == pytest.approx(1 - 2 / 3)


def test_prediction_extras_are_named_for_the_leaderboard(view):
    scores = score_run(view, result(view, test_extras={"branch_similarity": 0.4}))
    assert scores["metrics"]["test_branch_similarity"] == 0.4
    assert scores["prediction_extras"] == ["branch_similarity"]


def test_quartiles_of_each_group_are_the_group_s_own(view):
    flipped = view.noise.flipped
    values = np.full(len(flipped), 5.0)
    values[flipped] = np.arange(flipped.sum())  # 0 .. 18 on the 19 flipped faces
    series = score_run(view, result(view, {"rank": [values]}))["noise_summary_epochs"]["rank"]
    assert flipped.sum() == 19
    # linear interpolation between order statistics: the q-quantile of 0..18 is 18q
    assert [series["flipped"][s][0] for s in ("mean", "q25", "q50", "q75")] == [9, 4.5, 9, 13.5]
    assert [series["clean"][s][0] for s in ("mean", "q25", "q50", "q75")] == [5, 5, 5, 5]


def test_an_epoch_without_values_is_null_not_nan(view):
    """MAN says NaN for its subsets before the first division: those epochs are empty."""
    flipped = view.noise.flipped.astype(float)
    nan = np.full(len(flipped), np.nan)
    series = score_run(view, result(view, {"in_noisy": [nan, flipped]}))
    series = series["noise_summary_epochs"]["in_noisy"]
    assert series["flipped"]["mean"] == [None, 1.0] and series["clean"]["q50"] == [None, 0.0]
    assert series["epoch"] == [0, 1]


def test_kl_of_flipped_and_clean_faces_by_hand(view):
    truth = train_distributions(view)
    flipped = view.noise.flipped
    k = truth.shape[1]
    built = truth.copy()
    built[flipped] = 1 / k  # right on clean faces, uniform on flipped ones
    scores = score_run(view, result(view, {"targets": [built]}, {"targets"}))
    t = truth[flipped]
    by_hand = float(np.mean(np.sum(np.where(t > 0, t * np.log(np.where(t > 0, t, 1) * k), 0), 1)))
    series = scores["distributions"]["targets"]
    assert series["kl_clean"] == [pytest.approx(0.0, abs=1e-9)]
    assert series["kl_flipped"] == [pytest.approx(by_hand)]
    assert series["kl"] == [pytest.approx(by_hand * flipped.sum() / len(flipped))]
    assert scores["metrics"]["train_targets_kl"] == series["kl"][0]


def test_an_epoch_before_the_distributions_are_built_is_null(view):
    truth = train_distributions(view)
    scores = score_run(view, result(view, {"targets": [np.full_like(truth, np.nan), truth]},
                                    {"targets"}))
    assert scores["distributions"]["targets"]["kl"] == [None, pytest.approx(0.0, abs=1e-9)]


def test_fer_plus_votes_are_the_ground_truth_where_the_training_set_has_them(view):
    rng = np.random.default_rng(0)
    votes = rng.integers(0, 5, size=(len(view.train), 10)).astype(float)
    votes[:, 0] += 1  # every face has a vote for one of the run's classes
    train = dataclasses.replace(view.train, extras={**view.train.extras, "votes": votes})
    voted = dataclasses.replace(view, train=train)
    cols = [CLASSES.index(c) for c in view.classes]  # unknown, not-a-face, contempt dropped
    built = votes[:, cols] / votes[:, cols].sum(1, keepdims=True)
    scores = score_run(voted, result(voted, {"targets": [built]}, {"targets"}))
    assert scores["metrics"]["train_targets_kl"] == pytest.approx(0.0, abs=1e-9)


def test_a_training_set_without_ground_truth_adds_no_distribution_figure(view):
    bare = dataclasses.replace(view, train=dataclasses.replace(view.train, extras={}))
    uniform = np.full((len(view.train), len(view.classes)), 1 / len(view.classes))
    scores = score_run(bare, result(bare, {"targets": [uniform]}, {"targets"}))
    assert scores["distributions"] == {}
    assert not any(k.startswith("train_targets") for k in scores["metrics"])


def test_a_clean_run_scores_distributions_without_flipped_and_clean_parts():
    ds = open_dataset(SynthFER(), None, None, {"n_train": 64, "n_test": 32})
    clean = finish_view(Clean().apply(ds, {}), {})
    truth = train_distributions(clean)
    series = score_run(clean, result(clean, {"targets": [truth]}, {"targets"}))["distributions"]
    assert set(series["targets"]) == {"epoch", "kl"}
    assert series["targets"]["kl"] == [pytest.approx(0.0, abs=1e-9)]


@pytest.mark.parametrize("broken, why", [
    (lambda t: t[:, :-1], "shape [64, 6]"),
    (lambda t: t[:, 0], "shape [64]"),
    (lambda t: np.where(np.arange(t.shape[1]) == 0, t - 0.5, t + 0.5 / (t.shape[1] - 1)),
     "negative values"),
    (lambda t: t * 1.01, "row 0 sums to 1.01"),
    (lambda t: np.where(np.arange(len(t))[:, None] == 3, np.nan, t), "NaN or infinite values"),
])
def test_a_broken_distribution_is_one_line_naming_the_array(view, broken, why):
    truth = train_distributions(view)
    with pytest.raises(ConfigError) as e:
        score_run(view, result(view, {"targets": [truth, broken(truth)]}, {"targets"}))
    message = str(e.value)
    assert message.startswith("method array 'targets' is not a distribution: ") and why in message
    assert "at epoch 1" in message and "\n" not in message


def test_member_figures_of_a_run_without_cross_are_what_they_always_were(view):
    rng = np.random.default_rng(1)
    n, k = len(view.test), len(view.classes)
    members = rng.dirichlet(np.ones(k), size=(n, 4))
    res = result(view, members=members)
    m = score_run(view, res)["metrics"]
    before = (members.argmax(2) == view.test_labels[:, None]).mean(0)  # the formula so far
    assert m["test_member_acc_mean"] == float(before.mean())
    assert m["test_ensemble_gain"] == float(1.0 - before.mean())  # every test face right


def test_under_cross_members_are_scored_over_the_shared_classes_only(view):
    k = len(view.classes)
    keep = np.flatnonzero(view.test_labels != k - 1)  # the target lacks the last class
    crossed = dataclasses.replace(view, test=view.test.subset(keep),
                                  test_labels=view.test_labels[keep],
                                  scored_classes=tuple(range(k - 1)))
    right = np.eye(k)[crossed.test_labels]
    # most mass on the class the target lacks, the rest on the right one: right once that
    # class is dropped, as it would be for the ensemble's probabilities
    leaning = 0.4 * right + 0.6 * np.eye(k)[np.full(len(keep), k - 1)]
    scores = score_run(crossed, result(crossed, members=np.stack([leaning, right], 1)))
    assert scores["members"]["acc"] == [1.0, 1.0]
    assert scores["metrics"]["test_member_disagreement"] == 0.0


def test_a_prediction_extra_named_like_a_harness_figure_is_refused(view):
    with pytest.raises(ConfigError, match="prediction extra 'acc' is stored as test_acc"):
        score_run(view, result(view, test_extras={"acc": 0.1}))
