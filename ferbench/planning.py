"""Checks a run request before any run starts: names, presets, settings, backbones, data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .config import compose_run, to_method_config
from .datasets.audit import audit, faces_shared, leaked_test_indices
from .datasets.base import open_dataset
from .errors import ConfigError, unknown_name
from .extras import parse_extras, read_extras
from .plugins import registry
from .progress import console
from .protocols import parse_protocol
from .weights import read_state_dict


@dataclass
class RunRequest:
    """Everything `ferbench run` was asked to do."""

    methods: list[str] = field(default_factory=list)   # empty: every installed method
    dataset: str = "synthfer"
    data_root: str | None = None
    layout: str | None = None
    data_options: dict = field(default_factory=dict)
    protocols: list[str] = field(default_factory=lambda: ["clean"])
    target: str | None = None
    target_root: str | None = None
    fer2013_root: str | None = None
    extras: list[str] = field(default_factory=list)   # `NAME=PATH[:label|:image]` forms
    seeds: list[int] = field(default_factory=lambda: [0])
    noise_seed: int = 0
    preset: str | None = None        # None: the dataset's default_preset (quick on synthfer)
    flags: dict = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    out: str = "results"
    resume: bool = False
    force: bool = False
    leaderboard: bool = True
    show_progress: bool | None = None
    command: str | None = None       # what a result records as its command (default: argv)

    def __post_init__(self):
        # The dataset and the noisy labels are fixed before any method's config is composed,
        # so `data.*=` and `protocol.noise_seed=` overrides must land here, where they are
        # read, not only in the recorded config.
        kept = []
        for text in self.overrides:
            key, sep, value = text.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not (key.startswith("data.") or key == "protocol.noise_seed"):
                kept.append(text)
            elif key.startswith("data.options.") and len(key) > len("data.options."):
                self.data_options = {**self.data_options, key[len("data.options."):]: value}
            elif key in ("data.name", "data.root", "data.layout"):
                setattr(self, {"data.name": "dataset", "data.root": "data_root",
                               "data.layout": "layout"}[key], value or None)
            elif key == "protocol.noise_seed":
                try:
                    self.noise_seed = int(value)
                except ValueError:
                    raise ConfigError(f"override {text!r}: expected an integer") from None
            else:
                kept.append(text)  # left for the config to name as unknown
        self.overrides = kept
        # One folder, one run: `data` and `/abs/path/data` must not hash differently.
        for name in ("data_root", "target_root", "fer2013_root"):
            if getattr(self, name):
                setattr(self, name, str(Path(getattr(self, name)).expanduser().resolve()))


def request_command(req: RunRequest) -> str:
    """`req` as the `ferbench run` command that makes the same runs (a sweep's cells record
    it, so each result says how to rerun it alone)."""
    import shlex

    args = ["ferbench", "run"]
    for m in req.methods:
        args += ["--method", m]
    args += ["--dataset", req.dataset]
    for flag, value in (("--data-root", req.data_root), ("--layout", req.layout),
                        ("--target", req.target), ("--target-root", req.target_root),
                        ("--fer2013-root", req.fer2013_root), ("--preset", req.preset)):
        if value:
            args += [flag, str(value)]
    for k, v in req.data_options.items():
        args += ["-o", f"{k}={v}"]
    for p in req.protocols:
        args += ["--protocol", p]
    for e in req.extras:
        args += ["--extra", e]
    args += ["--seeds", ",".join(map(str, req.seeds))]
    if req.noise_seed:
        args += ["--noise-seed", str(req.noise_seed)]
    for k, v in req.flags.items():
        if k == "threads":
            args.append(f"engine.threads={v}")
        else:
            args += [f"--{k.replace('_', '-')}", str(v)]
    args += ["--out", str(req.out)]
    return shlex.join(args + list(req.overrides))


def open_named(name, root, layout=None, options=None, root_flag="--data-root"):
    """The registered dataset `name` read from `root`."""
    return open_dataset(registry().get("datasets", name), root, layout, options, root_flag)


def open_target(name, root):
    """A cross-dataset target, its root given by --target-root."""
    return open_named(name, root, root_flag="--target-root")


def plan_runs(req: RunRequest):
    """Check every name and file before any run starts: (dataset, parsed protocols, methods,
    preset, smallest image size, checked user extras for `extras.attach_extras`)."""
    reg = registry()
    methods = req.methods or sorted(reg.methods)
    classes = {m: reg.get("methods", m) for m in methods}
    families = {name: p.obj for name, p in reg.protocols.items()}
    parsed = [parse_protocol(p, families) for p in req.protocols]
    preset = req.preset or reg.get("datasets", req.dataset).default_preset
    for m, cls in classes.items():
        if preset not in (getattr(cls, "presets", None) or {}):
            raise unknown_name(f"preset of method {m}", preset, cls.presets)
    read = {name for family, _ in parsed
            for name in getattr(reg.get("protocols", family), "reads", ())}
    for name in ("target", "target_root", "fer2013_root"):
        if getattr(req, name) and name not in read:
            readers = sorted(f for f, p in reg.protocols.items()
                             if name in getattr(p.obj, "reads", ()))
            raise ConfigError(f"--{name.replace('_', '-')} is read only by protocol "
                              f"{' or '.join(readers)}; add --protocol {readers[0]}")
    if req.flags.get("weights"):
        read_state_dict(req.flags["weights"])  # a missing or broken file fails before any run
    specs = parse_extras(req.extras)
    ds = open_named(req.dataset, req.data_root, req.layout, req.data_options)
    extras = read_extras(specs, ds)
    # Every method's config is composed once now, so a bad override or setting fails before
    # the first run trains, not after it.
    sizes = []
    for name, cls in classes.items():
        try:
            cfg = compose_run(name, cls, preset, flag_overrides(req, {}, ds), req.overrides)
        except ConfigError as e:
            if len(classes) == 1:
                raise
            hint = (" (a setting that only some methods have needs a run of its own)"
                    if str(e).startswith("unknown config key") else "")
            raise ConfigError(f"method {name}: {e}{hint}") from None
        mcfg = to_method_config(cls, cfg)
        if getattr(cls, "timm_backbone", True):
            check_backbone(mcfg.backbone)
        if int(mcfg.epochs) == 0 and not mcfg.weights:
            raise ConfigError(f"method {name}: epochs=0 trains nothing, so it evaluates the "
                              f"model it starts from; give that model with --weights FILE")
        sizes.append(int(mcfg.image_size))
    return ds, parsed, classes, preset, min(sizes), extras


# Above this share of shared faces the target is the source, or a copy of it, by content.
SAME_DATA_SHARE = 0.5


def check_cross(ds, view, size, mode, show) -> None:
    """Refuse a cross target that holds the source's faces; count and say any it shares."""
    target = view.record["cross"]["target"]
    found = faces_shared(view.test, ds, size, mode, show)
    view.record["cross"]["faces_shared"] = found
    n, shared = found["test_faces"], found["shared"]
    if not shared:
        return
    where = ", ".join(f"{c:,} {s}" for s, c in found["per_source_split"].items() if c)
    if shared >= SAME_DATA_SHARE * n:
        raise ConfigError(f"protocol cross: {shared:,} of {n:,} {target} test faces are also "
                          f"{ds.name} faces ({where}): the same faces, so a cross-dataset "
                          f"score would be a within-dataset one")
    console.print(f"warning: {shared:,} of {n:,} {target} test faces are also {ds.name} faces "
                  f"({where}); they stay in the test set and the result records the count",
                  highlight=False)


