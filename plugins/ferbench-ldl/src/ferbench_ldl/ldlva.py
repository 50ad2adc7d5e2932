"""LDLVA: uncertainty-aware label distribution learning (Le et al., WACV 2023).

Follows the official code (minhnhatvt/label-distribution-learning-fer-tf) as
shared/methods/ldl.md describes it; the plugin README lists every departure.

Per step: the neighbours' predictions p_j and features f_j (constants), the image's own
f_i and p_i; a calibration score c_ij = sigmoid(max(g(f_i, f_j), clamp)); weights
w_ij = a_ij · c_ij (a_ij the Laplacian kernel in the auxiliary space); the aggregate
d̃_i = Σ w_ij p_j / Σ w_ij; λ_i = sigmoid(θ_i), the trust in the given label; the target
t_i = λ_i · onehot(y_i) + (1 − λ_i) · d̃_i, not detached, so cross-entropy to it trains θ
and g; plus the discriminative centre loss, whose centres move by their own pull and push.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ferbench import ConfigError, OptimizerSpec, PerSample, setting

from .common import (
    QUICK,
    NeighbourConfig,
    NeighbourMethod,
    class_weights,
    is_int,
    is_list,
    onehot,
)


@dataclass
class LDLVAConfig(NeighbourConfig):
    """LDLVA's keys; defaults are the official code's RAF-DB ResNet-18 setting."""

    aux_space: str = "va"                            # a space's name (README: spaces)
    calib_hidden: list = field(default_factory=lambda: [512, 256])
    calib_clamp: float = -1.3                        # g ≥ −1.3 → c ∈ [0.214, 1)
    lambda_init_logit: float = 0.5                   # θ₀ (AffectNet: 0.8)
    lambda_lr: float = setting(10.0, low=0.0)        # θ's own SGD
    lambda_momentum: float = setting(0.0, low=0.0, high=1.0)   # AffectNet: 0.9
    target_detach: bool = False                      # code: the target keeps its gradient
    class_weights: str = setting("none", choices=("none", "balanced"))
    dc_weight: float = setting(0.01, low=0.0)        # centre-loss weight
    centre_lr: float = setting(0.5, low=0.0)         # the centres' two manual SGD steps
    centre_push: float = setting(0.1, low=0.0)       # weight of the push term between centres

    def __post_init__(self):
        super().__post_init__()
        if not is_list(self.calib_hidden) or not all(is_int(h) and h >= 1
                                                     for h in self.calib_hidden):
            raise ConfigError(f"calib_hidden={self.calib_hidden!r}: must be a list of layer "
                              f"widths, integers >= 1")

    def space_keys(self):
        return ["aux_space"]


class RowSGD(torch.optim.Optimizer):
    """SGD on the rows of one tensor that a step touched (the batch's θ), with momentum
    kept per row and applied only when its row is touched: Keras's update of a gathered
    (sparse) variable, v ← m·v − lr·g, θ ← θ + v, on those rows only. With momentum 0 it
    is plain SGD. `rows()` gives the touched rows of the step."""

    def __init__(self, param, lr: float, momentum: float, rows):
        super().__init__([param], {"lr": lr, "momentum": momentum})
        self._rows = rows

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                rows = torch.unique(self._rows())
                g = p.grad[rows]
                if group["momentum"]:
                    buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                    buf[rows] = group["momentum"] * buf[rows] - group["lr"] * g
                    p[rows] += buf[rows]
                else:
                    p[rows] -= group["lr"] * g


def build_target(lam: torch.Tensor, labels: torch.Tensor, aggregate: torch.Tensor) -> torch.Tensor:
    """t = λ · onehot(y) + (1 − λ) · d̃: λ = 1 gives the label, λ = 0 the aggregate."""
    lam = lam[:, None]
    return lam * onehot(labels, aggregate.shape[1]) + (1 - lam) * aggregate


def aggregate(kernel: torch.Tensor, calib: torch.Tensor, neighbour_probs: torch.Tensor):
    """d̃_i = Σ_j w_ij p_j / Σ_j w_ij with w = a · c: [B, K] weights, [B, K, C] → [B, C]."""
    w = kernel * calib
    return (w[..., None] * neighbour_probs).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-12)


def calibration(calib_net, f_main: torch.Tensor, f_neigh: torch.Tensor, clamp: float):
    """c_ij = sigmoid(max(g([f_i, f_j]), clamp)) for [B, D] and [B, K, D] → [B, K]."""
    b, k, d = f_neigh.shape
    pair = torch.cat([f_main[:, None].expand(b, k, d), f_neigh], -1).reshape(b * k, 2 * d)
    return torch.sigmoid(calib_net(pair).float().clamp_min(clamp)).view(b, k)


def centre_loss(feats, labels, weights, centres):
    """½ Σ_n sg(λ_n) ‖f_n − c_{y_n}‖² / n over main and neighbour features."""
    return 0.5 * (weights * (feats - centres[labels]).pow(2).sum(1)).sum() / len(feats)


@torch.no_grad()
def update_centres(centres, feats, labels, weights, lr: float, push: float) -> None:
    """The code's two SGD steps on the centres (in place): the pull, with gradient
    −Σ_{n: y_n = c} λ_n (f_n − c) / (n_c + 1) / n; then the push, the gradient of
    push · Σ_{c<c'} exp(−‖c − c'‖² / D)."""
    k, d = centres.shape
    n = len(feats)
    diff = feats - centres[labels]                                 # [n, D]
    pull = torch.zeros_like(centres).index_add_(0, labels, weights[:, None] * diff)
    count = torch.bincount(labels, minlength=k).float()[:, None]
    centres.add_(lr * pull / (count + 1) / n)                      # c − lr · grad
    with torch.enable_grad():
        c = centres.detach().clone().requires_grad_(True)
        sq = torch.cdist(c, c).pow(2)
        pairs = torch.triu(torch.ones(k, k, dtype=torch.bool, device=c.device), 1)
        energy = push * torch.exp(-sq[pairs] / d).sum()
        (grad,) = torch.autograd.grad(energy, c)
    centres.sub_(lr * grad)


class LDLVA(NeighbourMethod):
    display_name = "LDLVA"
    Config = LDLVAConfig
    presets = {
        # The code's RAF-DB ResNet-18 setting (ldl.md §3): Adam 1e-3, ×0.1 at 10/20/40,
        # 60 epochs, batch 32, 224 px, K 8.
        "paper": {},
        # A CPU minute or two on synthfer: its drawn landmarks as the space, the cache pass.
        "quick": {**QUICK, "aux_space": "landmarks", "calib_hidden": [64, 32]},
    }
    preset_sources = {"paper": "code", "quick": "ferbench"}
    pretrained_presets = ("paper",)

    @property
    def calib_hidden(self):
        return list(self.config.calib_hidden)

    def space_specs(self):
        return [self.config.aux_space]

    def build(self, ctx):
        model = super().build(ctx)
        cfg = self.config
        n = len(ctx.train)
        self.theta = torch.full((n,), float(cfg.lambda_init_logit), device=ctx.device,
                                requires_grad=True)
        self.centres = torch.zeros(ctx.num_classes, model.head.in_features, device=ctx.device)
        self.weights = class_weights(self.labels, ctx.num_classes, cfg.class_weights)
        # The last target built for each sample (its label until then): the harness scores
        # these against the ground-truth distributions it holds back.
        self.targets = onehot(self.labels, ctx.num_classes)
        return model

    def configure_optimizers(self, model, ctx):
        cfg = self.config
        return [self.main_optimizer(model, ctx),
                OptimizerSpec(RowSGD(self.theta, cfg.lambda_lr, cfg.lambda_momentum,
                                     lambda: self._step_rows))]

    def training_step(self, model, batch, ctx):
        cfg = self.config
        view = self.main_view(batch)
        index, y = batch["index"], batch["label"]
        self._step_rows = index  # the θ rows this step's gradient touches
        p_nb, f_nb, n_idx = self.neighbour_outputs(model, batch, view)
        f, logits = model(self.norm(batch["views"][view]))
        f = f.float()
        p = logits.float().softmax(1)
        c = calibration(model.calib, f, f_nb, cfg.calib_clamp)
        d = aggregate(self.kernel[index], c, p_nb)
        lam = torch.sigmoid(self.theta[index])
        t = build_target(lam, y, d)
        if cfg.target_detach:
            t = t.detach()
        l_cls = (self.weights[y] * -(t * torch.log(p + 1e-10)).sum(1)).mean()
        # Centre loss on main and neighbour features with their given labels.
        feats = torch.cat([f, f_nb.flatten(0, 1)])
        labels = torch.cat([y, self.labels[n_idx].flatten()])
        lam_all = torch.sigmoid(torch.cat([self.theta[index], self.theta[n_idx].flatten()]))
        lam_all = lam_all.detach()
        l_dc = centre_loss(feats, labels, lam_all, self.centres)
        update_centres(self.centres, feats.detach(), labels, lam_all, cfg.centre_lr,
                       cfg.centre_push)
        self.remember(index, p, f)
        self.targets[index] = t.detach()
        ctx.log("loss_cls", l_cls)
        ctx.log("loss_dc", l_dc)
        ctx.log("lambda_batch", lam)
        ctx.log("calibration", c)
        return l_cls + cfg.dc_weight * l_dc

    def lambdas(self) -> torch.Tensor:
        return torch.sigmoid(self.theta.detach()).cpu()

    def on_epoch_end(self, model, ctx, epoch):
        lam = self.lambdas()
        # A copy: on the CPU `.cpu()` is the very tensor the next epoch's steps write into,
        # and every epoch's entry would end up as the last one.
        return {"lambda_mean": float(lam.mean()), "lambda": PerSample(lam),
                "target": PerSample(self.targets.detach().cpu().clone(), distribution=True)}

    def noise_scores(self, model, ctx):
        # Fixed before any result was seen: 1 − λ is the headline; 1 − p(y) and the
        # training-free kNN vote in the same space are the floors beside it.
        return {"1-lambda": 1 - self.lambdas(), **self.graph_noise_scores(ctx)}

    def extra_results(self):
        lam = self.lambdas()
        return {**super().extra_results(),
                "lambda": {"mean": float(lam.mean()), "min": float(lam.min()),
                           "max": float(lam.max())}}

    def state_dict(self):
        return {**super().state_dict(), "theta": self.theta.detach().cpu(),
                "centres": self.centres.cpu(), "targets": self.targets.cpu()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        for name in ("theta", "centres", "targets"):
            self.restore(name, state[name])


__all__ = ["LDLVA", "LDLVAConfig", "ConfigError"]
