"""How ESR's branches make one prediction.

`vote` (the code's): the class is the majority vote of the branches' argmaxes. The harness
scores probabilities, so the vote is written as p = (votes + mean branch softmax) / (N + 1):
rows sum to 1, the argmax is the vote's class (a tie broken by the mean softmax), and no
class the branches give mass to has probability 0 (a finite NLL). A ferbench choice; the
code has only the class. `mean`: the mean of the branches' softmax.
"""

from __future__ import annotations

import torch

RULES = ("vote", "mean")


def ensemble_probs(branch_probs: torch.Tensor, rule: str = "vote") -> torch.Tensor:
    """[B, N, C] branch probabilities → [B, C]."""
    mean = branch_probs.mean(1)
    if rule == "mean":
        return mean
    if rule != "vote":
        raise ValueError(f"unknown ensemble rule {rule!r} (one of {', '.join(RULES)})")
    n, c = branch_probs.shape[1], branch_probs.shape[2]
    votes = torch.nn.functional.one_hot(branch_probs.argmax(2), c).sum(1).to(mean.dtype)
    return (votes + mean) / (n + 1)
