"""A run's per-epoch checkpoint: what `--resume` continues from, and the trainable state."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


def save_checkpoint(folder: Path | None, model, specs, method, ctx, state: dict) -> None:
    """Model, optimisers, schedulers, the method's own state, random streams and `state`
    (the loop's: epoch, history, ...), written under a temporary name and renamed."""
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        **state,
        "model": trainable_state(model, ctx.frozen_modules),
        "optimizers": [s.optimizer.state_dict() for s in specs],
        "schedulers": [s.scheduler.state_dict() if s.scheduler is not None else None
                       for s in specs],
        "method": method.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                "python": random.getstate(), "ctx_gen": ctx.generator.get_state()},
    }
    tmp = folder / "checkpoint.pt.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, folder / "checkpoint.pt")


def load_checkpoint(folder: Path | None) -> dict | None:
    """The checkpoint in `folder`, or None where there is none."""
    path = folder / "checkpoint.pt" if folder else None
    if path is None or not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def restore(ckpt: dict, model, specs, method, frozen=()) -> None:
    """Model, optimisers, schedulers and the method's state from a checkpoint."""
    load_trainable_state(model, ckpt["model"], frozen)
    for s, st in zip(specs, ckpt["optimizers"]):
        s.optimizer.load_state_dict(st)
    for s, st in zip(specs, ckpt["schedulers"]):
        if s.scheduler is not None and st is not None:
            s.scheduler.load_state_dict(st)
    method.load_state_dict(ckpt["method"])


def _frozen_prefixes(model, frozen) -> tuple[str, ...]:
    ids = {id(m) for m in frozen}
    return tuple(f"{name}." for name, m in model.named_modules() if id(m) in ids and name)


def trainable_state(model, frozen=()) -> dict:
    """The model's state without frozen modules (teachers, text towers): what checkpoints hold."""
    prefixes = _frozen_prefixes(model, frozen)
    return {k: v for k, v in model.state_dict().items() if not k.startswith(prefixes or ("\0",))}


def load_trainable_state(model, state, frozen=()) -> None:
    """Load a `trainable_state`; only frozen modules' keys may be absent."""
    prefixes = _frozen_prefixes(model, frozen)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(prefixes or ("\0",))]
    if missing or unexpected:
        raise RuntimeError(f"state does not fit the model: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
