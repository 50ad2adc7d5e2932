"""MAN: two networks split the training set into clean / ambiguous / noisy samples, one loss each.

Follows the official code (zzzzzzyang/MAN, main.py), not a reading of the paper:
see shared/methods/man.md and this plugin's README for every switch and departure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ferbench import (ConfigError, Method, MethodConfig, OptimizerSpec, PerSample, Prediction,
                      setting, split_epochs, view_name)
from ferbench.nn import normalize

CLEAN, AMBIGUOUS, NOISY = 0, 1, 2
SUBSETS = ("clean", "ambiguous", "noisy")     # index = subset code
UNASSIGNED = -1                               # per_batch: a sample no step has divided yet

# The code's weak view (flip; p 0.5 jitter + affine translate 0.1; random erasing p 0.5) and
# strong view (4 px pad-crop, flip, RandAugment 2 ops: ±30° rotate, shear 0.3, no zoom; a
# 16 px cutout) mapped onto ferbench's batched views; the README has the op-by-op table.
CODE_VIEWS = [["weak", {"pad": 0.1, "flip": True, "erase": 0.5}],
              ["strong", {"pad": 0.02, "degrees": 30.0, "shear": 17.0, "scale": 0.0,
                          "erase": 0.0}]]

@dataclass
class MANConfig(MethodConfig):
    """MAN's keys; defaults are the official code's (main.py)."""

    weight_decay: float = setting(1e-4, low=0.0)   # Adam's L2 term on both networks
    optimizer: str = setting("adam", choices=("adam", "adamw", "sgd"))  # adam: the code's
    # exponential (code: ExponentialLR per epoch) | none
    scheduler: str = setting("exponential", choices=("exponential", "none"))
    lr_gamma: float = setting(0.9, low=0.0, high=1.0)  # per-epoch decay of the exponential schedule
    # code: 10 of 100 epochs of CE on both networks; below 1 (MAN's own phase must come)
    warmup_frac: float = setting(0.1, low=0.0, high=1.0)
    # per_epoch (eval pass at epoch start, code) | per_batch
    division: str = setting("per_epoch", choices=("per_epoch", "per_batch"))
    # both_wrong (code) | agree_wrong (same wrong class)
    noisy_rule: str = setting("both_wrong", choices=("both_wrong", "agree_wrong"))
    w_amb: float = setting(0.6, low=0.0)     # code: w_omiga
    w_noisy: float = setting(1.0, low=0.0)   # code: w_gamma
    lam_max: float = setting(0.9, low=0.0, high=1.0)   # the ramp's peak weight
    lam_beta: float = setting(0.65, low=0.0)          # the ramp's steepness
    lam_peak_frac: float = setting(0.9, low=0.0)   # e_r = lam_peak_frac * epochs; above 0
    mutual_detach: bool = False         # code: gradient through both sides of both KLs
    # subset (mean over the subset, code) | batch (sum / B)
    subset_norm: str = setting("subset", choices=("subset", "batch"))
    # separate (one forward per subset and view, code) | joint
    subset_forward: str = setting("separate", choices=("separate", "joint"))
    # mean_logits (code) | mean_probs
    predict: str = setting("mean_logits", choices=("mean_logits", "mean_probs"))
    views: list = field(default_factory=lambda: [list(v) for v in CODE_VIEWS])


# ---- the pure parts ------------------------------------------------------------------------
def warmup_epochs(epochs: int, frac: float) -> int:
    """Warm-up epochs: a fraction of `epochs`, never rounded away nor the whole run at E >= 2."""
    if frac <= 0 or epochs < 2:
        return 0
    return split_epochs(epochs, [frac, 1.0 - frac])[0]


def lam_schedule(e: int, epochs: int, lam_max=0.9, beta=0.65, peak_frac=0.9) -> float:
    """The code's Gaussian ramp-up λ(e) = lam_max·exp(−β(1 − e/e_r)²), e_r = peak_frac·E.

    `e` counts from 1 as in the code (its epoch 11 is ferbench epoch 10); not clamped after e_r.
    """
    e_r = peak_frac * epochs
    return lam_max * math.exp(-beta * (1.0 - e / e_r) ** 2)


def divide(pred1, pred2, labels, rule: str = "both_wrong") -> torch.Tensor:
    """Subset code per sample: CLEAN (both right), NOISY (both wrong), else AMBIGUOUS.

    `agree_wrong` keeps only both-wrong samples whose two predictions agree as noisy; the other
    both-wrong samples become ambiguous.
    """
    right1, right2 = pred1 == labels, pred2 == labels
    out = torch.full_like(labels, AMBIGUOUS)
    out[right1 & right2] = CLEAN
    noisy = ~right1 & ~right2
    if rule == "agree_wrong":
        noisy &= pred1 == pred2
    out[noisy] = NOISY
    return out


def ce_pair(l1, l2, y, smoothing: float = 0.0) -> torch.Tensor:
    """Per-sample ½[CE(f1, y) + CE(f2, y)]."""
    return 0.5 * (F.cross_entropy(l1, y, reduction="none", label_smoothing=smoothing)
                  + F.cross_entropy(l2, y, reduction="none", label_smoothing=smoothing))


def sym_kl(l1, l2, detach: bool = False) -> torch.Tensor:
    """Per-sample ½[KL(q2‖q1) + KL(q1‖q2)], summed over classes; `detach` stops the targets."""
    lp1, lp2 = l1.log_softmax(1), l2.log_softmax(1)
    t1, t2 = (lp1.detach(), lp2.detach()) if detach else (lp1, lp2)
    kl21 = (t2.exp() * (t2 - lp1)).sum(1)   # code: kl_loss(y_1, y_2)
    kl12 = (t1.exp() * (t1 - lp2)).sum(1)   # code: kl_loss(y_2, y_1)
    return 0.5 * (kl21 + kl12)


def amb_loss(l1, l2, y, lam: float, detach: bool = False, smoothing: float = 0.0):
    """Per-sample (1 − λ)·½ΣCE + λ·½[KL(q2‖q1) + KL(q1‖q2)] (the code's Mutual_loss)."""
    return (1 - lam) * ce_pair(l1, l2, y, smoothing) + lam * sym_kl(l1, l2, detach)


def consistency(w1, s1, w2, s2) -> torch.Tensor:
    """Per-sample ½Σ_n mean_k (softmax f_n(x_w) − softmax f_n(x_s))²: each net's own MSE."""
    return 0.5 * (((w1.softmax(1) - s1.softmax(1)) ** 2).mean(1)
                  + ((w2.softmax(1) - s2.softmax(1)) ** 2).mean(1))


def reduce_subset(values: torch.Tensor, batch_size: int, norm: str = "subset") -> torch.Tensor:
    """Mean over the subset (code: a lone sample gets the term's whole weight) or sum / batch."""
    if values.numel() == 0:
        return values.new_zeros(())
    return values.mean() if norm == "subset" else values.sum() / batch_size


# ---- the model ------------------------------------------------------------------------------
class TwoNets(nn.Module):
    """Both networks in one module, so the engine trains, checkpoints and counts both."""

    def __init__(self, net1: nn.Module, net2: nn.Module):
        super().__init__()
        self.net1, self.net2 = net1, net2

    def forward(self, x):
        return self.net1(x), self.net2(x)


class MAN(Method):
    """Mining Ambiguity and Noise (Zhang, Sun, Li, Wang; PRL 164, 2022), as its code does it."""

    display_name = "MAN"

    Config = MANConfig
    presets = {
        "paper": {"backbone": "resnet18", "image_size": 224, "batch_size": 128, "epochs": 100,
                  "lr": 1e-3, "weight_decay": 1e-4, "warmup_frac": 0.1, "optimizer": "adam",
                  "scheduler": "exponential", "lr_gamma": 0.9},
        # Two networks, and after warm-up a division pass and a strong view as well: two MAN
        # epochs after four of warm-up keep it to a few CPU minutes (README: Presets).
        "quick": {"backbone": "ferbench_resnet_tiny", "image_size": 48, "batch_size": 64,
                  "epochs": 6, "lr": 1e-3, "weight_decay": 1e-4, "warmup_frac": 0.67},
    }
    preset_sources = {"paper": "code", "quick": "ferbench"}

    def __init__(self, config):
        super().__init__(config)
        if not 0 <= config.warmup_frac < 1:
            raise ConfigError(f"man: warmup_frac must be in [0, 1), got {config.warmup_frac}")
        if config.lam_peak_frac <= 0:
            raise ConfigError(f"lam_peak_frac={config.lam_peak_frac!r}: must be above 0 (the "
                              f"ramp peaks at lam_peak_frac x epochs)")
        names = [view_name(v) for v in config.views]
        if sorted(names) != ["strong", "weak"]:
            raise ConfigError(f"man: views must be one 'weak' and one 'strong' view, got {names}")
        self._weak = config.views[names.index("weak")]
        self._subset: torch.Tensor | None = None    # long [N]: subset code per training sample
        self._score: torch.Tensor | None = None     # float [N]: 1 − ½[q1(y) + q2(y)]
        self._division_epoch = -1
        self._on_device: torch.Tensor | None = None
        self._head_seeds: list[int] = []

    # ---- building and predicting ---------------------------------------------------------
    def build(self, ctx):
        """Two backbones from `ctx.create_backbone()` (the config's weights in both)."""
        # The same weights in both when given; like the code, a face-recognition checkpoint's
        # own `feature.*` layer is skipped (the head is re-initialised anyway).
        nets = [ctx.create_backbone(ignore_keys=("feature.",)),
                ctx.create_backbone(ignore_keys=("feature.",))]
        # The code loads the checkpoint without its classifier: two random heads. Each head is
        # re-initialised under its own seed, drawn from the run's seeded stream.
        self._head_seeds = torch.randint(0, 2**31 - 1, (2,)).tolist()
        for net, seed in zip(nets, self._head_seeds):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net.reset_classifier(ctx.num_classes)
        return TwoNets(*nets)

    def predict(self, model, images):
        """Softmax of the mean logits (or the mean softmax); both networks as members."""
        l1, l2 = (t.float() for t in model(normalize(images)))
        members = torch.stack([l1.softmax(1), l2.softmax(1)], 1)
        probs = ((l1 + l2) / 2).softmax(1) if self.config.predict == "mean_logits" \
            else members.mean(1)
        return Prediction(probs=probs, members=members)

    def configure_optimizers(self, model, ctx):
        """The code's Adam over both networks, decayed by `lr_gamma` after every epoch."""
        cfg = self.config
        params = [p for p in model.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                  weight_decay=cfg.weight_decay, nesterov=True)
        else:  # the code's Adam: coupled L2 decay on every parameter of both networks
            cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
            opt = cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = (torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_gamma)
                 if cfg.scheduler == "exponential" else None)
        return [OptimizerSpec(opt, sched, "epoch")]

    # ---- training -------------------------------------------------------------------------
    def _lam(self, ctx) -> float:
        cfg = self.config
        return lam_schedule(ctx.epoch + 1, ctx.epochs, cfg.lam_max, cfg.lam_beta,
                            cfg.lam_peak_frac)

    def training_step(self, model, batch, ctx):
        """Warm-up CE, then L_clean + w_amb·L_amb + w_noisy·L_noisy over this epoch's subsets."""
        cfg, y = self.config, batch["label"]
        xw = normalize(batch["views"]["weak"])
        if ctx.epoch < warmup_epochs(ctx.epochs, cfg.warmup_frac):
            l1, l2 = model(xw)
            return ce_pair(l1.float(), l2.float(), y, cfg.label_smoothing).mean()
        xs = normalize(batch["views"]["strong"])
        b = len(y)
        joint = None
        if cfg.subset_forward == "joint":  # one forward per net, both views of the whole batch
            o1, o2 = (t.float() for t in model(torch.cat([xw, xs])))
            joint = (o1[:b], o2[:b], o1[b:], o2[b:])
        if cfg.division == "per_batch":
            if joint is not None:
                w1, w2 = joint[0].detach(), joint[1].detach()
            else:
                with torch.no_grad():
                    w1, w2 = (t.float() for t in model(xw))
            subset = self._record(batch["index"], w1, w2, y, len(ctx.train))
        else:
            subset = self._lookup(batch["index"], model, ctx)
        lam = self._lam(ctx)
        terms = {}
        for code in (CLEAN, NOISY, AMBIGUOUS):  # the code's order of forwards
            mask = subset == code
            if not bool(mask.any()):
                terms[code] = xw.new_zeros((), dtype=torch.float32)
                continue
            if joint is not None:
                w1, w2, s1, s2 = (t[mask] for t in joint)
            else:
                w1, w2 = (t.float() for t in model(xw[mask]))
                if code == NOISY:
                    s1, s2 = (t.float() for t in model(xs[mask]))
            if code == CLEAN:
                per = ce_pair(w1, w2, y[mask], cfg.label_smoothing)
            elif code == AMBIGUOUS:
                per = amb_loss(w1, w2, y[mask], lam, cfg.mutual_detach, cfg.label_smoothing)
            else:
                per = consistency(w1, s1, w2, s2)
            terms[code] = reduce_subset(per, b, cfg.subset_norm)
        for code, name in enumerate(SUBSETS):
            ctx.log(f"loss_{name}", terms[code].detach())
        return terms[CLEAN] + cfg.w_amb * terms[AMBIGUOUS] + cfg.w_noisy * terms[NOISY]

    def _lookup(self, index, model, ctx) -> torch.Tensor:
        """This epoch's subsets of the batch (the division pass runs if the epoch has none yet)."""
        if self._division_epoch != ctx.epoch or self._subset is None:
            self._divide(model, ctx)
        if self._on_device is None or self._on_device.device != index.device:
            self._on_device = self._subset.to(index.device)
        return self._on_device[index]

    def _record(self, index, l1, l2, y, n: int) -> torch.Tensor:
        """per_batch: divide the batch by this step's predictions and remember it per sample."""
        subset = divide(l1.argmax(1), l2.argmax(1), y, self.config.noisy_rule)
        qy = torch.stack([l1.softmax(1), l2.softmax(1)], 1).gather(
            2, y[:, None, None].expand(-1, 2, 1)).squeeze(2)
        if self._subset is None:
            self._subset = torch.full((n,), UNASSIGNED, dtype=torch.long)
            self._score = torch.full((n,), float("nan"))
        idx = index.cpu()
        self._subset[idx] = subset.cpu()
        self._score[idx] = (1 - qy.mean(1)).float().cpu()
        return subset

    def on_epoch_start(self, model, ctx, epoch):
        """per_epoch: divide the training set before the epoch's first step (code: eval_train)."""
        if self.config.division == "per_epoch" and \
                epoch >= warmup_epochs(ctx.epochs, self.config.warmup_frac):
            self._divide(model, ctx)

    @torch.no_grad()
    def _label_pass(self, model, ctx):
        """Both networks in eval mode over the training set on weak views: argmax and q_n(y)."""
        was = model.training
        model.eval()
        preds, qys = [], []
        try:
            for batch in ctx.iterate("train", views=(self._weak,), shuffle=False):
                with ctx.autocast():
                    l1, l2 = model(normalize(batch["views"]["weak"]))
                q = torch.stack([l1.float().softmax(1), l2.float().softmax(1)], 1)
                y = batch["label"]
                preds.append(q.argmax(2).cpu())
                qys.append(q.gather(2, y[:, None, None].expand(-1, 2, 1)).squeeze(2).cpu())
        finally:
            model.train(was)
        return torch.cat(preds), torch.cat(qys)

    def _divide(self, model, ctx) -> None:
        pred, qy = self._label_pass(model, ctx)
        self._subset = divide(pred[:, 0], pred[:, 1], ctx.train.labels.cpu(),
                              self.config.noisy_rule)
        self._score = 1 - qy.mean(1)
        self._division_epoch = ctx.epoch
        self._on_device = None

    def on_epoch_end(self, model, ctx, epoch):
        """Subset shares (history) and per-sample subset membership (.npz)."""
        n = len(ctx.train)
        if self._subset is None or epoch < warmup_epochs(ctx.epochs, self.config.warmup_frac):
            # warm-up: no division yet; NaN rows keep the .npz stack aligned with epochs
            return {f"in_{name}": PerSample(torch.full((n,), float("nan"))) for name in SUBSETS}
        out = {"lambda_amb": self._lam(ctx)}
        assigned = max(1, int((self._subset >= 0).sum()))
        for code, name in enumerate(SUBSETS):
            member = self._subset == code
            out[f"share_{name}"] = float(member.sum()) / assigned
            out[f"in_{name}"] = PerSample(member.float())
        return out

    # ---- what the harness reads after training --------------------------------------------
    def noise_scores(self, model, ctx):
        """1 − ½[q1(y) + q2(y)] from the last division (else from a fresh eval pass)."""
        score = self._score
        if score is None or bool(score.isnan().any()):
            _, qy = self._label_pass(model, ctx)
            fresh = 1 - qy.mean(1)
            score = fresh if score is None else torch.where(score.isnan(), fresh, score)
        return score

    def noise_decisions(self, model, ctx):
        """The noisy subset of the last division; None if no division ever ran."""
        return None if self._subset is None else self._subset == NOISY

    def extra_results(self) -> dict:
        return {"head_seeds": self._head_seeds}

    def state_dict(self) -> dict:
        return {"subset": self._subset, "score": self._score,
                "division_epoch": self._division_epoch}

    def load_state_dict(self, state: dict) -> None:
        self._subset, self._score = state.get("subset"), state.get("score")
        self._division_epoch = int(state.get("division_epoch", -1))
        self._on_device = None
