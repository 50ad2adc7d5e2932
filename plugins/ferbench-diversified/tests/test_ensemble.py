"""ESR's vote as probabilities, on hand-made branch outputs."""

from __future__ import annotations

import pytest
import torch
from ferbench_diversified.ensemble import ensemble_probs


def branches(*rows):
    return torch.tensor([rows])


def test_the_majority_class_wins_even_against_a_more_confident_minority():
    p = branches([0.5, 0.4, 0.1], [0.5, 0.4, 0.1], [0.0, 1.0, 0.0])
    vote = ensemble_probs(p, "vote")
    assert vote.argmax(1).item() == 0
    assert ensemble_probs(p, "mean").argmax(1).item() == 1     # the mean would pick class 1
    torch.testing.assert_close(vote, (torch.tensor([[2.0, 1.0, 0.0]]) + p.mean(1)) / 4)


def test_a_tied_vote_goes_to_the_larger_mean_probability():
    p = branches([0.6, 0.3, 0.1], [0.2, 0.7, 0.1])
    assert ensemble_probs(p, "vote").argmax(1).item() == 1


@pytest.mark.parametrize("rule", ["vote", "mean"])
def test_rows_sum_to_one_and_classes_with_mass_stay_above_zero(rule):
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(16, 9, 7) * 3, 2)
    out = ensemble_probs(p, rule)
    torch.testing.assert_close(out.sum(1), torch.ones(16))
    assert (out > 0).all()


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="vote, mean"):
        ensemble_probs(torch.ones(1, 2, 3) / 3, "median")
