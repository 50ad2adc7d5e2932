"""The method contract: what a method plugin implements and the values it exchanges with the engine.

Three members are required (`build`, `training_step`, `predict`); everything
else has a default here, so a minimal method is a screenful. DESIGN.md
section 4 is the full contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from .config.settings import check_settings, setting
from .errors import ConfigError


@dataclass
class MethodConfig:
    """Keys every method shares, so the global flags reach them.

    A method's own `Config` subclasses this. `lr` is the main parameter group's
    base rate; other groups are multipliers of it unless the method says otherwise.
    Keys declared with `setting(...)` have their choices or range checked when the
    config is built, in the method's own Config too.
    """

    backbone: str = "ferbench_resnet_tiny"
    weights: str | None = None
    image_size: int = setting(48, low=8)
    epochs: int = setting(8, low=0)
    batch_size: int = setting(64, low=1)
    lr: float = setting(1e-3, low=0.0)
    weight_decay: float = setting(5e-4, low=0.0)
    optimizer: str = setting("adamw", choices=("adamw", "sgd", "adam"))
    momentum: float = setting(0.9, low=0.0, high=1.0)
    scheduler: str = setting("onecycle", choices=("onecycle", "cosine", "step", "none"))
    warmup: float = setting(0.15, low=0.0, high=1.0)  # share of the schedule warming up (onecycle)
    label_smoothing: float = setting(0.0, low=0.0, high=1.0)
    tta_flip: bool = False
    views: list = field(default_factory=lambda: ["weak"])

    def __post_init__(self):
        # `KEY=VALUE` overrides bypass the flags' range checks: refuse here, before any run.
        check_settings(self)
        if not self.views:
            raise ConfigError("views=[]: a method trains on at least one augmentation view")


@dataclass
class Prediction:
    """What `predict` returns for a batch of B images over K classes."""

    probs: torch.Tensor                          # [B, K], rows sum to 1
    uncertainty: torch.Tensor | None = None      # [B]; default 1 - max probability
    members: torch.Tensor | None = None          # [B, M, K]: branches / networks of an ensemble
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # averaged into the results


@dataclass
class OptimizerSpec:
    """One optimiser with its optional scheduler and gradient clipping."""

    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    interval: str = "step"                       # "step" or "epoch"
    clip_grad_norm: float | None = None


@dataclass(frozen=True)
class Phase:
    """A stage of training (ESR adds a branch per phase); `epochs` of the run's total."""

    name: str
    epochs: int


def split_epochs(total: int, fractions) -> list[int]:
    """Divide `total` epochs by `fractions` without ever rounding a stage with a share away."""
    fractions = [float(f) for f in fractions]
    s = sum(fractions)
    raw = [total * f / s for f in fractions]
    out = [max(1 if f > 0 and total >= len(fractions) else 0, int(math.floor(r))) for r, f in
           zip(raw, fractions)]
    while sum(out) < total:  # give leftovers to the largest remainders
        i = max(range(len(raw)), key=lambda j: raw[j] - out[j])
        out[i] += 1
    while sum(out) > total:
        i = max(range(len(out)), key=lambda j: out[j])
        out[i] -= 1
    return out



class PerSample:
    """Wraps a per-sample array returned by `on_epoch_end`: it goes into the .npz, stacked by epoch."""

    def __init__(self, values):
        self.values = values


class Method:
    """Base class of every method; override the members your algorithm needs.

    Class attributes: `Config` (a dataclass subclassing MethodConfig), `presets`
    (name → {key: value} overriding the Config defaults; `paper` and `quick`),
    `preset_sources` (name → "code" | "paper-text" | "ferbench").
    """

    Config: ClassVar[type] = MethodConfig
    presets: ClassVar[dict[str, dict]] = {"quick": {}, "paper": {}}
    preset_sources: ClassVar[dict[str, str]] = {"quick": "ferbench", "paper": "ferbench"}

    def __init__(self, config):
        self.config = config

    # Which augmentation views each training image arrives in (names from the view registry).
    @property
    def views(self) -> list:
        return list(getattr(self.config, "views", ["weak"]))

    # ---- required --------------------------------------------------------
    def build(self, ctx) -> nn.Module:
        raise NotImplementedError

    def training_step(self, model: nn.Module, batch: dict, ctx) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, model: nn.Module, images: torch.Tensor) -> Prediction:
        raise NotImplementedError

    # ---- optional --------------------------------------------------------
    def configure_optimizers(self, model: nn.Module, ctx) -> list[OptimizerSpec] | None:
        """None: the engine's optimiser and schedule from the shared keys."""
        return None

    def phases(self, ctx) -> list[Phase] | None:
        return None

    def on_phase_start(self, model, ctx, phase: Phase) -> None:
        pass

    def on_phase_end(self, model, ctx, phase: Phase) -> None:
        pass

    def on_epoch_start(self, model, ctx, epoch: int) -> None:
        pass

    def on_epoch_end(self, model, ctx, epoch: int) -> dict | None:
        return None

    def extra_results(self) -> dict:
        return {}

    batch_companions = None  # optional: (index LongTensor[B]) -> LongTensor[B, C]

    def sample_weights(self, ctx) -> torch.Tensor | None:
        return None

    def noise_scores(self, model, ctx):
        """Tensor[N_train] (higher = label more likely wrong) or {name: Tensor}; None: none."""
        return None

    def noise_decisions(self, model, ctx) -> torch.Tensor | None:
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
