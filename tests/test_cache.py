"""The decoded cache: every image decoded once, memory-mapped after, rebuilt when a file changes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import write_image
from PIL import Image

from ferbench.data import cache as cache_mod
from ferbench.data.cache import cache_root, entry_name, load_cached
from ferbench.datasets.samples import FileSource, Samples
from ferbench.errors import DataError
from ferbench.labels import BASIC7


def _ids(n: int, ext: str = "png") -> list[str]:
    return [f"faces/{i:04d}.{ext}" for i in range(n)]


def _samples(root: Path, ids) -> Samples:
    """A fresh split over files already on disk (what re-opening a dataset gives)."""
    ids = tuple(ids)
    return Samples(dataset="fixture", split="train", ids=ids, source=FileSource(root, ids),
                   labels=np.arange(len(ids)) % len(BASIC7), classes=BASIC7)


def _draw(root: Path, n: int, size: int = 40, mode: str = "L", ext: str = "png") -> Samples:
    ids = _ids(n, ext)
    for i, rel in enumerate(ids):
        write_image(root / rel, seed=i, size=size, mode=mode)
    return _samples(root, ids)


def _expected(path: Path, size: int, mode: str) -> np.ndarray:
    """What a user expects in the cache: the file decoded by PIL, converted and resized."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert(mode).resize((size, size), Image.BILINEAR))
    return arr[..., None] if arr.ndim == 2 else arr


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_first_load_decodes_and_second_reuses_a_memory_map(tmp_path, isolated_cache):
    samples = _draw(tmp_path / "data", 12)

    first = load_cached(samples, 32, "L", workers=1)
    assert first.built is True
    assert first.path == isolated_cache / entry_name(samples, 32, "L")
    assert first.images.shape == (12, 32, 32, 1) and first.images.dtype == np.uint8
    assert first.hashes.shape == (12,)

    again = load_cached(_samples(tmp_path / "data", samples.ids), 32, "L", workers=1)
    assert again.built is False and again.path == first.path
    assert isinstance(again.images, np.memmap)
    assert Path(again.images.filename) == first.path / "images.npy"
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(first.images))
    meta = json.loads((first.path / "meta.json").read_text())
    assert meta["n"] == 12 and meta["size"] == 32 and meta["mode"] == "L"
    assert meta["fingerprint"] == samples.fingerprint


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_cached_images_are_the_decoded_pixels_resized(tmp_path, mode):
    root = tmp_path / "data"
    ids = _ids(6)
    for i, rel in enumerate(ids):  # grey and colour files in one split
        write_image(root / rel, seed=i, size=56, mode="RGB" if i % 2 else "L")
    cached = load_cached(_samples(root, ids), 24, mode, workers=1)
    assert cached.images.shape == (6, 24, 24, 3 if mode == "RGB" else 1)
    for i, rel in enumerate(ids):
        np.testing.assert_array_equal(cached.images[i], _expected(root / rel, 24, mode))


def test_identical_pixels_share_a_hash_and_different_pixels_do_not(tmp_path):
    root = tmp_path / "data"
    ids = _ids(4)
    for rel, seed in zip(ids, (0, 1, 0, 2)):
        write_image(root / rel, seed=seed)
    hashes = [bytes(h) for h in load_cached(_samples(root, ids), 32, workers=1).hashes]
    assert hashes[0] == hashes[2]
    assert len({hashes[0], hashes[1], hashes[3]}) == 3


def test_changed_file_rebuilds_the_entry_with_the_new_pixels(tmp_path, isolated_cache):
    root = tmp_path / "data"
    samples = _draw(root, 8, ext="bmp")  # BMP: a rewritten file keeps its size on disk
    first = load_cached(samples, 40, workers=1)
    assert first.built

    changed = root / samples.ids[3]
    before = changed.stat()
    write_image(changed, seed=99, size=40)
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns + 5_000_000_000))
    assert changed.stat().st_size == before.st_size

    reopened = _samples(root, samples.ids)
    assert reopened.fingerprint == samples.fingerprint  # same entry name: the stamp decides
    rebuilt = load_cached(reopened, 40, workers=1)
    assert rebuilt.built is True and rebuilt.path == first.path
    np.testing.assert_array_equal(rebuilt.images[3], _expected(changed, 40, "L"))
    assert not np.array_equal(rebuilt.images[3], np.asarray(first.images[3]))
    np.testing.assert_array_equal(rebuilt.images[2], _expected(root / samples.ids[2], 40, "L"))
    assert _leftovers(isolated_cache) == [first.path.name]

    assert load_cached(_samples(root, samples.ids), 40, workers=1).built is False


def test_unreadable_meta_file_is_rebuilt(tmp_path):
    samples = _draw(tmp_path / "data", 3)
    first = load_cached(samples, 32, workers=1)
    (first.path / "meta.json").write_text("{not json")
    assert load_cached(samples, 32, workers=1).built is True


def test_each_size_and_mode_has_its_own_entry(tmp_path, isolated_cache):
    samples = _draw(tmp_path / "data", 5)
    entries = {(size, mode): load_cached(samples, size, mode, workers=1)
               for size, mode in ((32, "L"), (24, "L"), (32, "RGB"))}
    assert all(c.built for c in entries.values())
    assert len({c.path for c in entries.values()}) == 3
    assert entries[(24, "L")].images.shape == (5, 24, 24, 1)
    assert entries[(32, "RGB")].images.shape == (5, 32, 32, 3)
    assert len(_leftovers(isolated_cache)) == 3
    assert load_cached(samples, 24, "L", workers=1).built is False


