"""`RunContext`: everything a method may see and use during a run (docs/design.md, 2)."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from queue import Queue

import numpy as np
import torch

from .data.augment import apply_view
from .data.cache import load_cached
from .data.feeder import ImageFeeder
from .data.views import view_name
from .device import autocast
from .errors import ConfigError
from .weights import load_into, load_partial


@dataclass
class SplitData:
    """A split as the method sees it: ids, visible labels, permitted extras, cached images."""

    name: str
    ids: Sequence[str]                   # a tuple, or for large generated sets `NumberedIds`
    labels: torch.Tensor | None          # None where the method may not see labels
    extras: dict[str, torch.Tensor]
    cache: np.ndarray                    # uint8 [N, S, S, C], memory-mapped
    # Label-carrying extras the dataset has but the protocol withholds (votes under noise):
    # a method asked to use one says so in one line instead of "not found".
    withheld: tuple[str, ...] = ()
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    generator: torch.Generator | None = field(repr=False, default=None)  # the run's, shared
    _feeder: ImageFeeder | None = field(repr=False, default=None)
    # Every extra the dataset annotated with the labels, handed out (clean) or withheld: a
    # method records honestly which of its inputs carried labels.
    label_extras: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def raw(self, indices) -> torch.Tensor:
        """Cached uint8 images [B, S, S, C] on the run's device."""
        if self._feeder is None:
            self._feeder = ImageFeeder(self.cache, self.device)
        return self._feeder.gather(indices)

    def images(self, indices, view="none") -> torch.Tensor:
        """Augmented float images [B, 3, S, S] in [0, 1] of any samples, in one view."""
        return apply_view(view, self.raw(indices), self.generator)


def make_batch(data: SplitData, idx: torch.Tensor, views, augment, device,
               companions=None, companion_views=None) -> dict:
    """One batch as a method receives it: `index`, `views` (name → tensor), the visible
    `label` where the split has labels, permitted `extras`, and with `companions`
    (LongTensor [B, C] of other samples) their `index`, `views` (`companion_views`, or
    the main images' views) and `label`.

    `augment(view, raw)` turns the split's uint8 images into one view's tensor.
    """
    raw = data.raw(idx)
    batch = {"index": idx.to(device),
             "views": ViewBatch({view_name(v): augment(v, raw) for v in views})}
    if data.labels is not None:
        batch["label"] = data.labels[idx].to(device)
    batch["extras"] = {k: t[idx].to(device) for k, t in data.extras.items()}
    if companions is not None:
        flat = companions.reshape(-1)
        craw = data.raw(flat)
        batch["companions"] = {
            "index": companions.to(device),
            "views": ViewBatch({view_name(v): _unflatten(augment(v, craw), companions.shape)
                                for v in (companion_views or views)}),
            "label": data.labels[flat].reshape(companions.shape).to(device)}
    return batch


def _unflatten(x: torch.Tensor, shape) -> torch.Tensor:
    return x.reshape(*shape, *x.shape[1:])


