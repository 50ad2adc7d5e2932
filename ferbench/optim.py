"""The engine's default optimiser and schedule, public so a method with several networks
builds the same for each of them."""

from __future__ import annotations

import torch

from .method import OptimizerSpec


def default_optimizer(module: torch.nn.Module, config, total_steps: int) -> OptimizerSpec:
    """The optimiser and schedule the engine gives a method that configures none, for the
    trainable parameters of `module`, from the shared config keys.

    `optimizer`: adamw | adam | sgd (Nesterov, `momentum`); weight decay `weight_decay` on
    tensors of two or more dimensions, none on biases and norms. `scheduler`, stepped
    after every optimiser step over `total_steps` (usually epochs × ctx.steps_per_epoch):
    onecycle (cosine one-cycle to `lr`, warming up for the share `warmup`), cosine
    (cosine decay from `lr`), step (×0.1 at each third), none (constant `lr`).
    """
    cfg = config
    params = [p for p in module.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    elif cfg.optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=cfg.lr)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    steps = max(1, int(total_steps))
    sched = None
    if cfg.scheduler == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=steps, pct_start=max(1e-3, cfg.warmup),
            anneal_strategy="cos", cycle_momentum=False)
    elif cfg.scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    elif cfg.scheduler == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, steps // 3), gamma=0.1)
    return OptimizerSpec(opt, sched, "step")
