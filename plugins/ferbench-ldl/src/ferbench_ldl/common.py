"""What LDLVA and LDL-ALSG share: the network, the neighbour graph and the neighbour pass.

Both look at each training image's neighbours in an auxiliary space, found once in
`build`, and need those neighbours' predictions at every step. `neighbour_pass` says how:
`forward` fetches the neighbours with each batch (`batch_companions`), augments them and
runs a fresh forward without gradients in train mode, so they update BatchNorm's
statistics (LDLVA's official code); `cache` reads a per-sample memory of predictions and
features, refreshed whenever a sample is a main image (about 1 + K times cheaper).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ferbench import ConfigError, Method, MethodConfig, OptimizerSpec, Prediction, setting
from ferbench import split_epochs
from ferbench.nn import normalize

from .graph import Graph, build_graph, knn_disagreement
from .spaces import check_spec, space_points

# What both methods' `quick` presets share: a CPU minute or two on synthfer, its drawn
# landmarks as the space (each method names it in its own key), the cache pass, K 4.
QUICK = {"backbone": "ferbench_resnet_tiny", "image_size": 48, "epochs": 8,
         "batch_size": 64, "lr": 3e-3, "optimizer": "adamw", "weight_decay": 5e-4,
         "adam_eps": 1e-8, "scheduler": "onecycle", "feature_dim": None, "k": 4,
         "neighbour_pass": "cache", "pixel_norm": "imagenet", "views": ["weak"],
         "neighbour_views": None}


@dataclass
class NeighbourConfig(MethodConfig):
    """Keys both methods share; defaults are LDLVA's official code (RAF-DB, ResNet-18)."""

    backbone: str = "resnet18"
    image_size: int = setting(224, low=8)
    epochs: int = setting(60, low=0)
    batch_size: int = setting(32, low=1)
    lr: float = setting(1e-3, low=0.0)
    optimizer: str = setting("adam", choices=("adam", "adamw", "sgd"))
    weight_decay: float = setting(0.0, low=0.0)   # the code's head L2 term is never added
    # step: ×lr_gamma at lr_milestones, per epoch (code); onecycle: the baseline's quick
    # schedule (warm-up share `warmup`), per step, for a comparison at the same recipe.
    scheduler: str = setting("step", choices=("step", "onecycle", "none"))
    # Epochs (as fractions of `epochs`) where the rate is multiplied by lr_gamma: the
    # code's 10, 20, 40 of 60.
    lr_milestones: list = field(default_factory=lambda: [1 / 6, 1 / 3, 2 / 3])
    lr_gamma: float = setting(0.1, low=0.0)
    # The pooled feature's width; None: the backbone's own. Where the two differ a linear
    # embedding is added (the code's ResNet-50 512-d embedding).
    feature_dim: int | None = 512
    pixel_norm: str = setting("pm1", choices=("pm1", "imagenet"))  # pm1: x/127.5 − 1 (code)
    k: int = setting(8, low=1)                      # neighbours per image
    aux_tau: float = setting(0.5, low=1e-6)         # Laplacian kernel exp(−d₁/τ)
    # Distances divided by the median K-th-neighbour distance before the kernel: None, the
    # space's own rule (False for valence-arousal and votes, True for the others).
    aux_relative: bool | None = None
    aux_dims: int | None = setting(32, low=1)       # PCA of wider spaces before the search
    aux_backbone: str | None = None                 # for embed:PATH (see the README)
    neighbour_pass: str = setting("forward", choices=("forward", "cache"))
    # The code's training augmentation: h-flip, 8 px zero pad of 224 and random crop,
    # random erasing with p 0.5 (ferbench's batched `weak` view with those values).
    views: list = field(default_factory=lambda: [["weak", {"pad": 0.036, "flip": True,
                                                           "erase": 0.5}]])
    # The neighbours' augmentation in the `forward` pass: the code flips, pads and crops
    # them but never erases them. None: the same as `views`.
    neighbour_views: list | None = field(default_factory=lambda: [
        ["weak", {"pad": 0.036, "flip": True, "erase": 0.0}]])
    adam_eps: float = setting(1e-7, low=0.0)        # Keras's Adam epsilon (code)

    def __post_init__(self):
        super().__post_init__()
        # What a declared range cannot say (None allowed, the items of a list), refused
        # here, before a run writes anything, rather than as a tensor error in `build`.
        if self.feature_dim is not None and not (is_int(self.feature_dim)
                                                 and self.feature_dim >= 1):
            raise ConfigError(f"feature_dim={self.feature_dim!r}: must be an integer >= 1, or "
                              f"null for the backbone's own width")
        if not is_list(self.lr_milestones) or not all(
                is_number(f) and 0 < f < 1 for f in self.lr_milestones):
            raise ConfigError(f"lr_milestones={self.lr_milestones!r}: must be a list of "
                              f"fractions of `epochs` in (0, 1)")
        for key in self.space_keys():
            value = getattr(self, key)
            for spec in value if is_list(value) else [value]:
                check_spec(f"{key}={value!r}", spec)

    def space_keys(self) -> list[str]:
        """The keys naming auxiliary spaces (one space or a list of them)."""
        return []


