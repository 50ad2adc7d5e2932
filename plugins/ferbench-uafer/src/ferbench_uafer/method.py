"""UA-FER: a CLIP image tower fine-tuned against class-name text embeddings, with a global and a
local relation score, distillation to a frozen copy, and Dirichlet evidence for uncertainty.

Follows the official code (HaoliangZhou/UAFER); shared/methods/uafer.md and this plugin's
README give every switch and departure.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ferbench import (ConfigError, Method, MethodConfig, OptimizerSpec, Prediction, setting,
                      view_name)
from ferbench.nn import IMAGENET_MEAN, IMAGENET_STD, normalize

from .evidential import LOSSES, annealing, dirichlet, evidential_loss, kl_term
from .optim import freeze_first_layers, layer_groups, warmup_cosine
from .relation import distillation, relation_scores
from .towers import (Student, create_clip, load_clip, prompts, resolve_arch, tokenize,
                     wants_quick_gelu)

# The code's RAF-DB augmentation: resize and a horizontal flip, nothing else.
CODE_VIEWS = [["weak", {"pad": 0.0, "flip": True, "erase": 0.0}]]
# What each `edl_variant` sets for the keys left at "auto".
VARIANTS = {"code": {"evidence": "relu", "edl_loss": "mse_err", "kl_weight": 0.0},
            "edl_kl": {"evidence": "relu", "edl_loss": "digamma", "kl_weight": 1.0}}
RANDOM_TOWERS = ("uafer: no clip_weights, so both CLIP towers start from random weights: the "
                 "class prompts are random directions and the distillation (kd_weight={kd}) pins "
                 "the student to a random teacher; the paper fine-tunes OpenAI's ViT-B/16 "
                 "(clip_weights=PATH), and kd_weight=0 is the arm without the teacher")


@dataclass
class UAFERConfig(MethodConfig):
    """UA-FER's keys; defaults are the official code's RAF-DB script (train.sh)."""

    # An open_clip model name (or a model config .json), `clip:` marking it in the tables.
    backbone: str = "clip:ViT-B-16"
    clip_weights: str | None = None      # OpenAI's TorchScript .pt or an open_clip state dict
    quick_gelu: str = setting("auto", choices=("auto", "true", "false"))
    image_size: int = setting(224, low=8)
    epochs: int = setting(50, low=0)
    batch_size: int = setting(128, low=1)
    lr: float = setting(1e-4, low=0.0)
    min_lr: float = setting(1e-8, low=0.0)
    weight_decay: float = setting(5e-4, low=0.0)   # on parameters of two or more dimensions
    optimizer: str = setting("adamw", choices=("adamw",))
    scheduler: str = setting("warmup_cosine", choices=("warmup_cosine", "none"))
    warmup: float = setting(0.1, low=0.0, high=1.0)  # code: 5 of 50 epochs, per step
    layer_decay: float = setting(0.65, low=0.0, high=1.0)
    fix_layer: int = setting(2, low=-1)  # layer ids <= this stay frozen (-1: none)
    prompt: str = "{}"                   # code: the bare class word
    class_words: dict = field(default_factory=dict)  # canonical class -> word, over the code's
    topk: int = setting(16, low=1)
    alpha_local: float = setting(0.1, low=0.0, high=1.0)
    logit_scale: float = setting(1.0, low=0.0)
    edl_variant: str = setting("code", choices=tuple(VARIANTS))
    evidence: str = setting("auto", choices=("auto", "relu", "softplus", "exp"))
    edl_loss: str = setting("auto", choices=("auto", *LOSSES))
    kl_weight: float = setting(-1.0, low=-1.0)  # -1: the variant's (code 0, edl_kl 1)
    kl_anneal_epochs: int = setting(10, low=0)
    kd_weight: float = setting(1.0, low=0.0)
    kd_teacher_norm: bool = False        # code: the teacher's embedding is not normalised
    test_text_norm: bool = True          # departure: the code skips it at test (a mismatch)
    pixel_norm: str = setting("imagenet", choices=("imagenet", "clip"))
    views: list = field(default_factory=lambda: [list(v) for v in CODE_VIEWS])

    def __post_init__(self):
        self.quick_gelu = str(self.quick_gelu).lower()  # the command line's true reads as True
        super().__post_init__()
        resolve_arch(self.clip_arch)  # an unknown name fails before any run starts
        if self.kl_weight != -1.0 and self.kl_weight < 0:
            raise ConfigError(f"kl_weight={self.kl_weight}: must be >= 0 (or -1: the variant's)")

    @property
    def clip_arch(self) -> str:
        """The open_clip model name `backbone` gives."""
        name = str(self.backbone)
        return name[5:] if name.startswith("clip:") else name

    def resolved(self, key: str):
        """`evidence`, `edl_loss` or `kl_weight` as this run uses it."""
        value = getattr(self, key)
        return VARIANTS[self.edl_variant][key] if value in ("auto", -1.0) else value


class UAFERNet(nn.Module):
    """The trainable student tower, the frozen CLIP (teacher image tower and text tower,
    through `ctx.frozen`) and the class-prompt embeddings, computed once per run."""

    def __init__(self, student: Student, clip: nn.Module, text: torch.Tensor):
        super().__init__()
        self.student = student
        self.clip = clip
        # Not persistent: always CLIP's, never a checkpoint's or an earlier run's.
        self.register_buffer("text", text, persistent=False)

    def forward(self, x):
        return self.student(x)

    @torch.no_grad()
    def teacher(self, x):
        """The frozen tower's projected class token (what the code's teacher returns)."""
        return self.clip.visual(x)


class UAFER(Method):
    """UA-FER (Zhou, Huang, Xu; Neurocomputing 2024), as its official code does it."""

    display_name = "UA-FER"

    Config = UAFERConfig
    presets = {
        "paper": {"backbone": "clip:ViT-B-16", "image_size": 224, "batch_size": 128, "epochs": 50,
                  "lr": 1e-4, "weight_decay": 5e-4, "layer_decay": 0.65, "fix_layer": 2,
                  "warmup": 0.1, "topk": 16, "alpha_local": 0.1, "kd_weight": 1.0},
        # A 4-block ViT at 64 px, patch 8 (64 patches): top-5 of them per class; the embeddings
        # and the first block frozen (the code's 2 of 12, scaled). From random weights it
        # needs a larger rate than fine-tuning CLIP does (README: Presets).
        "quick": {"backbone": "clip:uafer-tiny", "image_size": 64, "batch_size": 32, "epochs": 3,
                  "lr": 1e-3, "topk": 5, "fix_layer": 1, "warmup": 0.1},
    }
    preset_sources = {"paper": "code", "quick": "ferbench"}
    pretrained_presets = ("paper",)
    timm_backbone = False  # open_clip towers, named by `backbone`

    def __init__(self, config):
        super().__init__(config)
        names = [view_name(v) for v in config.views]
        if names != ["weak"]:
            raise ConfigError(f"uafer: views must be one 'weak' view, got {names}")
        self.evidence = config.resolved("evidence")
        self.loss_form = config.resolved("edl_loss")
        self.kl_weight = float(config.resolved("kl_weight"))
        if config.pixel_norm == "imagenet":
            self._pixel_stats = (IMAGENET_MEAN, IMAGENET_STD)
        else:  # open_clip is loaded already: the config resolved its architecture
            from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

            self._pixel_stats = (OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
        self._info: dict = {}

    # ---- building and predicting ---------------------------------------------------------
    def build(self, ctx):
        cfg = self.config
        self._check_weights(ctx)
        arch = resolve_arch(cfg.clip_arch)
        quick_gelu = wants_quick_gelu(cfg.quick_gelu, arch, cfg.clip_weights)
        clip = create_clip(arch, ctx.image_size, quick_gelu)
        entry = load_clip(ctx, clip, cfg.clip_weights, arch)
        if cfg.clip_weights is None:
            from ferbench.progress import console

            console.print(RANDOM_TOWERS.format(kd=cfg.kd_weight), highlight=False)
        student = Student(copy.deepcopy(clip.visual))
        if cfg.topk > student.n_patches:
            raise ConfigError(f"uafer: topk={cfg.topk} but the tower sees only "
                              f"{student.n_patches} patches at {ctx.image_size} px")
        frozen = freeze_first_layers(student.visual, student.depth, cfg.fix_layer)
        if not any(p.requires_grad for p in student.parameters()):
            raise ConfigError(f"uafer: fix_layer={cfg.fix_layer} freezes every layer of the "
                              f"{student.depth}-block tower")
        clip = ctx.frozen(clip)
        texts = prompts(ctx.classes, cfg.prompt, cfg.class_words)
        tokens = tokenize(texts, int(clip.context_length)).to(ctx.device)
        with torch.no_grad():
            text = clip.encode_text(tokens).float()
        self._info = {"clip_arch": arch, "clip_weights": cfg.clip_weights,
                      "clip_init": entry.get("init"), "quick_gelu": quick_gelu,
                      "prompts": texts, "frozen_parameters": len(frozen),
                      "evidence": self.evidence, "edl_loss": self.loss_form,
                      "kl_weight": self.kl_weight}
        if cfg.clip_weights is None:
            self._info["warning"] = "random CLIP towers: far from the paper's setting"
        return UAFERNet(student, clip, text)

    def _check_weights(self, ctx):
        """`weights` restores an earlier uafer run's student; CLIP's own files go in
        clip_weights (the teacher and the text tower always come from CLIP)."""
        path = self.config.weights
        if path and not ctx.whole_model_weights:
            raise ConfigError(f"uafer: weights={path} is not a ferbench weights.pt of an "
                              f"earlier uafer run; a CLIP checkpoint goes in clip_weights")

    def _pixels(self, images):
        return normalize(images, *self._pixel_stats)

    def _logits(self, g, patches, text, train: bool):
        cfg = self.config
        scores = relation_scores(g, patches, text, cfg.topk, cfg.alpha_local,
                                 normalise_text=train or cfg.test_text_norm)
        return cfg.logit_scale * scores

    def predict(self, model, images):
        """p = alpha / S of the Dirichlet, its uncertainty u = K / S; S itself as an extra."""
        g, patches = model(self._pixels(images))
        _, s, p, u = dirichlet(self._logits(g, patches, model.text, train=False), self.evidence)
        return Prediction(probs=p, uncertainty=u, extras={"dirichlet_strength": s.squeeze(1)})

    # ---- training -------------------------------------------------------------------------
    def training_step(self, model, batch, ctx):
        """L_edl (+ the annealed KL term where set) + kd_weight · L_kd."""
        cfg = self.config
        x = self._pixels(batch["views"]["weak"])
        g, patches = model(x)
        alpha, _, _, u = dirichlet(self._logits(g, patches, model.text, train=True),
                                   self.evidence)
        y = F.one_hot(batch["label"], ctx.num_classes).float()
        loss = evidential_loss(alpha, y, self.loss_form).mean()
        ctx.log("loss_edl", loss.detach())
        ctx.log("train_u", u.detach())
        if self.kl_weight > 0:
            kl = self.kl_weight * annealing(ctx.epoch, cfg.kl_anneal_epochs) * \
                kl_term(alpha, y).mean()
            ctx.log("loss_kl", kl.detach())
            loss = loss + kl
        if cfg.kd_weight > 0:
            kd = distillation(g, model.teacher(x), cfg.kd_teacher_norm)
            ctx.log("loss_kd", kd.detach())
            loss = loss + cfg.kd_weight * kd
        return loss

    def configure_optimizers(self, model, ctx):
        """The code's AdamW: one group per layer id and decay, lr · layer_decay^(depth+1−id),
        the rate set every step (linear warm-up, then half-cosine to min_lr)."""
        cfg = self.config
        student = model.student
        groups = layer_groups(student.visual, student.depth, cfg.weight_decay, cfg.layer_decay)
        for g in groups:
            g["lr"] = cfg.lr * g["lr_scale"]
            g.pop("names")
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
        if cfg.scheduler == "none" or cfg.lr == 0:
            return [OptimizerSpec(opt)]
        spe, total = ctx.steps_per_epoch, float(ctx.epochs)
        warm, floor = cfg.warmup * total, cfg.min_lr / cfg.lr

        def factor(step: int) -> float:
            return warmup_cosine(step / spe, warm, total, 1.0, floor)

        return [OptimizerSpec(opt, torch.optim.lr_scheduler.LambdaLR(opt, factor), "step")]

    # ---- what the harness reads after training --------------------------------------------
    @torch.no_grad()
    def noise_scores(self, model, ctx):
        """u (label-free) and 1 − p(y) of the given label, from an eval pass over the
        training set without augmentation."""
        was = model.training
        model.eval()
        us, miss = [], []
        try:
            for batch in ctx.iterate("train", views=("none",)):
                with ctx.autocast():
                    pred = self.predict(model, batch["views"]["none"])
                us.append(pred.uncertainty.float().cpu())
                miss.append(1 - pred.probs.float().gather(1, batch["label"][:, None])
                            .squeeze(1).cpu())
        finally:
            model.train(was)
        return {"u": torch.cat(us), "1-p(y)": torch.cat(miss)}

    def extra_results(self) -> dict:
        return dict(self._info)
