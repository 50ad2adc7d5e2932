"""A grid file: a whole leaderboard written down (datasets × methods × protocols × seeds).

It expands into the same run requests the `ferbench run` flags make, one per dataset and
method entry; paths in it are relative to the file's folder. Every entry is checked here
for its shape; names, presets and config keys are checked by the planner, before any run.

```yaml
vars: {ferplus: ${oc.env:FERPLUS_ROOT}}               # --var ferplus=DIR overrides
datasets:
  ferplus: {root: ${vars.ferplus}}                     # root, layout, options, target, ...
methods:                                               # a list of names, or name -> settings
  baseline: {}
  man: {preset: quick, overrides: {warmup_frac: 0.5}}
protocols: [clean, noise30]
seeds: [0, 1, 2]
epochs: 4                                              # any run flag, for every method
out: results                                           # the results folder
leaderboard: .                                         # where leaderboard.md goes
slurm: {partition: gpu, mem_gb: 32}                    # --launcher slurm (slurm.SLURM_KEYS)
```

`leaderboard` belongs to the grid's own `out`: a sweep whose results go elsewhere
(`--out DIR`) writes its leaderboard.md into DIR, so a trial run never overwrites the
board committed beside the grid. A `--var NAME=VALUE` is text, as `-o KEY=VALUE` is; it
must be a number or a boolean where the file's own value of NAME is one, is read as YAML
(a list, a mapping, a number) where that value is null, a list or a mapping, and stays
text where it is text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, unknown_name
from .planning import RunRequest
from .slurm import check_slurm
from .yamltext import yaml_value

# Settings a method entry, or the file for every method, may give (as `ferbench run` flags).
FLAGS = ("epochs", "batch_size", "image_size", "backbone", "weights", "device", "precision",
         "threads")
DATASET_KEYS = ("name", "root", "layout", "options", "target", "target_root", "fer2013_root",
                "extras")
PATH_KEYS = ("root", "target_root", "fer2013_root")
METHOD_KEYS = ("name", "preset", "overrides", *FLAGS)
TOP_KEYS = ("vars", "datasets", "methods", "protocols", "seeds", "noise_seed", "preset",
            "overrides", "out", "leaderboard", "slurm", *FLAGS)


@dataclass
class Grid:
    """A parsed grid file: its run requests and where results and the leaderboard go."""

    path: Path
    requests: list = field(default_factory=list)   # RunRequest per dataset × method entry
    origins: list = field(default_factory=list)    # "FILE: datasets.x × methods.y" of each
    out: Path = Path("results")
    leaderboard: Path | None = None                # default: the grid file's folder
    slurm: dict = field(default_factory=dict)      # checked: slurm.check_slurm


class Origin(str):
    """`FILE: datasets.x × methods.y`, and the method entry's name where it is not the
    method's own (two entries of one method need telling apart in a sweep's cell labels)."""

    entry: str | None = None


def load_grid(path, variables: dict | None = None) -> Grid:
    """Parse `path` into run requests; any problem is one ConfigError naming file and entry."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: grid file does not exist"
                          + (" (it is a folder)" if path.is_dir() else ""))
    try:
        conf = OmegaConf.load(path)
    except Exception as e:
        raise ConfigError(_parse_error(path, e)) from None
    if not OmegaConf.is_dict(conf):
        raise ConfigError(f"{path}: expected a mapping of datasets, methods, protocols, seeds")
    for k, v in (variables or {}).items():
        if "vars" not in conf or k not in conf.vars:
            known = ", ".join(conf.vars) if "vars" in conf else "none"
            raise ConfigError(f"--var {k}: {path} has no such variable (its vars: {known})")
        default = OmegaConf.to_container(conf.vars, resolve=False)[k]
        try:
            conf.vars[k] = _var_value(v, default)
        except (ValueError, OmegaConfBaseException) as e:
            raise ConfigError(f"--var {k}={v}: {path}: vars.{k}: {e}") from None
    try:
        data = OmegaConf.to_container(conf, resolve=True)
    except OmegaConfBaseException as e:
        first = (str(e).strip().splitlines() or [""])[0]
        key = getattr(e, "full_key", None)
        raise ConfigError(f"{path}: {key + ': ' if key else ''}{first}") from None
    return _grid(path, data)


