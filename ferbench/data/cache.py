"""The decoded cache: every image decoded once to uint8 at one size and colour mode.

An entry is a folder named by dataset, split, fingerprint, size and mode under
`FERBENCH_CACHE` (default: the user cache dir). It holds `images.npy`
([N, S, S, C] uint8, memory-mapped on use, so a cache larger than memory
streams from disk), `hashes.npy` (a 16-byte digest of each image's decoded
pixels at native resolution, for the duplicate audit) and `meta.json`. It is
written under a temporary name and renamed, so an interrupted build leaves no
entry; it is rebuilt when the source's stamp (file sizes and mtimes) changes.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..datasets.samples import Samples
from ..errors import DataError
from ..progress import progress_bar

MODES = {"L": 1, "RGB": 3}
CHUNK = 256


def cache_root() -> Path:
    """`FERBENCH_CACHE`, or ferbench's folder in the user cache dir."""
    env = os.environ.get("FERBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("ferbench"))


@dataclass(frozen=True)
class CachedImages:
    """A memory-mapped cache entry: `images` [N, S, S, C] uint8 and per-image `hashes`."""

    path: Path
    images: np.ndarray
    hashes: np.ndarray
    built: bool  # True when this call decoded the images, False when it reused them


def entry_name(samples: Samples, size: int, mode: str) -> str:
    return f"{samples.dataset}-{samples.split}-{samples.fingerprint}-{size}-{mode}"


def load_cached(samples: Samples, size: int, mode: str = "L", workers: int | None = None,
                show_progress: bool | None = None) -> CachedImages:
    """The cached images of `samples` at `size`x`size` in `mode`, decoding them if needed."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}")
    root = cache_root()
    path = root / entry_name(samples, size, mode)
    stamp = samples.source.stamp()
    meta_file = path / "meta.json"
    if meta_file.exists():
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            meta = {}
        if meta.get("stamp") == stamp and meta.get("n") == len(samples):
            return _open(path, built=False)
    _build(samples, size, mode, path, stamp, workers, show_progress)
    return _open(path, built=True)


def _open(path: Path, built: bool) -> CachedImages:
    return CachedImages(path, np.load(path / "images.npy", mmap_mode="r"),
                        np.load(path / "hashes.npy", mmap_mode="r"), built)


def decode(image: np.ndarray, size: int, mode: str) -> np.ndarray:
    """One decoded image (HxW or HxWx3 uint8) → [size, size, C] uint8 in `mode`."""
    im = Image.fromarray(image)
    if im.mode != mode:
        im = im.convert(mode)
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR, reducing_gap=None)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def pixel_hash(image: np.ndarray) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(str(image.shape).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.digest()


_WORKER_SOURCE = None


def _init_worker(source):
    global _WORKER_SOURCE
    _WORKER_SOURCE = source
    # Ctrl-C reaches the whole process group: the parent stops the pool and reports it once;
    # a worker printing its own traceback would only bury that line.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch  # noqa: F401  (keeps BLAS/OpenMP threads from multiplying in workers)

    torch.set_num_threads(1)


def _decode_chunk(args):
    start, stop, size, mode = args
    src = _WORKER_SOURCE
    images = np.empty((stop - start, size, size, MODES[mode]), dtype=np.uint8)
    hashes = np.empty((stop - start,), dtype="S16")
    for j, i in enumerate(range(start, stop)):
        raw = src.read(i)
        hashes[j] = pixel_hash(raw)
        images[j] = decode(raw, size, mode)
    return start, images, hashes


def _decode_in_workers(samples, chunks, workers, entry):
    """Yield decoded chunks as worker processes finish them.

    An executor rather than `multiprocessing.Pool`: a worker that dies (killed, out of
    memory, a crashing decoder) breaks the executor and reaches the caller as one error,
    where a pool would replace the worker and wait forever for the chunk it lost.
    """
    ctx = mp.get_context("fork")  # the source (open files, parsed CSVs) is inherited, not pickled
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=ctx,
                             initializer=_init_worker, initargs=(samples.source,)) as pool:
        pending = [pool.submit(_decode_chunk, c) for c in chunks]
        try:
            for done in as_completed(pending):
                yield done.result()
        except BrokenProcessPool:
            raise DataError(entry, "a decoding worker died before finishing (killed, or out of "
                                   "memory?); nothing was cached") from None
        finally:
            for f in pending:
                f.cancel()


def _build(samples, size, mode, path, stamp, workers, show_progress):
    root = path.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=root))
    try:
        n = len(samples)
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8,
                                           shape=(n, size, size, MODES[mode]))
        hashes = np.empty((n,), dtype="S16")
        chunks = [(s, min(n, s + CHUNK), size, mode) for s in range(0, n, CHUNK)]
        workers = workers or os.cpu_count() or 1
        with progress_bar(f"decoding {samples.dataset}/{samples.split}", n,
                          show_progress) as advance:
            if workers > 1 and len(chunks) > 1:
                for start, imgs, hs in _decode_in_workers(samples, chunks, workers, path):
                    images[start:start + len(imgs)] = imgs
                    hashes[start:start + len(hs)] = hs
                    advance(len(imgs))
            else:
                global _WORKER_SOURCE
                _WORKER_SOURCE = samples.source
                for c in chunks:
                    start, imgs, hs = _decode_chunk(c)
                    images[start:start + len(imgs)] = imgs
                    hashes[start:start + len(hs)] = hs
                    advance(len(imgs))
        images.flush()
        del images
        np.save(tmp / "hashes.npy", hashes)
        (tmp / "meta.json").write_text(json.dumps({
            "dataset": samples.dataset, "split": samples.split,
            "fingerprint": samples.fingerprint, "n": n, "size": size, "mode": mode,
            "stamp": stamp,
        }))
        shutil.rmtree(path, ignore_errors=True)
        try:
            os.replace(tmp, path)
        except OSError:
            # Another process (a parallel seed) finished the same entry first: use it.
            if not (path / "meta.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