def is_int(v) -> bool:
    """An integer, not a bool (YAML's `true` is an int to Python)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    """An integer or a float, not a bool."""
    return is_int(v) or isinstance(v, float)


def is_list(v) -> bool:
    """A list value as a config holds it."""
    return isinstance(v, (list, tuple))


def milestones(epochs: int, fractions) -> list[int]:
    """Milestone epochs at the given fractions of a run, none rounded away (split_epochs)."""
    fr = sorted(float(f) for f in fractions)
    if not fr or epochs < 2:
        return []
    stages = split_epochs(epochs, [b - a for a, b in zip([0.0] + fr, fr + [1.0])])
    out, at = [], 0
    for s in stages[:-1]:
        at += s
        out.append(at)
    # A run shorter than its stages: a repeated milestone would decay the rate twice at once
    # and one at epoch 0 before training starts, so keep the distinct ones inside the run.
    return sorted({min(max(m, 1), epochs - 1) for m in out})


def he_normal(layer: nn.Linear) -> nn.Linear:
    """Keras's HeNormal: a normal truncated at two deviations, std √(2 / fan_in); zero bias."""
    std = (2.0 / layer.in_features) ** 0.5
    nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(layer.bias)
    return layer


class FeatureNet(nn.Module):
    """Backbone → pooled feature f → linear head; optionally LDLVA's calibration net g."""

    def __init__(self, backbone: nn.Module, num_classes: int, feature_dim: int | None,
                 calib_hidden=None):
        super().__init__()
        self.backbone = backbone
        width = backbone.num_features
        dim = feature_dim or width
        self.embed = nn.Linear(width, dim) if dim != width else nn.Identity()
        self.head = he_normal(nn.Linear(dim, num_classes))
        self.calib = None
        if calib_hidden is not None:
            # The code's Keras layers: He-normal hidden layers, BatchNorm with eps 1e-3, a
            # Glorot-uniform output, zero biases.
            layers, d = [], 2 * dim
            for h in calib_hidden:
                layers += [he_normal(nn.Linear(d, h)), nn.BatchNorm1d(h, eps=1e-3),
                           nn.ReLU(inplace=True)]
                d = h
            out = nn.Linear(d, 1)
            nn.init.xavier_uniform_(out.weight)
            nn.init.zeros_(out.bias)
            self.calib = nn.Sequential(*layers, out)

    def forward(self, x):
        f = self.embed(self.backbone(x))
        return f, self.head(f)


