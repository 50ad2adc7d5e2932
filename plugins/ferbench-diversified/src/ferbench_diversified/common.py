"""What ESR and MA-Net share as ferbench methods: the term's keys, its figures, the
training subset, noise scores and the best-ensemble-on-validation bookkeeping."""

from __future__ import annotations

import copy
from dataclasses import dataclass, make_dataclass

import timm
import torch

from ferbench import ConfigError, Method, MethodConfig, OptimizerSpec, capped_per_class, setting
from ferbench.progress import console

from .diversity import FORMS, NORMS, diversity_penalty, odd_branch_warning, per_sample_figures


@dataclass
class DiversifiedConfig(MethodConfig):
    """The diversity term's keys (diversified.md §4); the plain methods set the weight to 0."""

    diversity_weight: float = setting(1.0, low=0.0)    # code: 1 per term
    # logdet_unit (ferbench) | det_unit | det_zero_diag (the code's)
    diversity_form: str = setting("logdet_unit", choices=FORMS)
    kernel_bandwidth: float = setting(10.0, low=0.0)    # code: gamma = 10
    # none (code: raw tensors) | l2 | dim (d² over the tensor's size)
    feature_norm: str = setting("none", choices=NORMS)
    logdet_eps: float = setting(1e-6, low=0.0)
    # At most this many training images per class (the FERPlus and AffectNet recipes: 5000),
    # a fixed seeded subset; 0: all.
    cap_per_class: int = setting(0, low=0)
    # Reload the best ensemble on validation at the end of each phase (the code's); where
    # there is no validation split, the last epoch stands.
    keep_best: bool = True
    # sgd (the code's) | adamw
    optimizer: str = setting("sgd", choices=("sgd", "adamw"))
    # step (the code's: StepLR, per epoch) | onecycle (per step) | none
    scheduler: str = setting("step", choices=("step", "onecycle", "none"))
    lr_step_epochs: int = setting(10, low=1)
    lr_gamma: float = setting(0.5, low=0.0, high=1.0)


def make_optimizer(cfg, groups, epochs: int, steps_per_epoch: int) -> OptimizerSpec:
    """The code's SGD with momentum and StepLR every `lr_step_epochs` (stepped per epoch),
    or AdamW with a one-cycle schedule over `epochs` (stepped per step: the `quick` presets'
    choice, which trains these nets from scratch within a CPU minute where SGD does not)."""
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay)
    if cfg.scheduler == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in opt.param_groups],
            total_steps=max(1, epochs * steps_per_epoch), pct_start=cfg.warmup)
        return OptimizerSpec(opt, sched, "step")
    sched = (torch.optim.lr_scheduler.StepLR(opt, cfg.lr_step_epochs, cfg.lr_gamma)
             if cfg.scheduler == "step" else None)
    return OptimizerSpec(opt, sched, "epoch")