def flag_overrides(req: RunRequest, params: dict, ds) -> dict:
    """The run flags and dataset choices as config overrides (below the user's `KEY=VALUE`)."""
    f = {f"method.{k}": v for k, v in req.flags.items()
         if k in ("epochs", "batch_size", "image_size", "backbone", "weights", "lr")}
    f.update({f"engine.{k}": v for k, v in req.flags.items()
              if k in ("device", "precision", "threads")})
    f.update({"data.name": req.dataset, "data.root": req.data_root, "data.layout": req.layout,
              "protocol.noise_seed": params.get("noise_seed", 0)})
    # The dataset's converted values, so that n_train=064 and n_train=64 are one run.
    for k in req.data_options:
        k = k.replace("-", "_")
        f[f"data.options.{k}"] = ds.options[k]
    return f


def check_backbone(name: str) -> None:
    """Refuse a backbone name timm does not know, with the closest one."""
    import difflib

    import timm

    from . import models  # noqa: F401  (registers ferbench's backbones with timm)

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=1, cutoff=0.6)
        raise ConfigError(f"unknown backbone {name!r}"
                          + (f"; did you mean {close[0]!r}?" if close else "")
                          + f" (any timm model name; ferbench's own: "
                          f"{', '.join(timm.list_models('ferbench_*'))})")


def leaked_test(ds, cfg, mode):
    """Test samples that also occur in another split (protocol.dedup_test removes them)."""
    report = audit(ds, int(cfg.method.image_size), mode)
    return leaked_test_indices(report, ds)
