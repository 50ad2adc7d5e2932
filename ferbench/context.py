"""`RunContext`: everything a method may see and use during a run (DESIGN.md section 4)."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from queue import Queue

import numpy as np
import torch

from .data.augment import apply_view
from .data.feeder import ImageFeeder
from .device import autocast


@dataclass
class SplitData:
    """A split as the method sees it: ids, visible labels, permitted extras, cached images."""

    name: str
    ids: Sequence[str]                   # a tuple, or for large generated sets `NumberedIds`
    labels: torch.Tensor | None          # None for the test split: no method sees test labels
    extras: dict[str, torch.Tensor]
    cache: np.ndarray                    # uint8 [N, S, S, C], memory-mapped
    _ctx: "RunContext" = field(repr=False, default=None)
    _feeder: ImageFeeder | None = field(repr=False, default=None)

    @property
    def size(self) -> int:
        return len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def raw(self, indices) -> torch.Tensor:
        """Cached uint8 images [B, S, S, C] on the run's device."""
        if self._feeder is None or self._feeder.device != self._ctx.device:
            self._feeder = ImageFeeder(self.cache, self._ctx.device)
        return self._feeder.gather(indices)

    def images(self, indices, view="none") -> torch.Tensor:
        """Augmented float images [B, 3, S, S] in [0, 1] of any samples, in one view."""
        return apply_view(view, self.raw(indices), self._ctx.generator)


class RunContext:
    """The run as a method sees it. Built by the engine; methods read it, never write files."""

    def __init__(self, *, classes, image_size, device, precision, train, val, test, epochs,
                 batch_size, generator, create_backbone, predict_fn):
        self.classes = tuple(classes)
        self.class_names = self.classes
        self.num_classes = len(self.classes)
        self.image_size = image_size
        self.device = device
        self.precision = precision
        self.train: SplitData = train
        self.val: SplitData | None = val
        self._test = test
        self.epochs = epochs
        self.batch_size = batch_size
        self.steps_per_epoch = max(1, len(train) // batch_size)
        self.generator = generator  # on the run's device: augmentation parameters
        self.order_generator = torch.Generator()  # on the CPU: shuffled passes
        self._create_backbone = create_backbone
        self._predict_fn = predict_fn
        self.epoch = 0
        self.phase = None
        self.frozen_modules: list[torch.nn.Module] = []
        self._logs: dict[str, list[float]] = defaultdict(list)
        self._train_pred_cache: dict = {}
        for split in (train, val, test):
            if split is not None:
                split._ctx = self

    # ---- models ----------------------------------------------------------
    def create_backbone(self, name: str | None = None, num_classes: int | None = None,
                        weights: str | None = "config", ignore_keys=(), **kwargs
                        ) -> torch.nn.Module:
        """A timm model by name (default: the config's backbone), with the config's weights.

        `ignore_keys`: checkpoint key prefixes to leave out (recorded in the result).
        Other keyword arguments go to `timm.create_model`.
        """
        return self._create_backbone(name, num_classes, weights, ignore_keys, **kwargs)

    def frozen(self, module: torch.nn.Module) -> torch.nn.Module:
        """Kept in eval mode without gradients, out of checkpoints and parameter counts."""
        module.eval().requires_grad_(False).to(self.device)
        if self.precision == "bf16":
            module.to(torch.bfloat16)
        module.train = lambda mode=True: module  # stays in eval mode when the model trains
        self.frozen_modules.append(module)
        return module

    def autocast(self):
        return autocast(self.device, self.precision)

    # ---- logging ---------------------------------------------------------
    def log(self, name: str, value) -> None:
        """The mean of an epoch's calls lands in the history under `name`."""
        self._logs[name].append(float(value.detach().float().mean()) if torch.is_tensor(value)
                                else float(value))

    def _drain_logs(self) -> dict[str, float]:
        out = {k: float(np.mean(v)) for k, v in self._logs.items() if v}
        self._logs.clear()
        return out

    # ---- passes over data --------------------------------------------------
    def iterate(self, split: str = "train", views=("none",), batch_size: int | None = None,
                shuffle: bool = False):
        """Full passes: dicts with `index`, `views` and (train/val) the visible `label`."""
        data = {"train": self.train, "val": self.val}.get(split)
        if data is None:
            raise ValueError(f"cannot iterate over split {split!r}")
        bs = batch_size or self.batch_size
        n = len(data)
        order = (torch.randperm(n, generator=self.order_generator) if shuffle
                 else torch.arange(n))
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            raw = data.raw(idx)
            batch = {"index": idx.to(self.device),
                     "views": ViewBatch({_vname(v): apply_view(v, raw, self.generator)
                                         for v in views})}
            if data.labels is not None:
                batch["label"] = data.labels[idx].to(self.device)
            batch["extras"] = {k: v[idx].to(self.device) for k, v in data.extras.items()}
            yield batch

    @torch.no_grad()
    def train_predictions(self, view="none") -> torch.Tensor:
        """Probabilities [N_train, K] of the current model; one cached pass per epoch and view."""
        key = (self.epoch, _vname(view), self._model_version)
        if key not in self._train_pred_cache:
            self._train_pred_cache.clear()
            self._train_pred_cache[key] = self._predict_fn(self.train, view)
        return self._train_pred_cache[key]

    _model_version = 0


def _vname(view) -> str:
    return view if isinstance(view, str) else view[0]


class ViewBatch(dict):
    """A batch's views by name. A method that reads a view its config does not name (a user
    who set `views=[weak]` for a method that also needs `strong`) gets one line, not a KeyError."""

    def __missing__(self, name):
        from .errors import ConfigError

        raise ConfigError(f"the method reads the augmentation view {name!r}, but its config "
                          f"names only {', '.join(self) or 'none'}: add it to `views`")


class Prefetcher:
    """Prepares the next batch in a background thread while the model steps on this one."""

    def __init__(self, make_batch, index_batches, depth: int = 2):
        self._queue: Queue = Queue(maxsize=depth)
        self._make = make_batch
        self._thread = threading.Thread(target=self._run, args=(list(index_batches),),
                                        daemon=True)
        self._stop = False
        self._thread.start()

    def _run(self, index_batches):
        try:
            for idx in index_batches:
                if self._stop:
                    return
                self._queue.put(self._make(idx))
        except BaseException as e:  # surfaced in the training thread
            self._queue.put(e)
        self._queue.put(None)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        self._stop = True
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except Exception:
                pass
            self._thread.join(timeout=0.05)
