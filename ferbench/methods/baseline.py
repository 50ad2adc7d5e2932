"""The baseline: cross-entropy on any timm backbone; its noise scores are per-sample losses."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config.settings import setting
from ..errors import ConfigError
from ..method import Method, MethodConfig, Prediction
from ..nn import normalize


@dataclass
class BaselineConfig(MethodConfig):
    # A label-carrying extra to train on instead of the labels: cross-entropy to its
    # normalised distribution (`votes`: the FERPlus paper's "crossentropy" scheme). The fair
    # reference for a method that learns from the same soft labels; only where the protocol
    # lets the method see them (clean), since noise protocols withhold them.
    soft_target: str | None = setting(None, added=True)


class Baseline(Method):
    """Plain supervised training: the reference every method is measured against."""

    display_name = "Baseline"

    Config = BaselineConfig
    presets = {
        # A small ResNet whose stem keeps 48 px faces at full resolution: a CPU minute or two.
        "quick": {"backbone": "ferbench_resnet_tiny", "image_size": 48, "epochs": 8,
                  "batch_size": 64, "lr": 3e-3, "optimizer": "adamw", "scheduler": "onecycle"},
        # The fastest route to 84 % on FERPlus that ferbench knows: the FaceResNet family's
        # base size (ResNet-18's widths behind a narrow full-resolution stem, 0.30 G
        # multiply-adds at 48 px) with the quick optimiser (README: Recipe ablation).
        "fast": {"backbone": "ferbench_resnet_base", "image_size": 48, "epochs": 10,
                 "batch_size": 64, "lr": 3e-3, "optimizer": "adamw", "scheduler": "onecycle"},
        # The usual FER baseline: ResNet-18 at 112 px; SGD with a one-cycle schedule, which
        # trains it from scratch as well as from weights.
        "paper": {"backbone": "resnet18", "image_size": 112, "epochs": 40, "batch_size": 128,
                  "lr": 0.1, "optimizer": "sgd", "scheduler": "onecycle", "warmup": 0.15,
                  "weight_decay": 5e-4, "label_smoothing": 0.1},
    }
    preset_sources = {"quick": "ferbench", "paper": "ferbench", "fast": "ferbench"}

    def extras_read(self):
        name = self.config.soft_target
        return {name: f"soft_target={name}"} if name else {}

    def build(self, ctx):
        self._targets = (soft_targets(ctx, self.config.soft_target)
                         if self.config.soft_target else None)
        return ctx.create_backbone()

    def training_step(self, model, batch, ctx):
        # Its one view is whichever the config names (`views=[strong]`, `views=[none]`).
        logits = model(normalize(next(iter(batch["views"].values()))))
        if self._targets is not None:
            target = self._targets[batch["index"]]
            return -(target * F.log_softmax(logits.float(), 1)).sum(1).mean()
        return F.cross_entropy(logits.float(), batch["label"],
                               label_smoothing=self.config.label_smoothing)

    def predict(self, model, images):
        return Prediction(probs=model(normalize(images)).float().softmax(1))

    def noise_scores(self, model, ctx):
        """The small-loss criterion: cross-entropy of each training sample under its given label."""
        probs = ctx.train_predictions("none")
        p = probs[torch.arange(len(probs)), ctx.train.labels.cpu()]
        return {"loss": -torch.log(p.clamp_min(1e-12))}


def soft_targets(ctx, name: str) -> torch.Tensor:
    """The training set's distributions from the label-carrying extra `name`, [N, K] on the
    device; a face without any (no vote for the run's classes) keeps its one-hot label."""
    from ..labels import extra_distributions

    train = ctx.train
    extra = ctx.train_extra(name, f"soft_target={name}",
                            " (it was annotated with the labels it would reveal); use it "
                            "under clean")
    try:
        dist = torch.as_tensor(extra_distributions(name, extra, ctx.classes),
                               dtype=torch.float32)
    except ValueError as e:
        raise ConfigError(f"soft_target={name}: {e}") from None
    onehot = F.one_hot(train.labels, ctx.num_classes).float()
    missing = torch.isnan(dist).any(1, keepdim=True)
    return torch.where(missing, onehot, dist).to(ctx.device)
