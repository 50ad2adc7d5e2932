"""What `ferbench list --method NAME` and `--dataset NAME` show: one registered thing in full."""

from __future__ import annotations

import dataclasses
import inspect
import json
import shutil
import sys

from tabulate import tabulate

from .config.settings import bound_text
from .keyhelp import key_help
from .plugins import Registry, registry


def describe_method(name: str, reg: Registry | None = None) -> dict:
    """A method's description, plugin, presets (values and source) and config keys."""
    reg = reg or registry()
    cls = reg.get("methods", name)  # an unknown name: one line with the closest one
    provided = reg.methods[name]
    sources = getattr(cls, "preset_sources", None) or {}
    helps = key_help(cls.Config)
    return {
        "name": name,
        "display_name": getattr(cls, "display_name", None) or name,
        "description": _summary(cls),
        "plugin": provided.plugin,
        "version": provided.version,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "presets": {p: {"source": sources.get(p, "ferbench"), "values": _plain(values)}
                    for p, values in (getattr(cls, "presets", None) or {}).items()},
        # Presets that expect pretrained weights (without them: random initialisation).
        "pretrained_presets": list(getattr(cls, "pretrained_presets", ()) or ()),
        "keys": [_key(f, helps[f.name]) for f in dataclasses.fields(cls.Config)],
    }


def describe_dataset(name: str, reg: Registry | None = None) -> dict:
    """A dataset adapter's description, layouts, options with defaults, and declared facts."""
    reg = reg or registry()
    adapter = reg.get("datasets", name)
    provided = reg.datasets[name]
    native = getattr(adapter, "native_labels", None)
    return {
        "name": name,
        "description": getattr(adapter, "description", "") or _summary(type(adapter)),
        "plugin": provided.plugin,
        "version": provided.version,
        "class": f"{type(adapter).__module__}.{type(adapter).__qualname__}",
        "layouts": dict(getattr(adapter, "layouts", {}) or {}),
        "options": _plain(dict(getattr(adapter, "options", {}) or {})),
        "needs_root": bool(getattr(adapter, "needs_root", True)),
        "grey": bool(getattr(adapter, "grey", False)),
        "default_preset": getattr(adapter, "default_preset", "paper"),
        "classes": _plain(getattr(adapter, "classes", None)),
        "extras": _plain(getattr(adapter, "extras", None)),
        "label_codes": {str(k): v for k, v in native.items()} if native else None,
        "same_faces_as": list(getattr(adapter, "same_faces_as", ()) or ()),
        "official_counts": _plain(getattr(adapter, "official_counts", None)),
    }


def method_text(info: dict) -> str:
    """`describe_method`'s answer as the console shows it."""
    lines = [f"{info['name']} ({info['display_name']}): {info['description']}",
             f"plugin: {info['plugin']} {info['version']} ({info['class']})", "", "Presets:"]
    for preset, p in info["presets"].items():
        pretrained = ", expects pretrained weights" if preset in info["pretrained_presets"] else ""
        lines.append(f"  {preset} (values from: {p['source']}{pretrained})")
        lines += ([f"    {k} = {_show(v)}" for k, v in p["values"].items()]
                  or ["    (the defaults below)"])
    rows = [[k["name"], k["type"], _show(k["default"]), k["allowed"], k["help"]]
            for k in info["keys"]]
    lines += ["", "Config keys (KEY=VALUE after `ferbench run ...`):",
              tabulate(rows, headers=["key", "type", "default", "allowed", "help"],
                       maxcolwidths=[None, 12, 24, 24, _help_width(rows)],
                       disable_numparse=True)]
    return "\n".join(lines)


def dataset_text(info: dict) -> str:
    """`describe_dataset`'s answer as the console shows it."""
    lines = [f"{info['name']}: {info['description']}",
             f"plugin: {info['plugin']} {info['version']} ({info['class']})",
             "reads: " + ("a folder given by --data-root" if info["needs_root"]
                          else "nothing on disk (no --data-root)")
             + ("; grey images" if info["grey"] else "")
             + f"; default preset {info['default_preset']}", "", "Layouts (--layout):"]
    lines += [f"  {k}: {v}" for k, v in info["layouts"].items()]
    lines += ["", "Options (-o KEY=VALUE):"]
    lines += [f"  {k} = {_show(v)}" for k, v in info["options"].items()] or ["  (none)"]
    for title, key in (("Classes", "classes"), ("Extras", "extras")):
        if info[key]:
            lines += ["", f"{title}: {_show(info[key])}"]
    if info["label_codes"]:
        lines += ["", "Label codes of its own files: "
                  + ", ".join(f"{k} {v}" for k, v in info["label_codes"].items())]
    if info["same_faces_as"]:
        lines += ["", f"Same faces as: {', '.join(info['same_faces_as'])} "
                      f"(never a cross-dataset pair)"]
    official = info["official_counts"]
    if official:
        lines += ["", f"Official counts ({official['source']}):"]
        lines += [f"  {split}: {c['total']:,}" + (f" ({c['rows']:,} rows)" if "rows" in c else "")
                  for split, c in official["splits"].items()]
    return "\n".join(lines)


def _key(f: dataclasses.Field, help_text: str) -> dict:
    meta = f.metadata or {}
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = None
    choices = meta.get("choices")
    low, high = meta.get("low"), meta.get("high")
    return {"name": f.name, "type": _type_name(f.type), "default": _plain(default),
            "choices": list(choices) if choices else None, "low": low, "high": high,
            "allowed": _allowed(choices, low, high), "help": help_text}


def _allowed(choices, low, high) -> str:
    return " | ".join(map(str, choices)) if choices else bound_text(low, high)


def _type_name(t) -> str:
    return t if isinstance(t, str) else getattr(t, "__name__", None) or str(t)


def _summary(cls) -> str:
    """The first paragraph of the class's own docstring, else of its module's."""
    doc = vars(cls).get("__doc__") or getattr(sys.modules.get(cls.__module__), "__doc__", "")
    first = inspect.cleandoc(doc or "").split("\n\n")[0]
    return " ".join(first.split())


def _plain(value):
    """`value` as JSON has it (tuples as lists), so text and --json agree."""
    return json.loads(json.dumps(value, default=str)) if value is not None else None


def _show(value) -> str:
    return "null" if value is None else (json.dumps(value) if not isinstance(value, str)
                                         else value)


def _help_width(rows) -> int:
    """What the terminal leaves for the help column beside the others (at least 30)."""
    caps = (None, 12, 24, 24)  # the other columns' widths as method_text wraps them
    used = sum(min(max((len(str(r[i])) for r in rows), default=0), cap or 10**6)
               for i, cap in enumerate(caps))
    return max(30, shutil.get_terminal_size((120, 24)).columns - used - 8)

