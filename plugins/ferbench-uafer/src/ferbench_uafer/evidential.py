"""Relation uncertainty (RUC): class scores read as Dirichlet evidence, and its losses.

The code's form (ReLU evidence, the error part of the MSE loss, no KL term) is the default;
the variance part and the expected cross-entropy (digamma) with the KL term annealed over
epochs are the standard evidential-learning forms (Sensoy et al. 2018), kept as options.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EVIDENCE = {
    "relu": F.relu,
    "softplus": F.softplus,
    "exp": lambda z: torch.exp(z.clamp(-10, 10)),  # the code's clamp keeps exp finite
}
LOSSES = ("mse_err", "mse", "digamma")


def dirichlet(logits: torch.Tensor, evidence: str = "relu"):
    """(alpha, S, p, u) of logits [B, K]: alpha = e + 1, S = Σ alpha, p = alpha / S, u = K / S."""
    e = EVIDENCE[evidence](logits.float())
    alpha = e + 1
    s = alpha.sum(1, keepdim=True)
    return alpha, s, alpha / s, logits.shape[1] / s.squeeze(1)


def evidential_loss(alpha: torch.Tensor, y: torch.Tensor, form: str = "mse_err") -> torch.Tensor:
    """Per-sample loss [B] against one-hot (or soft) targets y [B, K].

    mse_err: Σ (y − p)² (the code's: its variance term is computed, never added);
    mse: that plus Σ p(1 − p) / (S + 1); digamma: Σ y (ψ(S) − ψ(alpha)).
    """
    s = alpha.sum(1, keepdim=True)
    p = alpha / s
    if form == "digamma":
        return (y * (torch.digamma(s) - torch.digamma(alpha))).sum(1)
    err = ((y - p) ** 2).sum(1)
    if form == "mse_err":
        return err
    if form == "mse":
        return err + (alpha * (s - alpha) / (s * s * (s + 1))).sum(1)
    raise ValueError(f"unknown evidential loss {form!r}")


def kl_to_uniform(alpha: torch.Tensor) -> torch.Tensor:
    """KL(Dir(alpha) ‖ Dir(1)) per sample [B]."""
    k = alpha.shape[1]
    s = alpha.sum(1)
    return (torch.lgamma(s) - torch.lgamma(alpha).sum(1) - torch.lgamma(alpha.new_tensor(k))
            + ((alpha - 1) * (torch.digamma(alpha) - torch.digamma(s)[:, None])).sum(1))


def kl_term(alpha: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The EDL regulariser: the KL to the uniform Dirichlet with the target's evidence removed
    (alpha~ = y + (1 − y)·alpha), so only misleading evidence is penalised."""
    return kl_to_uniform(y + (1 - y) * alpha)


def annealing(epoch: int, steps: int) -> float:
    """The KL weight min(1, epoch / steps), epochs counted from 0 (the code's `step` method)."""
    return 1.0 if steps <= 0 else min(1.0, epoch / steps)
