"""A run's identity: its key, what the config hash covers, and the folder its files live in.

A run's key is (dataset, protocol with its parameters, method, seed, hash of the
resolved config) (docs/design.md, section 4). Every place that names a run (the runner
that writes it, the leaderboard that groups it) takes the key from here, so each
protocol parameter is encoded by one rule:

- the protocol family, its rate and the noise seed make the protocol id and its
  folder suffix, never the hash, so one method config has one hash across `clean`,
  every `noiseP` and every seed;
- the protocol options of the resolved config that change the data a method
  trains or is tested on (`HASHED_OPTIONS`) are hashed, and those that change the
  training or test set also name the folder (`+val<F>`, `+dedup`);
- what the protocol's name does not fix is hashed: the labels of a noise file or
  of a reference (their noise hash) and a cross target's folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

# The resolved config's protocol options that a run's hash covers.
HASHED_OPTIONS = ("val_fraction", "dedup_test", "allow_label_extras")
# Resolved-config sections hashed whole; `engine` is hashed without these keys, which
# change where and how fast a run goes, not what it computes.
HASHED_SECTIONS = ("method", "data")
UNHASHED_ENGINE_KEYS = ("device", "threads")


@dataclass(frozen=True)
class RunKey:
    dataset: str
    protocol: str          # the protocol folder: id and suffixes, e.g. "noise30+ns1+val0.2"
    method: str
    seed: int
    config_hash: str

    def folder(self, out: str | Path) -> Path:
        return Path(out) / _safe(self.dataset) / _safe(self.protocol) / _safe(self.method) \
            / self.config_hash

    def stem(self, out: str | Path) -> Path:
        return self.folder(out) / f"seed{self.seed}"

    def result_path(self, out) -> Path:
        return self.stem(out).with_suffix(".json")

    def as_dict(self) -> dict:
        return asdict(self)


def _safe(part: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=+" else "_" for c in part)


def config_hash(config: dict) -> str:
    """A short stable hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def file_digest(path) -> str:
    """The first 16 hex digits of a file's sha256: how a run names the files it read (a
    user's extras, a noise file, weights) by content, not by where they lie."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def protocol_folder(view) -> str:
    """The protocol part of the key: the id, plus a suffix per parameter that changes the
    training or test set without changing the id (noise seed, validation share, dedup)."""
    parts = []
    if view.params.get("noise_seed") and view.noise is not None \
            and view.noise.source == "generated":
        parts.append(f"ns{view.params['noise_seed']}")
    if view.record.get("val_fraction"):
        parts.append(f"val{view.record['val_fraction']:g}")
    if view.record.get("dedup_test_removed") is not None:
        parts.append("dedup")
    return view.id + (("+" + "+".join(parts)) if parts else "")


def hashed_config(resolved: dict, view, added: dict | None = None) -> dict:
    """The part of a resolved run config that the config hash covers. `added`: method keys
    a config gained later, with the defaults at which they stay out of the hash."""
    hashed = {k: resolved[k] for k in HASHED_SECTIONS}
    if added:
        hashed["method"] = {k: v for k, v in resolved["method"].items()
                            if k not in added or v != added[k]}
    hashed["engine"] = {k: v for k, v in resolved["engine"].items()
                        if k not in UNHASHED_ENGINE_KEYS}
    hashed["protocol"] = {k: v for k, v in resolved["protocol"].items() if k in HASHED_OPTIONS}
    # Labels that do not follow from the protocol's name (a noise file, FER2013's labels) and
    # a cross target's folder are part of what a run is: a new file or folder is a new run.
    if view.noise is not None and view.noise.source != "generated":
        hashed["protocol"]["labels"] = view.noise.hash
    if view.params.get("target_root"):
        hashed["protocol"]["target_root"] = str(view.params["target_root"])
    return hashed


def run_key(dataset: str, view, method: str, seed: int, resolved: dict,
            added: dict | None = None) -> RunKey:
    """The key of one run of `method` on `view` with the resolved config."""
    return RunKey(dataset, protocol_folder(view), method, seed,
                  config_hash(hashed_config(resolved, view, added)))


def protocol_identity(protocol: dict) -> tuple[str, str]:
    """What tells one stored run's protocol from another's beyond its folder: its parameters
    as JSON and its noise hash. Where a noise hash identifies the labels, where their file
    lay (a path, a root) does not make another protocol."""
    noise = protocol.get("noise") if isinstance(protocol.get("noise"), dict) else {}
    params = protocol.get("params") if isinstance(protocol.get("params"), dict) else {}
    if noise.get("hash"):
        params = {k: v for k, v in params.items() if k != "path" and not k.endswith("_root")}
    return json.dumps(params, sort_keys=True, default=str), str(noise.get("hash", ""))


def variant_config(config: dict) -> dict:
    """What tells one variant of a method from another in a stored run's resolved config:
    all but the protocol section, whose options belong to the protocol (the column), though
    the config hash covers them."""
    return {k: v for k, v in config.items() if k != "protocol"}
