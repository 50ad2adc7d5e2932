"""`esr` and `esr-div`: ESR's branches trained one phase per branch (or jointly), with and
without the diversity term on each branch's last CBAM attentions."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ferbench import ConfigError, Phase, Prediction, setting, split_epochs, view_name

from .common import (DiversifiedConfig, DiversifiedMethod, make_optimizer,
                     with_term_weight)
from .ensemble import RULES, ensemble_probs
from .esr import ESR, MIN_UNPADDED

TRAININGS = ("incremental", "joint")
# The code's AffectNet augmentation: colour jitter 0.5/0.5, h-flip, affine ±30°, translate
# 0.1, zoom 1-1.25; pixels in [0, 1], no normalisation (the `esr` view of this plugin).
CODE_VIEWS = [["esr", {}]]


@dataclass
class ESRConfig(DiversifiedConfig):
    """ESR's keys; defaults are the code's from-scratch (AffectNet) setting."""

    backbone: str = "ferbench_esr"
    n_branches: int = setting(9, low=1)
    # Pad every conv so faces under 54 px fit (a departure; the code's layout is unpadded).
    padded: bool = False
    # CBAM after every conv (the diversified code's); false: the original ESR, the term then
    # on the last unit's channel-mean map and pooled features.
    cbam: bool = True
    # incremental (code: one phase per branch) | joint (all branches from the start)
    training: str = setting("incremental", choices=TRAININGS)
    # vote (code: majority of the branches' argmaxes) | mean (mean branch softmax)
    ensemble: str = setting("vote", choices=RULES)
    # The first phase's length against each later phase's (code: 50 then 20 per branch).
    first_phase_share: float = setting(2.5, low=0.0)
    image_size: int = setting(96, low=8)
    epochs: int = setting(210, low=0)           # code: 50 + 8 × 20
    batch_size: int = setting(32, low=1)
    lr: float = setting(0.1, low=0.0)           # the new branch (and the base in phase 1)
    lr_old: float = setting(0.01, low=0.0)      # the base and trained branches afterwards
    momentum: float = setting(0.9, low=0.0, high=1.0)
    weight_decay: float = setting(0.0, low=0.0)
    cap_per_class: int = setting(5000, low=0)   # code: ≤ 5,000 training images per class
    views: list = field(default_factory=lambda: [list(v) for v in CODE_VIEWS])


class ESRMethod(DiversifiedMethod):
    """ESR (Siqueira, Magg, Wermter, AAAI 2020) with CBAM, as the diversified code trains it;
    `esr-div` adds the diversity term of Heidari and Iosifidis (2022)."""

    name = "esr"
    network_kind = "ESR"
    network_class = ESR
    Config = ESRConfig
    presets = {
        # The code's from-scratch setting (esr_affectnet.py): 96 px, nine branches, 50 + 8 × 20
        # epochs, SGD 0.1 / 0.01, ×0.5 every 10 epochs of a phase, batch 32, ≤ 5,000 per class.
        "paper": {"backbone": "ferbench_esr", "image_size": 96, "n_branches": 9,
                  "training": "incremental", "epochs": 210, "first_phase_share": 2.5,
                  "batch_size": 32, "lr": 0.1, "lr_old": 0.01, "lr_step_epochs": 10,
                  "lr_gamma": 0.5, "cap_per_class": 5000},
        # The original ESR (no CBAM) at a quarter of every width, padded at 48 px, two
        # branches in phases of 4 and 2 epochs (two, so any run of two or more epochs has a
        # phase per branch) on at most 400 faces per class: under a CPU minute on synthfer.
        # From scratch within that budget the CBAM layout stays at chance, and so does any
        # layout with SGD at 0.05, AdamW at 3e-3 or the code's augmentation on 48 px faces
        # (README: Presets).
        "quick": {"backbone": "ferbench_esr_quarter", "image_size": 48, "padded": True,
                  "cbam": False, "n_branches": 2, "training": "incremental", "epochs": 6,
                  "first_phase_share": 2.0, "batch_size": 64, "optimizer": "adamw",
                  "lr": 1e-3, "lr_old": 3e-4, "weight_decay": 0.0, "scheduler": "none",
                  "cap_per_class": 400, "views": ["weak"]},
    }
    preset_sources = {"paper": "code", "quick": "ferbench"}

    def __init__(self, config):
        super().__init__(config)
        cfg = config
        self._view = view_name(cfg.views[0])
        if not cfg.padded and cfg.image_size < MIN_UNPADDED:
            raise ConfigError(f"{self.name}: image_size={cfg.image_size} is under the "
                              f"{MIN_UNPADDED} px ESR's unpadded layout needs: set padded=true "
                              f"(a departure: every conv padded) or a larger image_size")
        if cfg.first_phase_share <= 0:
            raise ConfigError(f"first_phase_share={cfg.first_phase_share!r}: must be above 0 "
                              f"(at 0 the first branch gets no phase of its own)")
        if cfg.training == "incremental" and cfg.n_branches > 1 and cfg.epochs < cfg.n_branches:
            raise ConfigError(f"{self.name}: incremental training of {cfg.n_branches} branches "
                              f"needs at least {cfg.n_branches} epochs (one phase per branch), "
                              f"got epochs={cfg.epochs}: raise epochs or set training=joint")

    # ---- building and predicting ---------------------------------------------------------
    def build(self, ctx):
        cfg = self.config
        net = self._create(ctx, n_branches=cfg.n_branches, padded=cfg.padded, cbam=cfg.cbam)
        if cfg.weights and not ctx.whole_model_weights:
            # An ESR state dict of another run (another class count: its heads stay random).
            ctx.load_weights(net, cfg.weights, name="esr", strip_prefixes=("module.",),
                             matching_only=True)
        elif not cfg.weights:
            ctx.load_weights(net, None, name="esr")
        self.warn_odd(cfg.n_branches)
        return net

    def predict(self, model, images):
        out = model.forward_branches(images)
        members = out["logits"].float().softmax(-1)
        branches = out["features"].unbind(1)
        figures = self.figures(branches, {"spatial": out["attn_sp"].unbind(1),
                                          "channel": out["attn_ch"].unbind(1)})
        return Prediction(probs=ensemble_probs(members, self.config.ensemble), members=members,
                          extras=figures)

    # ---- phases and optimisers -----------------------------------------------------------
    def phases(self, ctx):
        cfg = self.config
        if cfg.training == "joint" or cfg.n_branches == 1:
            return None
        shares = [cfg.first_phase_share] + [1.0] * (cfg.n_branches - 1)
        return [Phase(f"branch{i + 1}", e)
                for i, e in enumerate(split_epochs(ctx.epochs, shares))]

    def _phase_index(self, ctx) -> int:
        name = getattr(ctx.phase, "name", "train")
        return int(name[len("branch"):]) - 1 if name.startswith("branch") else -1

    def on_phase_start(self, model, ctx, phase):
        super().on_phase_start(model, ctx, phase)
        k = self._phase_index(ctx)
        model.active = self.config.n_branches if k < 0 else k + 1

    def configure_optimizers(self, model, ctx):
        """SGD with momentum: in phase 1 the base and branch 1 at `lr`; in phase k the new
        branch at `lr`, the base and the trained branches at `lr_old`; joint: all at `lr`.
        The schedule restarts with each phase (the code's StepLR every `lr_step_epochs`)."""
        cfg = self.config
        k = self._phase_index(ctx)
        if k < 0:
            groups = [{"params": list(model.parameters()), "lr": cfg.lr}]
        else:
            old = cfg.lr if k == 0 else cfg.lr_old
            groups = [{"params": list(model.base.parameters()), "lr": old},
                      {"params": list(model.branches[k].parameters()), "lr": cfg.lr}]
            groups += [{"params": list(model.branches[i].parameters()), "lr": cfg.lr_old}
                       for i in range(k)]
        epochs = getattr(ctx.phase, "epochs", ctx.epochs)
        return [make_optimizer(cfg, groups, epochs, ctx.steps_per_epoch)]

    # ---- training ------------------------------------------------------------------------
    def training_step(self, model, batch, ctx):
        """Σ over active branches of CE, plus weight × (D_spatial + D_channel) over the
        branches' last CBAM attentions once two or more branches are active (the code's)."""
        cfg = self.config
        x = batch["views"][self._view]
        out = model.forward_branches(x)
        logits, y = out["logits"].float(), batch["label"]
        n = logits.shape[1]
        loss = sum(F.cross_entropy(logits[:, i], y, label_smoothing=cfg.label_smoothing)
                   for i in range(n))
        if cfg.diversity_weight > 0 and n > 1:
            d_sp = self.term(out["attn_sp"].unbind(1))
            d_ch = self.term(out["attn_ch"].unbind(1))
            ctx.log("div_spatial", d_sp.detach())
            ctx.log("div_channel", d_ch.detach())
            loss = loss + cfg.diversity_weight * (d_sp + d_ch)
        return loss

    def extra_results(self) -> dict:
        cfg = self.config
        return {**super().extra_results(), "training": cfg.training, "ensemble": cfg.ensemble,
                "n_branches": cfg.n_branches, "padded": cfg.padded, "cbam": cfg.cbam}


ESRPlain = with_term_weight(ESRMethod, "esr", 0.0, "`esr`: ESR without the term (weight 0).",
                            "ESR")
ESRDiv = with_term_weight(ESRMethod, "esr-div", 1.0, "`esr-div`: ESR with the diversity term.",
                          "ESR + diversity")