class RunContext:
    """The run as a method sees it; methods read it, never write files.

    Built by `build_context` (the runner and the testing kit). The engine drives it
    through `bind_predictor`, `begin_epoch` and `end_epoch`; methods use the rest.
    """

    def __init__(self, *, classes, image_size, device, precision, train, val, epochs,
                 batch_size, generator, create_backbone, protocol=None, weights_log=None,
                 run_key=None, whole_model_weights=False, training_labels=None):
        self.classes = tuple(classes)
        self.class_names = self.classes
        self.num_classes = len(self.classes)
        self.image_size = image_size
        self.device = device
        self.precision = precision
        self.train: SplitData = train
        self.val: SplitData | None = val
        self.epochs = epochs
        self.batch_size = batch_size
        self.steps_per_epoch = max(1, len(train) // batch_size)
        self.generator = generator  # on the run's device: augmentation parameters
        self.order_generator = torch.Generator()  # on the CPU: shuffled passes
        self._create_backbone = create_backbone
        # The protocol's public side: never which labels were flipped.
        self.protocol: ProtocolInfo = protocol or ProtocolInfo("clean", "clean")
        self.training_indices: torch.Tensor | None = None  # a method's fixed subset, if any
        # The run's key (dataset, protocol folder, method, seed, config hash), or None outside
        # a stored run: a method that loads a ferbench weights file for something other than
        # its own model (an auxiliary embedding) compares it with the key the file carries.
        self.run_key = run_key
        self.training_labels: TrainingLabels | None = training_labels  # with run_key
        # True when the config's `weights` is a ferbench weights.pt, which the engine loads
        # into the whole model after `build`: a method that reads `weights` itself (a
        # checkpoint of another layout) leaves it alone then.
        self.whole_model_weights = bool(whole_model_weights)
        self._weights_log = weights_log if weights_log is not None else []
        self._predictor = None
        self.epoch = 0
        self.phase = None
        self.frozen_modules: list[torch.nn.Module] = []
        self._logs: dict[str, list[float]] = defaultdict(list)
        self._train_pred_cache: dict = {}

    # ---- what the engine does to it ------------------------------------------
    def bind_predictor(self, predict) -> None:
        """`predict(split, view) -> probs [N, K]`: the current model's pass that
        `train_predictions` caches."""
        self._predictor = predict
        self._train_pred_cache.clear()

    def restrict_training(self, indices: torch.Tensor) -> None:
        """Every epoch draws only from these training samples (`Method.training_indices`)."""
        self.training_indices = indices
        self.steps_per_epoch = max(1, len(indices) // self.batch_size)

    def begin_epoch(self, epoch: int) -> None:
        """A new epoch (or, after the last, the trained model): predictions are stale."""
        self.epoch = epoch
        self._train_pred_cache.clear()

    def end_epoch(self) -> dict[str, float]:
        """The means of the epoch's `log` calls, for its history row; the logs start afresh."""
        out = {k: float(np.mean(v)) for k, v in self._logs.items() if v}
        self._logs.clear()
        return out

    # ---- models ----------------------------------------------------------
    def create_backbone(self, name: str | None = None, num_classes: int | None = None,
                        weights: str | None = "config", ignore_keys=(), **kwargs
                        ) -> torch.nn.Module:
        """A timm model by name (default: the config's backbone), with the config's weights.

        `ignore_keys`: checkpoint key prefixes to leave out (recorded in the result).
        Other keyword arguments go to `timm.create_model`.
        """
        return self._create_backbone(name, num_classes, weights, ignore_keys, **kwargs)

    def load_weights(self, module: torch.nn.Module, path, name: str | None = None,
                     strip_prefixes=(), matching_only: bool = False,
                     only_prefixed: bool = False) -> dict:
        """Load a local checkpoint into any module (an open_clip tower, a part of a model)
        and record it in the result's `weights`: file, hash, tensors loaded and those left
        random. `path` None records that `name` starts from random weights. See
        `ferbench.weights.load_partial` for `strip_prefixes`, `matching_only` and
        `only_prefixed`."""
        name = name or type(module).__name__
        if path is None:
            entry = {"module": name, "file": None, "init": "random"}
        else:
            entry = {"module": name, **load_partial(module, path, strip_prefixes, matching_only,
                                                           only_prefixed)}
        self._weights_log.append(entry)
        return entry

    def frozen(self, module: torch.nn.Module) -> torch.nn.Module:
        """Kept in eval mode without gradients, out of checkpoints and parameter counts, in
        the run's precision: under bf16 its floating inputs are cast to bf16 when it is
        called outside autocast (in `build`, to precompute text embeddings, say)."""
        module.eval().requires_grad_(False).to(self.device)
        if self.precision == "bf16":
            module.to(torch.bfloat16)
            device_type = self.device.type
            for part in module.modules():  # a method may call a part (a tower's projection)
                part.register_forward_pre_hook(
                    lambda _, args, kwargs: _cast_outside_autocast(args, kwargs, device_type),
                    with_kwargs=True)
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

    # ---- passes over data --------------------------------------------------
    def train_extra(self, name: str, where: str, advice: str = "") -> torch.Tensor:
        """The training set's extra `name` as the method may read it, or one ConfigError line
        beginning `where`: the protocol withholds it (then `advice`), or the set has none."""
        check_extra_readable(name, where, self.protocol.id, self.train.extras,
                             self.train.withheld, advice)
        return self.train.extras[name]

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
        augment = lambda v, raw: apply_view(v, raw, self.generator)  # noqa: E731
        for start in range(0, n, bs):
            yield make_batch(data, order[start:start + bs], views, augment, self.device)

    @torch.no_grad()
    def train_predictions(self, view="none") -> torch.Tensor:
        """Probabilities [N_train, K] of the current model; one cached pass per epoch and view."""
        key = view_name(view)
        if key not in self._train_pred_cache:
            self._train_pred_cache.clear()
            self._train_pred_cache[key] = self._predictor(self.train, view)
        return self._train_pred_cache[key]


def check_extra_readable(name: str, where: str, protocol_id: str, extras, withheld,
                         advice: str = "") -> None:
    """One ConfigError line beginning `where` when a method could not read extra `name`:
    the protocol withholds it (then `advice`), or the training set has none. Used where a
    method reads it and where the runs are planned, so both say the same."""
    if name in withheld:
        raise ConfigError(f"{where}: the protocol {protocol_id} withholds the label-carrying "
                          f"extra {name!r} from methods{advice}")
    if name not in extras:
        raise ConfigError(f"{where}: the training set has no extra {name!r} (it has: "
                          f"{', '.join(sorted(extras)) or 'none'})")


def load_split(name: str, samples, labels, *, mode: str, size: int, withhold: bool = False,
               device: torch.device = torch.device("cpu"), generator=None,
               show_progress: bool | None = None) -> SplitData:
    """One split through the decoded cache, with its numeric extras; `withhold` leaves the
    label-carrying ones out (a noise protocol's rule)."""
    cache = load_cached(samples, size, mode, show_progress=show_progress).images
    extras, withheld = {}, []
    for k, v in samples.extras.items():
        if withhold and k in samples.label_extras:
            withheld.append(k)
            continue
        arr = np.asarray(v)
        if arr.dtype.kind in "fiub":
            extras[k] = torch.from_numpy(np.ascontiguousarray(arr))
    lab = torch.from_numpy(np.asarray(labels, dtype=np.int64)) if labels is not None else None
    return SplitData(name, samples.ids, lab, extras, cache, tuple(sorted(withheld)), device,
                     generator, label_extras=tuple(sorted(samples.label_extras)))


def build_context(view, config, *, mode: str, device: torch.device, precision: str,
                  show_progress: bool | None = None, whole_model: bool = False, run_key=None):
    """The context a method sees for one run on a protocol view, the test split for the engine
    (with its labels: the engine scores it, the method never sees it), and the list that each
    backbone the method creates records its weights in.

    `config` is the method's Config; `mode` the cache's colour mode ("L" or "RGB");
    `whole_model`: a ferbench weights.pt will be loaded into the whole model, so backbones
    start from random weights here. `run_key`: the stored run's key, for `ctx.run_key` (and
    with it `ctx.training_labels`).
    """
    import timm

    from . import models  # noqa: F401  (registers ferbench's backbones with timm)

    size = int(config.image_size)
    generator = torch.Generator(device=device)

    def split(name, samples, labels, withhold):
        return load_split(name, samples, labels, mode=mode, size=size, withhold=withhold,
                          device=device, generator=generator, show_progress=show_progress)

    train = split("train", view.train, view.train_labels, view.withhold_label_extras)
    val = (split("val", view.val, view.val_labels, view.withhold_label_extras)
           if view.val is not None else None)
    test = split("test", view.test, view.test_labels, False)
    test.extras = {}  # label-carrying test extras are scored from the view, never handed out
    weights_info: list = []

    def create_backbone(name=None, num_classes=None, weights="config", ignore_keys=(), **kw):
        name = name or config.backbone
        try:
            model = timm.create_model(name, pretrained=False,
                                      num_classes=num_classes or len(view.classes), **kw)
        except RuntimeError as e:
            raise ConfigError(f"backbone {name!r}: {e}") from None
        path = config.weights if weights == "config" else weights
        if path and not (whole_model and weights == "config"):
            weights_info.append({"backbone": name, "file": str(path),
                                 **load_into(model, path, ignore_keys)})
        elif not path:
            weights_info.append({"backbone": name, "file": None, "init": "random"})
        return model

    rate = view.params.get("rate") if view.noise is not None \
        and view.noise.source == "generated" else None
    ctx = RunContext(classes=view.classes, image_size=size, device=device, precision=precision,
                     train=train, val=val, epochs=int(config.epochs),
                     batch_size=int(config.batch_size), generator=generator,
                     create_backbone=create_backbone,
                     protocol=ProtocolInfo(view.id, view.family,
                                           None if rate is None else float(rate) / 100),
                     weights_log=weights_info, run_key=run_key,
                     whole_model_weights=whole_model,
                     training_labels=None if run_key is None else TrainingLabels(
                         view.train.fingerprint,
                         view.noise.hash if view.noise is not None else None))
    return ctx, test, weights_info


def _cast_outside_autocast(args, kwargs, device_type):
    """Floating tensors as bf16 where autocast is off; unchanged (None) under autocast."""
    if torch.is_autocast_enabled(device_type):
        return None

    def cast(v):
        return v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() else v

    return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}


@dataclass(frozen=True)
class TrainingLabels:
    """Which training images under which labels a stored run trains on, as its result records
    them: the training split's fingerprint (`dataset.fingerprints.train`) and the noise file's
    hash (`protocol.noise.hash`, None without noise). Equal in two records, the runs saw the
    same faces under the same labels; a method that takes a ferbench weights file as an
    auxiliary model compares them, since a model trained on other labels would leak them."""

    fingerprint: str
    noise_hash: str | None


@dataclass(frozen=True)
class ProtocolInfo:
    """What a method may know of the protocol: its id, family and, for generated noise, the
    nominal rate (a fraction, noise30 → 0.3) that noisy-label methods take as an input.
    Never which samples were flipped."""

    id: str
    family: str
    rate: float | None = None


class ViewBatch(dict):
    """A batch's views by name. A method that reads a view its config does not name (a user
    who set `views=[weak]` for a method that also needs `strong`) gets one line, not a KeyError."""

    def __missing__(self, name):
        raise ConfigError(f"the method reads the augmentation view {name!r}, but its config "
                          f"names only {', '.join(self) or 'none'}: add it to `views`")


class Prefetcher:
    """Prepares the next batch in a background thread while the model steps on this one."""

    def __init__(self, make, index_batches, depth: int = 2):
        self._queue: Queue = Queue(maxsize=depth)
        self._make = make
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
