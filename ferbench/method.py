"""The method contract: what a method plugin implements and the values it exchanges with the engine.

Three members are required (`build`, `training_step`, `predict`); everything
else has a default here, so a minimal method is a screenful. docs/design.md,
section 2, is the full contract in one table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .config.settings import check_settings, setting
from .errors import ConfigError, PluginError


@dataclass
class MethodConfig:
    """Keys every method shares, so the global flags reach them.

    A method's own `Config` subclasses this. `lr` is the main parameter group's
    base rate; other groups are multipliers of it unless the method says otherwise.
    Keys declared with `setting(...)` have their choices or range checked when the
    config is built, in the method's own Config too.
    """

    backbone: str = "ferbench_resnet_tiny"   # any timm model name (--backbone)
    weights: str | None = None   # a local checkpoint file to start from (--weights)
    image_size: int = setting(48, low=8)   # side of the square training images, px
    epochs: int = setting(8, low=0)   # training epochs; schedules scale with them
    batch_size: int = setting(64, low=1)   # training images per step
    lr: float = setting(1e-3, low=0.0)   # base learning rate of the main parameter group
    weight_decay: float = setting(5e-4, low=0.0)   # the optimiser's weight decay
    optimizer: str = setting("adamw", choices=("adamw", "sgd", "adam"))   # default optimiser
    momentum: float = setting(0.9, low=0.0, high=1.0)   # SGD's momentum
    scheduler: str = setting("onecycle", choices=("onecycle", "cosine", "step", "none"))
    warmup: float = setting(0.15, low=0.0, high=1.0)  # share of the schedule warming up (onecycle)
    label_smoothing: float = setting(0.0, low=0.0, high=1.0)   # of the cross-entropy target
    tta_flip: bool = False   # average the predictions of each test image and its mirror
    views: list = field(default_factory=lambda: ["weak"])   # augmentation views of each image

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


def member_name(method, member: str) -> str:
    """`module.Class.member` of a method: where a broken contract is reported, so the fault
    names the plugin that has it."""
    cls = type(method)
    return f"{cls.__module__}.{cls.__qualname__}.{member}"


# Rows of probabilities computed in bf16 sum to 1 within about 1e-2.
_SUM_TOLERANCE = 2e-2


def check_prediction(pred, batch: int, k: int, method) -> None:
    """Refuse, in one line naming the method's `predict`, an output that breaks the contract:
    probs [B, K] finite, non-negative, rows summing to 1; uncertainty [B] finite; members
    [B, M, K] probabilities like probs; extras [B, ...]. One host read per batch."""
    where = member_name(method, "predict")
    if not isinstance(pred, Prediction):
        raise PluginError(f"{where} returned {type(pred).__name__}, not a Prediction")

    flags = []  # (what is wrong, a 0-d tensor: true where it is)

    def probabilities(name, t, shape):
        if not torch.is_tensor(t) or t.ndim != len(shape) or any(
                want is not None and got != want for got, want in zip(t.shape, shape)):
            got = list(t.shape) if torch.is_tensor(t) else type(t).__name__
            raise PluginError(f"{where}: {name} must be {list(shape)} (None: any), got {got}")
        t = t.detach().float()
        flags.extend([(f"{name} has non-finite values", ~torch.isfinite(t).all()),
                      (f"{name} has negative values", (t < 0).any()),
                      (f"{name} rows must sum to 1 (probabilities, not logits)",
                       (t.sum(-1) - 1).abs().max() > _SUM_TOLERANCE)])

    probabilities("probs", pred.probs, (batch, k))
    if pred.members is not None:
        probabilities("members", pred.members, (batch, None, k))
    if pred.uncertainty is not None:
        if not torch.is_tensor(pred.uncertainty) or tuple(pred.uncertainty.shape) != (batch,):
            raise PluginError(f"{where}: uncertainty must be [B={batch}]")
        flags.append(("uncertainty has non-finite values",
                      ~torch.isfinite(pred.uncertainty.detach().float()).all()))
    for name, v in (pred.extras or {}).items():
        if not torch.is_tensor(v) or v.ndim == 0 or v.shape[0] != batch:
            raise PluginError(f"{where}: extras[{name!r}] must be [B={batch}, ...]")
    hits = torch.stack([flag for _, flag in flags]).tolist()  # the one host read
    for (problem, _), hit in zip(flags, hits):
        if hit:
            raise PluginError(f"{where}: {problem}")


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
    """Wraps a per-sample array returned by `on_epoch_end`: it goes into the .npz, stacked by epoch.

    `values` is one value per training sample, [N] or [N, ...]. With `distribution=True` it is
    a distribution over the run's classes per sample, [N, K] (LDL's built label
    distributions): the harness scores it against the ground-truth distributions it holds
    back from the method (votes, synthfer's `distribution`), and the method never sees them.
    """

    def __init__(self, values, distribution: bool = False):
        self.values = values
        self.distribution = distribution


class Method:
    """Base class of every method; override the members your algorithm needs.

    Class attributes: `Config` (a dataclass subclassing MethodConfig), `presets`
    (name → {key: value} overriding the Config defaults; `paper` and `quick`),
    `preset_sources` (name → "code" | "paper-text" | "ferbench"), `pretrained_presets`
    (the presets whose official setting starts from pretrained weights: a run of one of
    them from random weights is marked so in the leaderboard), `timm_backbone` (False for a
    method that builds its networks itself, a CLIP tower say: its `backbone` key then names
    them for the record and is not checked against timm's models), `display_name` (how
    tables and figures name the method, "UA-FER" say; the registered name where None).
    """

    Config: ClassVar[type] = MethodConfig
    display_name: ClassVar[str | None] = None
    presets: ClassVar[dict[str, dict]] = {"quick": {}, "paper": {}}
    preset_sources: ClassVar[dict[str, str]] = {"quick": "ferbench", "paper": "ferbench"}
    pretrained_presets: ClassVar[tuple[str, ...]] = ()
    timm_backbone: ClassVar[bool] = True

    def __init__(self, config):
        self.config = config

    # Which augmentation views each training image arrives in (names from the view registry).
    @property
    def views(self) -> list:
        return list(getattr(self.config, "views", ["weak"]))

    # The views the companions of `batch_companions` arrive in, where they differ from the
    # main images' (LDLVA's official code does not erase its neighbours); None: `views`.
    # Name them in the method's config, so the run key covers them.
    companion_views = None

    # ---- required --------------------------------------------------------
    def build(self, ctx) -> nn.Module:
        """The model, built once before training (backbones through `ctx.create_backbone`,
        teachers and towers through `ctx.frozen`). The engine moves it to the device."""
        raise NotImplementedError

    def training_step(self, model: nn.Module, batch: dict, ctx) -> torch.Tensor:
        """The loss of one batch, a scalar tensor; the engine does backward and the steps.

        `batch` holds `index` (LongTensor [B], positions in `ctx.train`), `views` (view
        name → float images [B, 3, S, S] in [0, 1], augmented on the device), `label` (the
        labels the protocol lets the method see: noisy under noise), `extras` (name →
        tensor [B, ...] of the permitted extras) and, where `batch_companions` gives some,
        `companions` (`index` [B, C], `views` name → [B, C, 3, S, S], `label` [B, C]).
        Called in train mode under the run's autocast (`ctx.autocast()`).
        """
        raise NotImplementedError

    def predict(self, model: nn.Module, images: torch.Tensor) -> Prediction:
        """Predictions for float images [B, 3, S, S] in [0, 1]; called in eval mode, without
        gradients, under the run's autocast. `probs` and `members` are probabilities (rows
        summing to 1), not logits: the harness checks every batch and refuses a broken one."""
        raise NotImplementedError

    # ---- optional --------------------------------------------------------
    def configure_optimizers(self, model: nn.Module, ctx) -> list[OptimizerSpec] | None:
        """The optimisers of the current phase (called again at each phase's start); None:
        `ferbench.default_optimizer` over the whole model, from the shared keys.

        Every step the engine zeroes every spec's gradients, runs one backward of the loss,
        then per spec in order clips (`clip_grad_norm`), steps the optimiser and, with
        `interval="step"`, its scheduler; schedulers with `interval="epoch"` step once after
        each epoch's `on_epoch_end`. `default_optimizer(module, config, steps)` builds the
        engine's default for one of several networks.
        """
        return None

    def phases(self, ctx) -> list[Phase] | None:
        """Stages of training (their epochs summing to `ctx.epochs`; `split_epochs` helps);
        None: one phase. `ctx.phase` is the current one."""
        return None

    def on_phase_start(self, model, ctx, phase: Phase) -> None:
        """Before a phase's first epoch. A resumed run calls it again for the phases the
        interrupted run finished (with `on_phase_end`), before restoring the state saved at
        the last finished point: keep state in `state_dict`, structure here."""

    def on_phase_end(self, model, ctx, phase: Phase) -> None:
        """After a phase's last epoch; the checkpoint is written after it returns."""

    def on_epoch_start(self, model, ctx, epoch: int) -> None:
        """Before an epoch's first step; `epoch` (and `ctx.epoch`) counts from 0."""

    def on_epoch_end(self, model, ctx, epoch: int) -> dict | None:
        """After an epoch's last step, before the engine's evaluation: scalars go into the
        history row; `PerSample` arrays into the .npz, stacked by epoch, and are summarised
        for flipped against clean samples under noise."""
        return None

    def on_validation_end(self, model, ctx, epoch: int, metrics: dict) -> None:
        """After the engine's validation pass of an epoch, with its figures (`val_acc`):
        where a method keeps its best-on-validation state (ESR's incremental training).
        A method that defines it gets the pass every epoch where there is a validation
        split, whatever `engine.eval_every`; the checkpoint is written after it."""

    def extras_read(self) -> dict[str, str]:
        """The training extras this config will read through `ctx.train_extra`, each with
        the setting that asks for it: `{"votes": "soft_target=votes"}`. Optional; the harness
        checks them when it plans the runs, so a run that could never read one (the
        protocol withholds it, the dataset has none) is refused before any run trains."""
        return {}

    def extra_results(self) -> dict:
        """Figures of the whole run for the result's `method_results` (JSON-able)."""
        return {}

    # optional: (index LongTensor[B]) -> LongTensor[B, C] of other training samples to fetch
    # and augment with each batch (LDL's neighbours), or None for a batch without them (a
    # config that switches companions off returns None).
    batch_companions = None

    def training_indices(self, ctx) -> torch.Tensor | None:
        """The training samples every epoch draws from, a fixed subset (LongTensor [M] of
        distinct positions in `ctx.train`; `capped_per_class` builds ESR's at most 5,000 per
        class); None: all. Called once after `build`; `ctx.steps_per_epoch` follows it,
        and the result records its size."""
        return None

    def sample_weights(self, ctx) -> torch.Tensor | None:
        """Tensor [N_train] of sampling weights, drawn with replacement each epoch
        (class-balanced sampling); None: each sample once per epoch, shuffled."""
        return None

    def noise_scores(self, model, ctx):
        """Tensor[N_train] (higher = label more likely wrong) or {name: Tensor}; None: none.

        Called once after the last epoch, like `noise_decisions`, with the model in train
        mode, outside autocast and with gradients on: use `ctx.train_predictions` or
        switch to eval and `torch.no_grad()` yourself."""
        return None

    def noise_decisions(self, model, ctx) -> torch.Tensor | None:
        """Bool Tensor[N_train], True where the method holds the given label to be wrong
        (MAN's noisy subset); None: the harness scores the top k of `noise_scores`."""
        return None

    def state_dict(self) -> dict:
        """Everything besides the model and optimisers that a resumed run needs."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def capped_per_class(labels, cap: int, seed: int = 0) -> torch.Tensor:
    """A deterministic subset of at most `cap` samples of each class (the samples of each
    class in a seeded random order, the first `cap` kept), sorted: for `training_indices`."""
    labels = torch.as_tensor(labels).cpu()
    gen = torch.Generator().manual_seed(int(seed))
    kept = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        kept.append(idx[torch.randperm(len(idx), generator=gen)[:cap]])
    return torch.sort(torch.cat(kept)).values if kept else torch.zeros(0, dtype=torch.long)


def distribution_problem(arr, n: int, k: int) -> str | None:
    """Why `arr` is not one distribution over K classes per training sample ([N, K], rows
    non-negative and summing to 1 within 1e-3), or None. An array that is all NaN is none:
    an epoch before the method built anything (NaN keeps a stack aligned with epochs)."""
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape != (n, k):
        return f"shape {list(arr.shape)}"
    if arr.size and np.isnan(arr).all():
        return None
    if not np.isfinite(arr).all():
        return "NaN or infinite values"
    if (arr < 0).any():
        return f"negative values (min {arr.min():.4g})"
    sums = arr.sum(1)
    off = np.flatnonzero(np.abs(sums - 1) > 1e-3)
    return f"row {off[0]} sums to {sums[off[0]]:.4g}" if len(off) else None


def check_training_indices(indices, n: int, method) -> torch.Tensor:
    """`training_indices` as a LongTensor, or one line naming the method's member."""
    where = member_name(method, "training_indices")
    t = torch.as_tensor(indices)
    if t.ndim != 1 or t.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) \
            or t.dtype == torch.bool:
        raise PluginError(f"{where} must return a LongTensor [M] of positions, got "
                          f"{t.dtype} {list(t.shape)}")
    t = t.long().cpu()
    if len(t) == 0 or int(t.min()) < 0 or int(t.max()) >= n:
        raise PluginError(f"{where} returned positions outside 0..{n - 1} (or none)")
    if len(torch.unique(t)) != len(t):
        raise PluginError(f"{where} returned a position twice: a fixed subset names each once")
    return t
