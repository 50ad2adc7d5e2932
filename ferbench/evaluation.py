"""What a trained model is scored by: predictions over whole splits (with the test-time flip),
and the size of what `predict` runs (parameters, FLOPs per image)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .context import SplitData
from .data.augment import apply_view
from .method import Prediction, check_prediction


class SplitPrediction(NamedTuple):
    """A method's predictions over a whole split, as numpy arrays."""

    probs: np.ndarray                  # [N, K]
    uncertainty: np.ndarray            # [N]: the method's own, or 1 − max probability
    members: np.ndarray | None         # [N, M, K]
    extras: dict[str, np.ndarray]      # name → [N, ...]
    own_uncertainty: bool              # whether the method gave `uncertainty`


class Evaluator:
    """Runs a method's `predict` over whole splits on the run's device and precision."""

    def __init__(self, method, ctx, channels_last: bool = False):
        self.method, self.ctx, self.channels_last = method, ctx, channels_last

    @property
    def tta_flip(self) -> bool:
        return bool(getattr(self.method.config, "tta_flip", False))

    def scored(self, model, data: SplitData) -> SplitPrediction:
        """The predictions a split is scored by: with `tta_flip`, the mean over each face and
        its mirror image (probabilities, and the method's own uncertainty where it gives one),
        so validation, per-epoch test and final test figures agree."""
        plain = self.predict_split(model, data)
        if not self.tta_flip:
            return plain
        mirror = self.predict_split(model, data, view="flip")
        probs = (plain.probs + mirror.probs) / 2
        unc = ((plain.uncertainty + mirror.uncertainty) / 2 if plain.own_uncertainty
               else 1 - probs.max(1))
        return plain._replace(probs=probs, uncertainty=unc)

    def accuracy(self, model, data: SplitData) -> tuple[float, np.ndarray]:
        """(accuracy against the split's labels, the scored probabilities)."""
        probs = self.scored(model, data).probs
        return float((probs.argmax(1) == data.labels.numpy()).mean()), probs

    @torch.no_grad()
    def predict_split(self, model, data: SplitData, view="none", batch_size=256
                      ) -> SplitPrediction:
        """Method predictions over a whole split (numpy), each batch checked against the
        contract.

        Each batch is copied into arrays of the split's size: a list of small per-batch
        tensors, allocated between the large temporaries of the next batch, pins freed
        heap memory and grows resident memory with the split.
        """
        model.eval()
        n = len(data)
        out: dict[str, np.ndarray] = {}
        extras: dict[str, np.ndarray] = {}

        def put(store, key, value, rows):
            value = value.float().cpu().numpy()
            if key not in store:
                store[key] = np.empty((n,) + value.shape[1:], dtype=np.float32)
            store[key][rows] = value

        gen = torch.Generator(device=self.ctx.device).manual_seed(0)
        for start in range(0, n, batch_size):
            rows = slice(start, min(n, start + batch_size))
            images = apply_view(view, data.raw(np.arange(rows.start, rows.stop)), gen)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with self.ctx.autocast():
                pred: Prediction = self.method.predict(model, images)
            check_prediction(pred, len(images), self.ctx.num_classes, self.method)
            put(out, "probs", pred.probs, rows)
            if pred.uncertainty is not None:
                put(out, "unc", pred.uncertainty, rows)
            if pred.members is not None:
                put(out, "members", pred.members, rows)
            for k, v in (pred.extras or {}).items():
                put(extras, k, v, rows)
        model.train()
        if not out:  # an empty split
            k = self.ctx.num_classes
            return SplitPrediction(np.zeros((0, k), np.float32), np.zeros(0, np.float32),
                                   None, {}, False)
        own = "unc" in out
        return SplitPrediction(out["probs"], out["unc"] if own else 1 - out["probs"].max(1),
                               out.get("members"), extras, own)

    def bind(self, model) -> None:
        """Let `ctx.train_predictions` run this model."""
        self.ctx.bind_predictor(lambda data, view: torch.from_numpy(
            self.predict_split(model, data, view).probs))

    def params(self, model) -> int:
        """Trainable-model parameters, frozen modules (teachers, text towers) left out."""
        frozen = {id(p) for m in self.ctx.frozen_modules for p in m.parameters()}
        return int(sum(p.numel() for p in model.parameters() if id(p) not in frozen))

    @torch.no_grad()
    def flops_per_image(self, model) -> float | None:
        """FLOPs per image of what `predict` runs, counted by torch's flop counter."""
        from torch.utils.flop_counter import FlopCounterMode

        model.eval()
        x = torch.rand(2, 3, self.ctx.image_size, self.ctx.image_size, device=self.ctx.device)
        try:
            with FlopCounterMode(display=False) as counter:
                self.method.predict(model, x)
            return counter.get_total_flops() / 2
        except Exception:
            return None
        finally:
            model.train()
