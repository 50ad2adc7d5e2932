"""`manet` and `manet-div`: MA-Net's local and global branches, with and without the
diversity term on the four quadrant maps and on the pooled local and global features."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ferbench import DataError, Prediction, setting, view_name
from ferbench.nn import normalize

from .common import (DiversifiedConfig, DiversifiedMethod, make_optimizer,
                     with_term_weight)
from .manet import PATCHES, MANet

# The code's RAF-DB augmentation (resize, h-flip, p 0.2 rotation 20° + pad-32 crop, random
# erasing 0.02-0.25 at p 0.5) on ferbench's weak view: the crop's pad (32/224) on every face
# and no rotation, a stated departure.
CODE_VIEWS = [["weak", {"pad": 0.14, "flip": True, "erase": 0.5}]]


@dataclass
class MANetConfig(DiversifiedConfig):
    """MA-Net's keys; defaults are the diversified code's RAF-DB setting (manet_rafdb.py)."""

    backbone: str = "ferbench_manet"
    beta: float = setting(0.6, low=0.0, high=1.0)   # weight of the local branch
    image_size: int = setting(224, low=32)
    epochs: int = setting(100, low=0)
    batch_size: int = setting(128, low=1)
    lr: float = setting(0.01, low=0.0)
    momentum: float = setting(0.9, low=0.0, high=1.0)
    weight_decay: float = setting(1e-4, low=0.0)
    lr_step_epochs: int = setting(15, low=1)
    lr_gamma: float = setting(0.1, low=0.0, high=1.0)
    views: list = field(default_factory=lambda: [list(v) for v in CODE_VIEWS])


def load_manet_weights(ctx, net: MANet, path) -> None:
    """The MA-Net authors' checkpoint (`state_dict` with `module.` prefixes; its 12,666-way
    heads stay random), or a plain ResNet-18: its stem, layer1 and layer2 as they are, its
    layer3 / layer4 into every branch's where names and shapes match. Each load recorded."""
    entry = ctx.load_weights(net, path, name="manet", strip_prefixes=("module.",),
                             matching_only=True)
    left = [k for k in entry["left_random"] if not k.startswith(("fc_1.", "fc_2."))]
    if not left:
        return
    # The authors' layout is told by the branch names only MA-Net has: once any of its
    # tensors loaded, every leftover is a broken checkpoint, never a plain ResNet-18.
    own_branches = [k for k in net.state_dict() if k.startswith(("layer3_", "layer4_"))
                    and not k.endswith("num_batches_tracked")]
    if any(k not in entry["left_random"] for k in own_branches):
        why = "wrong shape" if left[0] in entry["unused"] else "missing"
        raise DataError(path, f"an MA-Net checkpoint that leaves {len(left)} tensors of the "
                              f"network unmatched (first: {left[0]}, {why})")
    for branch in [f"_1_{p}" for p in PATCHES] + ["_2"]:
        for layer in ("layer3", "layer4"):
            ctx.load_weights(getattr(net, layer + branch), path, name=f"manet.{layer}{branch}",
                             strip_prefixes=(f"module.{layer}.", f"{layer}."),
                             only_prefixed=True, matching_only=True)


class MANetMethod(DiversifiedMethod):
    """MA-Net (Zhao, Liu, Wang, IEEE TIP 2021) as the diversified code trains it;
    `manet-div` adds the diversity term of Heidari and Iosifidis (2022)."""

    name = "manet"
    network_kind = "MA-Net"
    network_class = MANet
    Config = MANetConfig
    presets = {
        # manet_rafdb.py: 224 px, batch 128, SGD 0.01 momentum 0.9 wd 1e-4, ×0.1 every 15
        # epochs, 100 epochs, from the authors' MS-Celeb checkpoint (weights=PATH).
        "paper": {"backbone": "ferbench_manet", "image_size": 224, "batch_size": 128,
                  "epochs": 100, "lr": 0.01, "weight_decay": 1e-4, "lr_step_epochs": 15,
                  "lr_gamma": 0.1},
        # A quarter of every width at 48 px on at most 300 faces per class: under a CPU
        # minute on synthfer.
        "quick": {"backbone": "ferbench_manet_quarter", "image_size": 48, "batch_size": 64,
                  "epochs": 4, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 5e-4,
                  "scheduler": "onecycle", "cap_per_class": 300},
    }
    preset_sources = {"paper": "code", "quick": "ferbench"}
    pretrained_presets = ("paper",)

    def __init__(self, config):
        super().__init__(config)
        self._view = view_name(config.views[0])

    def build(self, ctx):
        cfg = self.config
        net = self._create(ctx, beta=cfg.beta)
        if cfg.weights and not ctx.whole_model_weights:
            load_manet_weights(ctx, net, cfg.weights)
        elif not cfg.weights:
            ctx.load_weights(net, None, name="manet")
        return net

    def _parts(self, model, images):
        out = model.forward_parts(normalize(images))
        patches = out["patches"].float()                       # [B, 4, C, h, w]
        terms = {"spatial": [patches[:, i].mean(1) for i in range(4)],
                 "channel": [patches[:, i].mean((-2, -1)) for i in range(4)],
                 "feature": [out["feat_local"].float(), out["feat_global"].float()]}
        return out, terms

    def predict(self, model, images):
        """softmax(β·local + (1 − β)·global) (the code's output); both heads as members."""
        out, terms = self._parts(model, images)
        local, glob = out["local"].float(), out["global_"].float()
        beta = self.config.beta
        members = torch.stack([local.softmax(1), glob.softmax(1)], 1)
        return Prediction(probs=(beta * local + (1 - beta) * glob).softmax(1), members=members,
                          extras=self.figures(terms["channel"], terms))

    def configure_optimizers(self, model, ctx):
        """The code's SGD (momentum 0.9, wd 1e-4) with StepLR ×0.1 every 15 epochs."""
        cfg = self.config
        return [make_optimizer(cfg, [{"params": list(model.parameters()), "lr": cfg.lr}],
                               ctx.epochs, ctx.steps_per_epoch)]

    def training_step(self, model, batch, ctx):
        """β·CE(local) + (1 − β)·CE(global) + weight × (D_spatial + D_channel over the four
        quadrant maps, + D_feature over the pooled local and global features)."""
        cfg = self.config
        out, terms = self._parts(model, batch["views"][self._view])
        y, beta = batch["label"], cfg.beta
        loss = (beta * F.cross_entropy(out["local"].float(), y, label_smoothing=cfg.label_smoothing)
                + (1 - beta) * F.cross_entropy(out["global_"].float(), y,
                                               label_smoothing=cfg.label_smoothing))
        if cfg.diversity_weight > 0:
            parts = {name: self.term(t) for name, t in terms.items()}
            for name, v in parts.items():
                ctx.log(f"div_{name}", v.detach())
            loss = loss + cfg.diversity_weight * sum(parts.values())
        return loss

    def extra_results(self) -> dict:
        return {**super().extra_results(), "beta": self.config.beta}


MANetPlain = with_term_weight(MANetMethod, "manet", 0.0,
                              "`manet`: MA-Net without the term (weight 0).", "MA-Net")
MANetDiv = with_term_weight(MANetMethod, "manet-div", 1.0,
                            "`manet-div`: MA-Net with the diversity term.",
                            "MA-Net + diversity")