class DiversifiedMethod(Method):
    """The parts of ESR and MA-Net that do not depend on the architecture."""

    Config = DiversifiedConfig
    network_kind = "network"       # the timm class a `backbone` must build
    network_class: type = torch.nn.Module

    def __init__(self, config):
        super().__init__(config)
        self._best = None          # CPU copy of the model's state at the phase's best epoch
        self._best_acc = -1.0
        self._best_epoch = -1
        self._phase_log: list[dict] = []
        self._warned_no_val = False

    # ---- building ----------------------------------------------------------------------
    def _create(self, ctx, **kwargs):
        """The network named by `backbone`, refused in one line if it is not of our kind."""
        cfg = self.config
        kind = (f"{self.name}: backbone {cfg.backbone!r} is not {self.network_kind} "
                f"(ferbench_{self.network_kind.lower().replace('-', '')} or its _quarter size)")
        try:
            net = timm.create_model(cfg.backbone, pretrained=False, num_classes=ctx.num_classes,
                                    **kwargs)
        except TypeError:  # another family's constructor refuses this one's keywords
            raise ConfigError(kind) from None
        except RuntimeError as e:
            raise ConfigError(f"{self.name}: backbone {cfg.backbone!r}: {e}") from None
        if not isinstance(net, self.network_class):
            raise ConfigError(kind)
        return net

    def term(self, tensors) -> torch.Tensor:
        cfg = self.config
        return diversity_penalty(tensors, cfg.diversity_form, cfg.kernel_bandwidth,
                                 cfg.feature_norm, cfg.logdet_eps)

    def figures(self, branch_features, terms: dict) -> dict:
        """Per test face: the fixed similarity of the branches' features, and the mean
        off-diagonal kernel of every term in the term's own settings."""
        cfg = self.config
        out = {}
        if len(branch_features) >= 2:
            out.update(per_sample_figures(branch_features))
        for name, tensors in terms.items():
            if len(tensors) >= 2:
                out[f"kernel_{name}"] = per_sample_figures(
                    tensors, cfg.kernel_bandwidth, cfg.feature_norm)["kernel"]
        return {("sim_" + k if k in ("cosine", "kernel_l2") else k): v for k, v in out.items()}

    def warn_odd(self, n: int) -> None:
        if self.config.diversity_weight > 0 and n > 1:
            line = odd_branch_warning(self.config.diversity_form, n)
            if line:
                console.print(f"  {self.name}: {line}", highlight=False)

    # ---- training subset and best-on-validation ----------------------------------------
    def training_indices(self, ctx):
        cap = int(self.config.cap_per_class)
        return capped_per_class(ctx.train.labels, cap) if cap else None

    def on_phase_start(self, model, ctx, phase):
        self._best, self._best_acc, self._best_epoch = None, -1.0, -1
        if ctx.val is None and self.config.keep_best and not self._warned_no_val:
            self._warned_no_val = True
            console.print(f"  {self.name}: no validation split, so each phase ends with its "
                          f"last epoch, not the best ensemble on validation (add "
                          f"protocol.val_fraction=0.1)", highlight=False)

    def on_validation_end(self, model, ctx, epoch, metrics):
        # `>=` as the code: of equal accuracies the later epoch is kept.
        if self.config.keep_best and metrics["val_acc"] >= self._best_acc:
            self._best_acc, self._best_epoch = float(metrics["val_acc"]), int(epoch)
            self._best = {k: v.detach().to("cpu", copy=True)
                          for k, v in model.state_dict().items()}

    def on_phase_end(self, model, ctx, phase):
        entry = {"phase": phase.name, "epochs": phase.epochs}
        if self._best is not None:
            model.load_state_dict(self._best)
            entry.update(best_epoch=self._best_epoch, best_val_acc=self._best_acc)
        else:
            entry["kept"] = "last epoch"
        self._phase_log.append(entry)

    # ---- what the harness reads after training -----------------------------------------
    @torch.no_grad()
    def noise_scores(self, model, ctx):
        """1 − the mean over branches of p(given label), in eval mode on unaugmented faces."""
        was = model.training
        model.eval()
        out = []
        try:
            for batch in ctx.iterate("train", views=("none",)):
                with ctx.autocast():
                    members = self.predict(model, batch["views"]["none"]).members.float()
                y = batch["label"]
                out.append((1 - members.gather(2, y[:, None, None].expand(-1, members.shape[1],
                                                                           1)).mean(1)[:, 0]).cpu())
        finally:
            model.train(was)
        return torch.cat(out)

    def extra_results(self) -> dict:
        cfg = self.config
        out = {"diversity": {"weight": cfg.diversity_weight, "form": cfg.diversity_form,
                             "bandwidth": cfg.kernel_bandwidth, "feature_norm": cfg.feature_norm},
               "phases": copy.deepcopy(self._phase_log)}
        return out

    def state_dict(self) -> dict:
        return {"best": self._best, "best_acc": self._best_acc, "best_epoch": self._best_epoch,
                "phase_log": copy.deepcopy(self._phase_log)}

    def load_state_dict(self, state: dict) -> None:
        self._best = state.get("best")
        self._best_acc = float(state.get("best_acc", -1.0))
        self._best_epoch = int(state.get("best_epoch", -1))
        self._phase_log = list(state.get("phase_log", []))


def with_term_weight(method_cls: type, name: str, weight: float, doc: str,
                     display_name: str) -> type:
    """`method_cls` registered as `name` with `diversity_weight` defaulting to `weight`: the
    plain method and its `-div` twin are the same code (the paper's ablation)."""
    config = make_dataclass(f"{method_cls.Config.__name__}_{name.replace('-', '_')}",
                            [("diversity_weight", float, setting(weight, low=0.0))],
                            bases=(method_cls.Config,))
    return type(f"{method_cls.__name__}_{name.replace('-', '_')}", (method_cls,),
                {"name": name, "Config": config, "__doc__": doc, "display_name": display_name,
                 "__module__": method_cls.__module__})

