"""Result files on disk: atomic writes, and reading stored results back.

A run's files live under its key's folder (runkey.py):
``<out>/<dataset>/<protocol>/<method>/<config hash>/seed<seed>.json`` with
the per-sample arrays in ``seed<seed>.npz`` and the trained ``seed<seed>.weights.pt``
beside it; a run is complete when its JSON exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, FerbenchError
from .record import SCHEMA_VERSION


@contextlib.contextmanager
def atomic_file(path: str | Path):
    """A binary file written under a temporary name in the same folder and renamed into
    place when the block ends; on an error nothing is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes under a temporary name in the same folder and rename them into place."""
    with atomic_file(path) as f:
        f.write(data)


def write_json(path: str | Path, record: dict) -> None:
    """Write JSON under a temporary name and rename it into place."""
    write_bytes(Path(path), json.dumps(record, indent=1, default=_jsonable).encode())


_STRING_BLOCK = 65536


def write_npz(path: str | Path, arrays: dict[str, Any]) -> None:
    """A compressed .npz, as `np.savez_compressed` writes it, streamed to the file.

    A value that is a sequence of strings but not an array (sample ids) is stored as a
    unicode array written a block at a time, so neither it nor the archive is ever
    whole in memory.
    """
    with atomic_file(path) as f, \
            zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                if _is_strings(value):
                    _write_strings(member, value)
                else:
                    np.lib.format.write_array(member, np.asarray(value), allow_pickle=True)


def _is_strings(value) -> bool:
    return (not isinstance(value, (np.ndarray, str, bytes)) and isinstance(value, Sequence)
            and len(value) > 0 and isinstance(value[0], str))


def _write_strings(member, strings: Sequence[str]) -> None:
    width = max(1, max(len(s) for s in strings))
    dtype = np.dtype(f"<U{width}")
    np.lib.format.write_array_header_1_0(member, {
        "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
        "shape": (len(strings),)})
    for start in range(0, len(strings), _STRING_BLOCK):
        member.write(np.array(list(strings[start:start + _STRING_BLOCK]), dtype=dtype).tobytes())


def _jsonable(v: Any):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")


def check_writable(out: str | Path, create: bool = True) -> Path:
    """The results folder, created if needed; a FerbenchError if it cannot be written.

    With `create=False` a folder that does not exist yet is left uncreated (a run that is
    refused later leaves nothing behind); the nearest folder above it must be writable.
    """
    out = Path(out).expanduser()
    if not create and not out.exists():
        above = next(p for p in out.absolute().parents if p.exists())
        why = ("Not a directory" if not above.is_dir() else
               None if os.access(above, os.W_OK | os.X_OK) else "Permission denied")
        if why:
            raise DataError(out, f"results directory is not writable ({why})")
        return out
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


def is_readable_result(path: Path) -> bool:
    """True when `path` is a result file ferbench can read (a stored run to skip)."""
    try:
        read_result(path)
    except FerbenchError:
        return False
    return True


def read_results(folder: str | Path, errors: list | None = None) -> list[dict]:
    """Every result JSON under `folder` (recursively), sorted by path.

    Files that are not readable results are skipped; with `errors`, each is
    appended to it as (path, reason).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "is a file, not a results folder" if folder.exists()
                        else "results folder does not exist")
    out = []
    for p in sorted(folder.rglob("seed*.json")):
        if p.parent.name == "noise":
            continue
        try:
            out.append(read_result(p))
        except FerbenchError as e:
            if errors is not None:
                # The reason alone: the path is the pair's first half.
                errors.append((p, e.problem if isinstance(e, DataError) and e.path == p
                               else str(e)))
    return out
