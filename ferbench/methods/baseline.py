"""The baseline: cross-entropy on any timm backbone; its noise scores are per-sample losses."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..method import Method, MethodConfig, Prediction
from ..nn import normalize


@dataclass
class BaselineConfig(MethodConfig):
    pass


class Baseline(Method):
    """Plain supervised training: the reference every method is measured against."""

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

    def build(self, ctx):
        return ctx.create_backbone()

    def training_step(self, model, batch, ctx):
        # Its one view is whichever the config names (`views=[strong]`, `views=[none]`).
        logits = model(normalize(next(iter(batch["views"].values()))))
        return F.cross_entropy(logits.float(), batch["label"],
                               label_smoothing=self.config.label_smoothing)

    def predict(self, model, images):
        return Prediction(probs=model(normalize(images)).float().softmax(1))

    def noise_scores(self, model, ctx):
        """The small-loss criterion: cross-entropy of each training sample under its given label."""
        probs = ctx.train_predictions("none")
        p = probs[torch.arange(len(probs)), ctx.train.labels.cpu()]
        return -torch.log(p.clamp_min(1e-12))
