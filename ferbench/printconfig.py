"""`ferbench run --print-config`: every planned run's resolved config and key, none run.

The runs are planned exactly as `ferbench run` plans them (the same checks, the same
composition, the same keys), so what is printed is what a run would record; nothing is
trained or stored. The protocols that must look at the faces themselves (`cross`
compares the target's faces with the source's, `realnoise` matches FERPlus faces to
FER2013's, `protocol.dedup_test=true` finds test images that occur in another split)
decode them into the cache, as a run would; nothing goes to the results folder.
"""

from __future__ import annotations

from dataclasses import replace

from omegaconf import OmegaConf

from .errors import ConfigError, FerbenchError
from .planning import RunRequest


def planned_configs(req: RunRequest) -> list[dict]:
    """Method, preset, dataset, protocol, seed, run key and resolved config of each run of
    `req`, in the order `ferbench run` would run them."""
    from .runner import prepare, resolve_cell  # torch: only when a run is planned

    plan = prepare(req)
    out = []
    for protocol, params, view, name, cls, seed in plan.cells():
        r = resolve_cell(req, plan.ds, plan.mode, params, view, name, cls, plan.preset, seed)
        sources = getattr(cls, "preset_sources", None) or {}
        out.append({
            "method": name,
            "preset": plan.preset,
            "preset_source": sources.get(plan.preset, "ferbench"),
            "dataset": plan.ds.name,
            "protocol": protocol,
            "seed": seed,
            "run_key": {**r.key.as_dict(), "result": str(r.key.result_path(req.out))},
            "config": r.resolved,
        })
    return out


def grid_configs(path, variables: dict, device: str | None, out) -> list[dict]:
    """`planned_configs` of every request of a grid file; a problem names its entry."""
    from .grid import load_grid

    g = load_grid(path, variables)
    configs = []
    for req, origin in zip(g.requests, g.origins):
        if device:
            req.flags["device"] = device
        try:
            configs += planned_configs(replace(req, out=str(out or g.out)))
        except FerbenchError as e:
            raise ConfigError(f"{origin}: {e}") from None
    return configs


def configs_yaml(configs: list[dict]) -> str:
    """The planned runs as one YAML document each, each headed by a comment naming it."""
    docs = []
    for i, c in enumerate(configs, 1):
        title = (f"# [{i}/{len(configs)}] {c['method']} · {c['run_key']['protocol']} · "
                 f"seed {c['seed']} · {c['dataset']}")
        docs.append(f"{title}\n{OmegaConf.to_yaml(OmegaConf.create(c))}")
    return "---\n".join(docs)
