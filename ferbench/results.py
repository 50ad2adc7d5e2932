"""Run keys, the result file schema, atomic writes and reading results back.

A run's key is (dataset, protocol with its parameters, method, seed, hash of the
resolved config). Its files live under
``<out>/<dataset>/<protocol id>/<method>/<config hash>/seed<seed>.json`` with
the per-sample arrays in ``seed<seed>.npz`` and the trained ``seed<seed>.weights.pt``
beside it; a run is complete when its JSON exists.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, FerbenchError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RunKey:
    dataset: str
    protocol: str          # the protocol id, e.g. "noise30" or "noisefile:noise01"
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


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes under a temporary name in the same folder and rename them into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, record: dict) -> None:
    """Write JSON under a temporary name and rename it into place."""
    write_bytes(Path(path), json.dumps(record, indent=1, default=_jsonable).encode())


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    write_bytes(Path(path), buf.getvalue())


def _jsonable(v: Any):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")


def check_writable(out: str | Path) -> Path:
    """The results folder, created if needed; a FerbenchError if it cannot be written."""
    out = Path(out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DataError(out, f"results directory is not writable ({e.strerror})") from None
    return out


def read_result(path: str | Path) -> dict:
    """One result JSON; a FerbenchError naming the file if it is not a ferbench result."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(path, f"not a readable result file ({e})") from None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA_VERSION:
        raise DataError(path, f"not a ferbench result of schema {SCHEMA_VERSION}")
    record["_path"] = str(path)
    return record


def read_results(folder: str | Path, errors: list | None = None) -> list[dict]:
    """Every result JSON under `folder` (recursively), sorted by path.

    Files that are not readable results are skipped; with `errors`, each is
    appended to it as (path, reason).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "results folder does not exist")
    out = []
    for p in sorted(folder.rglob("seed*.json")):
        if p.parent.name == "noise":
            continue
        try:
            out.append(read_result(p))
        except FerbenchError as e:
            if errors is not None:
                errors.append((p, str(e)))
    return out