def test_unknown_mode_is_refused(tmp_path):
    samples = _draw(tmp_path / "data", 1)
    with pytest.raises(ValueError, match="mode"):
        load_cached(samples, 32, "CMYK")


def test_corrupt_image_stops_the_build_and_leaves_nothing_behind(tmp_path, isolated_cache):
    root = tmp_path / "data"
    samples = _draw(root, 10)
    bad = root / samples.ids[6]
    bad.write_bytes(b"this is not a PNG file at all" * 10)

    with pytest.raises(DataError) as err:
        load_cached(_samples(root, samples.ids), 32, workers=1)
    assert err.value.path == bad
    assert str(err.value).startswith(f"{bad}: ") and "corrupt" in str(err.value)
    assert _leftovers(isolated_cache) == []  # no entry folder, no temporary folder


def test_interrupted_build_leaves_nothing_behind(tmp_path, isolated_cache, monkeypatch):
    samples = _draw(tmp_path / "data", 10)
    real_decode, calls = cache_mod.decode, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_decode(*args)

    monkeypatch.setattr(cache_mod, "decode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_cached(samples, 32, workers=1)
    assert _leftovers(isolated_cache) == []

    monkeypatch.setattr(cache_mod, "decode", real_decode)
    assert load_cached(samples, 32, workers=1).built is True  # the next run starts cleanly


def test_error_in_a_decoding_worker_reaches_the_caller_intact(tmp_path, isolated_cache):
    n = 2 * cache_mod.CHUNK + 100  # three chunks: the multi-process path
    root = tmp_path / "data"
    samples = _draw(root, n, size=16)
    good = load_cached(samples, 16, workers=2)
    assert good.built and good.images.shape == (n, 16, 16, 1)
    for i in (0, cache_mod.CHUNK, n - 1):  # chunks land where they belong
        np.testing.assert_array_equal(good.images[i], _expected(root / samples.ids[i], 16, "L"))
    good_name = good.path.name

    bad = root / samples.ids[cache_mod.CHUNK + 50]
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError) as err:
        load_cached(_samples(root, samples.ids), 16, workers=2)
    assert type(err.value) is DataError
    assert err.value.path == bad and err.value.line is None
    assert bad.name in str(err.value) and "corrupt" in str(err.value)
    # The failed rebuild left no temporary folder; the earlier complete entry is untouched.
    assert _leftovers(isolated_cache) == [good_name]


def test_a_decoding_worker_killed_midway_is_one_error_not_a_hang(tmp_path, isolated_cache,
                                                                 monkeypatch):
    n = 3 * cache_mod.CHUNK
    samples = _draw(tmp_path / "data", n, size=16)
    real_decode = cache_mod.decode
    victim = samples.ids[cache_mod.CHUNK + 7]

    def killed_on_one_face(raw, size, mode):  # what the kernel's OOM killer does to a worker
        if os.getpid() != parent and _decoding[0] == victim:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_decode(raw, size, mode)

    parent = os.getpid()
    _decoding = [None]
    real_read = samples.source.read

    def read(i):
        _decoding[0] = samples.ids[i]
        return real_read(i)

    monkeypatch.setattr(samples.source, "read", read)
    monkeypatch.setattr(cache_mod, "decode", killed_on_one_face)
    with pytest.raises(DataError) as err:
        load_cached(samples, 16, workers=2)
    assert "decoding worker died" in str(err.value) and "nothing was cached" in str(err.value)
    assert err.value.path.parent == isolated_cache
    assert _leftovers(isolated_cache) == []


def test_cache_folder_comes_from_FERBENCH_CACHE(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere" / "cache"
    monkeypatch.setenv("FERBENCH_CACHE", str(elsewhere))
    assert cache_root() == elsewhere
    cached = load_cached(_draw(tmp_path / "data", 2), 32, workers=1)
    assert cached.path.parent == elsewhere

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FERBENCH_CACHE", "~/fer-cache")
    assert cache_root() == tmp_path / "home" / "fer-cache"

    monkeypatch.delenv("FERBENCH_CACHE")
    assert cache_root().name == "ferbench"  # the user cache dir (not created by asking)


def test_two_processes_building_one_entry_both_succeed(tmp_path, monkeypatch):
    """Parallel runs (seeds of a sweep on a cluster) share one cache and may build together."""
    import shutil

    samples = _draw(tmp_path / "data", 4)
    real_replace = os.replace

    def other_process_finishes_first(src, dst):
        if Path(src).is_dir():
            shutil.copytree(src, dst)  # the other writer's complete entry lands first
        return real_replace(src, dst)

    monkeypatch.setattr(cache_mod.os, "replace", other_process_finishes_first)
    cached = load_cached(samples, 32, workers=1)
    assert cached.images.shape == (4, 32, 32, 1)
    assert _leftovers(cached.path.parent) == [cached.path.name]


def test_cropped_and_full_frames_of_the_same_files_do_not_share_an_entry(tmp_path):
    root = tmp_path / "data"
    ids = _ids(3)
    for i, rel in enumerate(ids):
        write_image(root / rel, seed=i, size=64)
    boxes = np.tile([8, 8, 32, 32], (3, 1))
    cropped = Samples(dataset="fixture", split="train", ids=tuple(ids),
                      source=FileSource(root, ids, boxes), labels=np.arange(3) % len(BASIC7),
                      classes=BASIC7)
    assert cropped.fingerprint == _samples(root, ids).fingerprint  # the same files and labels
    load_cached(cropped, 32, workers=1)

    full = load_cached(_samples(root, ids), 32, workers=1)
    np.testing.assert_array_equal(full.images[0], _expected(root / ids[0], 32, "L"))