def _parse_error(path: Path, e: Exception) -> str:
    """yaml's error as one line `FILE:LINE:COLUMN: problem` (its text spans lines)."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or getattr(e, "context", None)
    if mark is not None and problem:
        return f"{path}:{mark.line + 1}:{mark.column + 1}: {problem}"
    first = (str(e).strip().splitlines() or ["unreadable"])[0]
    return f"{path}: does not parse: {first}"


def _var_value(value, default):
    """A `--var` value: text, as `-o KEY=VALUE` takes it. Where the file's own value is a
    number or a boolean it must be one; where it is null, a list or a mapping, the text is
    read as YAML (`[0, 1]`, `{k: v}`, a number; whole numbers in decimal, so `0100` is 100,
    never YAML 1.1's octal 64; dates stay text); where it is text, it stays text."""
    typed = isinstance(default, (bool, int, float))
    if typed and type(value) is type(default) or isinstance(default, float) and \
            isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):  # handed over by a caller rather than typed
        if typed:
            value = str(value)
        else:
            ok = value is None or isinstance(value, (bool, int, float, list, dict))
            return value if ok else str(value)
    text = value.strip()
    if isinstance(default, bool):
        if text.lower() not in BOOLEAN_WORDS:
            raise ValueError(f"expected true or false, as the file's value {default} is")
        return BOOLEAN_WORDS[text.lower()]
    if isinstance(default, int):
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise ValueError(f"expected a whole number, as the file's value {default} is")
        return int(text)
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"expected a number, as the file's value {default} is") from None
    if isinstance(default, str):
        return value
    # A single seed or protocol where the file lists several is that one (`_grid` makes
    # it a list of one); what YAML cannot read (`${oc.env:SEEDS}`) stays text.
    parsed = yaml_value(text)
    if parsed is None and text[:1] in ("[", "{"):
        raise ValueError(f"{text!r} does not parse as a YAML "
                         f"{'list' if text[0] == '[' else 'mapping'}")
    return parsed if isinstance(parsed, (bool, int, float, list, dict)) else value


BOOLEAN_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True,
                 "off": False}


def _grid(path: Path, data: dict) -> Grid:
    def fail(entry: str, problem: str):
        raise ConfigError(f"{path}: {entry}: {problem}")

    _known(data, TOP_KEYS, "top level", fail)
    base = path.parent

    def where(value: str) -> str:
        p = Path(str(value)).expanduser()
        return str(p if p.is_absolute() else base / p)

    datasets = _entries(data.get("datasets"), "datasets", fail, required=True)
    methods = _entries(data.get("methods"), "methods", fail, required=True)
    entry_names = _entry_names(data.get("methods"), methods)
    protocols = data.get("protocols", ["clean"])
    if isinstance(protocols, str):
        protocols = [protocols]
    if not isinstance(protocols, list) or not protocols or \
            not all(isinstance(p, str) for p in protocols):
        fail("protocols", "expected a list such as [clean, noise30]")
    seeds = data.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or len(set(map(repr, seeds))) != len(seeds) \
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        fail("seeds", "expected distinct integers >= 0 such as [0, 1, 2]")
    noise_seed = data.get("noise_seed", 0)
    if not isinstance(noise_seed, int) or isinstance(noise_seed, bool):
        fail("noise_seed", "expected an integer")
    common_flags = {k: data[k] for k in FLAGS if data.get(k) is not None}
    common_overrides = _overrides(data.get("overrides"), "overrides", fail)
    requests, origins = [], []
    for d_entry, d in datasets:
        _known(d, DATASET_KEYS, d_entry, fail)
        options = d.get("options") or {}
        if not isinstance(options, dict):
            fail(f"{d_entry}.options", "expected a mapping such as {n_train: 2000}")
        for k in PATH_KEYS:
            if d.get(k) is not None:
                p = Path(where(d[k]))
                if not p.exists():
                    fail(f"{d_entry}.{k}", f"{p} does not exist")
        extras = d.get("extras") or []
        if not isinstance(extras, list):
            fail(f"{d_entry}.extras", "expected a list of NAME=PATH[:image|:label]")
        for m_entry, m in methods:
            _known(m, METHOD_KEYS, m_entry, fail)
            flags = {**common_flags, **{k: m[k] for k in FLAGS if m.get(k) is not None}}
            if flags.get("weights"):
                flags["weights"] = where(flags["weights"])
            try:
                requests.append(RunRequest(
                    methods=[m["name"]], dataset=d["name"],
                    data_root=where(d["root"]) if d.get("root") else None,
                    layout=d.get("layout"),
                    data_options={str(k): str(v) for k, v in options.items()},
                    protocols=list(protocols), target=d.get("target"),
                    target_root=where(d["target_root"]) if d.get("target_root") else None,
                    fer2013_root=where(d["fer2013_root"]) if d.get("fer2013_root") else None,
                    extras=[_extra(e, where) for e in extras], seeds=list(seeds),
                    noise_seed=noise_seed, preset=m.get("preset", data.get("preset")),
                    flags=flags,
                    overrides=common_overrides
                    + _overrides(m.get("overrides"), f"{m_entry}.overrides", fail)))
            except ConfigError as e:
                fail(f"{d_entry} × {m_entry}", str(e))
            origin = Origin(f"{path}: {d_entry} × {m_entry}")
            origin.entry = entry_names.get(m_entry)
            origins.append(origin)
    slurm = data.get("slurm") or {}
    if not isinstance(slurm, dict):
        fail("slurm", "expected a mapping such as {partition: gpu, gpus_per_task: 1}")
    slurm = check_slurm(slurm, f"{path}: slurm.")
    out = Path(where(data.get("out") or "results"))
    leaderboard = Path(where(data.get("leaderboard") or "."))
    for entry, folder in (("out", out), ("leaderboard", leaderboard)):
        # Found now, not after every cell has trained.
        blocked = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if blocked is not None and not blocked.is_dir():
            fail(entry, f"{blocked} is a file; expected a folder"
                 + (" (leaderboard.md is written into it)" if entry == "leaderboard" else ""))
    for req in requests:
        req.out = str(out)  # what run_sweep compares --out with (the `leaderboard` rule)
    return Grid(path, requests, origins, out, leaderboard, slurm)


