"""Shared fixtures: small image files the tests draw themselves, and an isolated cache."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_image(path: Path, seed: int = 0, size: int = 48, mode: str = "L", fmt: str | None = None):
    """Write a small random image (distinct per seed) and return its path."""
    rng = np.random.default_rng(seed)
    shape = (size, size) if mode == "L" else (size, size, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path, format=fmt)
    return path


def one_error_line(result, *fragments: str) -> str:
    """The one line a refused command prints: exit status 2, `ferbench: error: ...` holding
    each of `fragments`, no traceback. `result` is a click CliRunner result."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ferbench: error: ") and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def benchmark_script(name: str):
    """A script under benchmarks/ (not a package), imported as a module."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def real_archive(name: str) -> Path:
    """The path of a real archive in ../shared/data, or skip the test saying why."""
    path = SHARED_DATA / f"{name}.tar.gz"
    if not path.exists():
        pytest.skip(f"{path} is absent: real-data test skipped")
    return path


@pytest.fixture(scope="session")
def unpacked(tmp_path_factory):
    """unpacked(name) → the root of a real archive unpacked once per test session."""
    import tarfile

    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            archive = real_archive(name)
            dest = tmp_path_factory.mktemp(f"real-{name}")
            if shutil.which("tar"):  # ten times faster than tarfile on 35k small files
                subprocess.run(["tar", "-xzf", str(archive), "-C", str(dest)], check=True)
            else:
                with tarfile.open(archive) as tar:
                    tar.extractall(dest, filter="data")
            done[name] = dest / name
        return done[name]

    return get


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty decoded cache."""
    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
