"""Scoring a finished run: per-sample figures by epoch, built distributions against the ground
truth the method never saw, each ensemble member's accuracy; from hand-made numbers."""

from __future__ import annotations

import numpy as np
import pytest

from ferbench.datasets.base import open_dataset
from ferbench.datasets.synthfer import SynthFER
from ferbench.engine import EngineResult
from ferbench.errors import ConfigError
from ferbench.protocols import Noise, finish_view
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
    n, k = len(view.test), len(view.classes)
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