def _entries(value, section: str, fail, required: bool) -> list:
    """(entry name, settings with a name) of a section given as a list or a mapping."""
    if value is None and not required:
        return []
    if isinstance(value, dict) and value:
        items = []
        for name, settings in value.items():
            settings = {} if settings is None else settings
            if not isinstance(settings, dict):
                fail(f"{section}.{name}", "expected a mapping of settings (or nothing)")
            items.append((f"{section}.{name}", {**settings, "name": settings.get("name", name)}))
        return items
    if isinstance(value, list) and value:
        items = []
        for i, v in enumerate(value):
            if isinstance(v, str):
                v = {"name": v}
            if not isinstance(v, dict) or not isinstance(v.get("name"), str):
                fail(f"{section}[{i}]", "expected a name, or a mapping with a name")
            items.append((f"{section}[{i}] ({v['name']})", v))
        return items
    fail(section, "expected a non-empty list of names or a mapping name -> settings")


def _entry_names(value, methods: list) -> dict:
    """Method entry -> the name a cell label shows beside the method's: a mapping's key
    where it differs from the method, a list's index where the method is listed twice."""
    names = {}
    twice = {m["name"] for _, m in methods if [n["name"] for _, n in methods].count(m["name"]) > 1}
    for i, (entry, m) in enumerate(methods):
        key = entry.split(".", 1)[1] if isinstance(value, dict) else None
        if key is not None and key != m["name"]:
            names[entry] = key
        elif key is None and m["name"] in twice:
            names[entry] = f"methods[{i}]"
    return names


def _known(entry: dict, keys, where: str, fail) -> None:
    for k in entry:
        if k not in keys:
            fail(where, str(unknown_name("key", str(k), keys)))


def _overrides(value, where: str, fail) -> list[str]:
    """`KEY=VALUE` texts from a mapping (values as YAML gave them) or a list of texts."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [f"{k}={_text(v)}" for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) and "=" in v for v in value):
        return list(value)
    fail(where, "expected a mapping such as {lr: 0.01} or a list of KEY=VALUE")


def _text(v) -> str:
    """A YAML value in hydra's override grammar (`[a,b]`, `{k:v}`, `true`, `null`)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ",".join(_text(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_text(x)}" for k, x in v.items()) + "}"
    return str(v)


def _extra(text: str, where) -> str:
    """`NAME=PATH[:kind]` with PATH made relative to the grid file's folder."""
    name, sep, rest = str(text).partition("=")
    if not sep:
        return text  # the planner names the malformed spec
    path, colon, kind = rest.rpartition(":") if rest.endswith((":image", ":label")) \
        else (rest, "", "")
    return f"{name}={where(path)}{colon}{kind}"