class NeighbourMethod(Method):
    """The shared machinery; subclasses give the loss."""

    Config = NeighbourConfig

    # ---- what subclasses say -----------------------------------------------------------
    def space_specs(self) -> list[str]:
        raise NotImplementedError

    def space_ks(self) -> list[int]:
        return [int(self.config.k)] * len(self.space_specs())

    calib_hidden = None

    # ---- build ---------------------------------------------------------------------------
    def build(self, ctx):
        cfg = self.config
        if ctx.train.labels is None:
            raise ConfigError(f"{type(self).__name__} trains on labels; this split has none")
        self.graphs: list[Graph] = []
        self.space_info = []
        for spec, k in zip(self.space_specs(), self.space_ks()):
            pts, space = space_points(ctx, spec, cfg)
            relative = space.relative if cfg.aux_relative is None else bool(cfg.aux_relative)
            if k >= len(ctx.train):
                raise ConfigError(f"k={k} neighbours, but the training set has only "
                                  f"{len(ctx.train)} samples")
            graph = build_graph(pts, k, float(cfg.aux_tau), relative, cfg.aux_dims)
            self.graphs.append(graph)
            self.space_info.append({"space": spec, "dim": int(pts.shape[1]), "k": k,
                                    "relative": relative, "distance_scale": graph.scale,
                                    "kernel_mean": float(graph.kernel.mean()),
                                    "graph_digest": graph.digest(),
                                    "label_carrying": space.label_carrying})
        self.neighbours = torch.cat([g.neighbours for g in self.graphs], 1)      # CPU [N, C]
        self.kernel = torch.cat([g.kernel for g in self.graphs], 1).to(ctx.device)
        self.labels = ctx.train.labels.to(ctx.device)
        self._num_classes = ctx.num_classes
        backbone = ctx.create_backbone()
        backbone.reset_classifier(0)
        model = FeatureNet(backbone, ctx.num_classes, cfg.feature_dim, self.calib_hidden)
        n, dim = len(ctx.train), model.head.in_features
        # The cache pass's memory; filled by an eval pass before the first epoch.
        self.p_mem = torch.full((n, ctx.num_classes), 1.0 / ctx.num_classes, device=ctx.device)
        self.f_mem = torch.zeros(n, dim, device=ctx.device)
        self.mem_ready = torch.zeros((), dtype=torch.bool)
        return model

    @property
    def companion_views(self):
        views = self.config.neighbour_views
        return [v if isinstance(v, str) else list(v) for v in views] if views else None

    def batch_companions(self, index):
        # Only the `forward` pass fetches neighbours with the batch.
        return self.neighbours[index.cpu()] if self.config.neighbour_pass == "forward" else None

    def norm(self, x):
        return x * 2 - 1 if self.config.pixel_norm == "pm1" else normalize(x)

    def main_view(self, batch) -> str:
        return next(iter(batch["views"]))

    def neighbour_outputs(self, model, batch, view):
        """Predictions [B, C, K] and features [B, C, D] of each main image's neighbours, as
        constants, and the neighbours' positions [B, C]."""
        index = batch["index"]
        if self.config.neighbour_pass == "forward":
            comp = batch["companions"]
            b, c = comp["index"].shape
            images = next(iter(comp["views"].values()))  # the neighbours' one view
            with torch.no_grad():  # train mode: BatchNorm statistics move, as in the code
                f, logits = model(self.norm(images.flatten(0, 1)))
            return (logits.float().softmax(1).view(b, c, -1), f.float().view(b, c, -1),
                    comp["index"])
        nidx = self.neighbours[index.cpu()].to(index.device)
        return self.p_mem[nidx], self.f_mem[nidx], nidx

    def remember(self, index, probs, feats):
        if self.config.neighbour_pass == "cache":
            self.p_mem[index] = probs.detach().float()
            self.f_mem[index] = feats.detach().float()

    def on_epoch_start(self, model, ctx, epoch):
        if self.config.neighbour_pass == "cache" and not bool(self.mem_ready):
            self.fill_memory(model, ctx)

    @torch.no_grad()
    def fill_memory(self, model, ctx):
        """The memory's first contents: one eval pass over the training images."""
        model.eval()
        for batch in ctx.iterate("train", views=("none",), batch_size=256):
            with ctx.autocast():
                f, logits = model(self.norm(batch["views"]["none"]))
            self.p_mem[batch["index"]] = logits.float().softmax(1)
            self.f_mem[batch["index"]] = f.float()
        model.train()
        self.mem_ready.fill_(True)

    # ---- training pieces -------------------------------------------------------------------
    def main_params(self, model):
        return [p for p in model.parameters() if p.requires_grad]

    def main_optimizer(self, model, ctx) -> OptimizerSpec:
        cfg = self.config
        params = self.main_params(model)
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                  weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                    eps=cfg.adam_eps)
        else:
            opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                   eps=cfg.adam_eps)
        if cfg.scheduler == "onecycle":
            steps = max(1, ctx.epochs * ctx.steps_per_epoch)
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=cfg.lr, total_steps=steps, pct_start=max(1e-3, cfg.warmup))
            return OptimizerSpec(opt, sched, interval="step")
        sched = None
        if cfg.scheduler == "step":
            sched = torch.optim.lr_scheduler.MultiStepLR(
                opt, milestones(ctx.epochs, cfg.lr_milestones), gamma=cfg.lr_gamma)
        return OptimizerSpec(opt, sched, interval="epoch")

    # ---- evaluation ----------------------------------------------------------------------
    def predict(self, model, images):
        _, logits = model(self.norm(images))
        return Prediction(probs=logits.float().softmax(1))

    def graph_noise_scores(self, ctx) -> dict:
        """`1-p(y)` of the model and the training-free kNN-vote floor of the first space."""
        probs = ctx.train_predictions("none")
        y = ctx.train.labels.cpu()
        return {"1-p(y)": 1 - probs[torch.arange(len(y)), y],
                "knn-disagree": knn_disagreement(self.graphs[0], y)}

    def extra_results(self):
        return {"neighbour_pass": self.config.neighbour_pass, "spaces": self.space_info}

    def state_dict(self):
        return {"p_mem": self.p_mem.cpu(), "f_mem": self.f_mem.cpu(),
                "mem_ready": bool(self.mem_ready), "graphs": self.graph_digests()}

    def graph_digests(self) -> list[str]:
        return ([g.digest() for g in self.graphs] if hasattr(self, "graphs")
                else list(getattr(self, "_loaded_digests", [])))

    def load_state_dict(self, state):
        if hasattr(self, "graphs") and state.get("graphs") != self.graph_digests():
            raise ConfigError("the auxiliary space changed since the interrupted run (its "
                              "neighbour graph differs): rerun without --resume")
        self._loaded_digests = list(state.get("graphs", []))
        self.restore("p_mem", state["p_mem"])
        self.restore("f_mem", state["f_mem"])
        self.restore("mem_ready", torch.tensor(bool(state["mem_ready"])))

    def restore(self, name: str, value: torch.Tensor) -> None:
        """Into the tensor `build` made, in place (an optimiser may hold it); before
        `build`, as it is."""
        current = getattr(self, name, None)
        if current is None:
            setattr(self, name, value.clone())
            return
        with torch.no_grad():
            current.copy_(value)


def class_weights(labels: torch.Tensor, k: int, rule: str) -> torch.Tensor:
    """Per-class loss weights: `none` all 1; `balanced` N / (K · n_c), as scikit-learn's."""
    if rule == "none":
        return torch.ones(k, device=labels.device)
    counts = torch.bincount(labels, minlength=k).float()
    return torch.where(counts > 0, len(labels) / (k * counts.clamp_min(1)),
                       torch.zeros_like(counts))


def onehot(labels, k):
    return F.one_hot(labels, k).float()
