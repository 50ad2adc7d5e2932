"""synthfer: the embedded dataset of procedurally drawn grey faces with known label distributions.

Every face blends per-emotion prototype feature vectors (mouth curve, opening
and width, brow angle and height, eye opening, cheek lines, mouth asymmetry)
with weights drawn from a peaked Dirichlet. Those weights are the image's
ground-truth label distribution (extra `distribution`, label-carrying), and
its label is *drawn* from them, so about one label in five differs from the
visible mode: real ambiguity, not noise added afterwards. A random
identity (face shape, feature placement, skin tone), pose, lighting and pixel
noise keep the classes hard to tell apart: a small CNN trained for two CPU
minutes reaches about 64% test accuracy, against 79% for always naming the
distribution's mode (benchmarks/bench_synthfer.py).

Rendering is vectorised numpy over batches: each shape is a signed distance in
face-local coordinates, turned into anti-aliased coverage by clipping the
distance in pixels (a one-pixel soft edge), so no Python runs per pixel.
Everything is deterministic from (seed, split, chunk of 256 images): a split
with more samples extends one with fewer, and the same faces are drawn at any
`size` because pose and features come from a stream separate from pixel noise.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..labels import BASIC7, CLASSES
from .base import Dataset, DatasetAdapter
from .samples import ImageSource, NumberedIds, Samples

# Bump when the drawing changes, so every cache entry and fingerprint changes with it.
GENERATOR_VERSION = 1
CHUNK = 256  # the unit of reproducibility: chunk i of a split always comes from the same seeds
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

FEATURES = ("mouth_curve", "mouth_open", "mouth_width", "brow_angle", "brow_height",
            "eye_open", "cheek_lines", "mouth_asym")
# One prototype per canonical class (rows in `CLASSES` order), loosely after FACS action
# units: happiness lifts the mouth corners (AU12) and raises cheek lines (AU6), surprise
# raises the brows and opens eyes and mouth (AU1+2, 5, 26), sadness tilts the inner brows
# up (AU1+4) and drops the corners (AU15), anger lowers and knits the brows (AU4), disgust
# narrows the eyes and deepens the nasolabial lines (AU9/10), fear mixes raised inner
# brows with wide eyes and a stretched mouth (AU1+2+4, 5, 20), and contempt lifts one
# mouth corner only (unilateral AU14).
PROTOTYPES = np.array([
    # curve open  width  b.ang  b.hgt  eye   lines  asym
    [0.00, 0.00, 1.00, 0.00, 0.00, 1.00, 0.00, 0.00],    # neutral
    [1.00, 0.30, 1.18, 0.00, 0.10, 0.75, 0.80, 0.00],    # happiness
    [0.00, 1.00, 0.82, -0.20, 1.00, 1.40, 0.00, 0.00],   # surprise
    [-0.90, 0.00, 0.95, -1.00, 0.00, 0.85, 0.10, 0.00],  # sadness
    [-0.40, 0.10, 0.90, 1.00, -0.70, 0.95, 0.30, 0.00],  # anger
    [-0.60, 0.25, 0.95, 0.50, -0.40, 0.70, 1.00, 0.00],  # disgust
    [-0.30, 0.60, 1.10, -0.80, 0.80, 1.30, 0.00, 0.00],  # fear
    [0.10, 0.00, 1.00, 0.00, 0.00, 0.95, 0.10, 1.00],    # contempt
], dtype=np.float64)

LANDMARKS = ("eye_l", "eye_r", "brow_l_outer", "brow_l_inner", "brow_r_inner", "brow_r_outer",
             "nose_tip", "mouth_l", "mouth_r", "mouth_top", "mouth_bottom")
"""The drawn points in `landmarks` extras, in this order; `_l` is the image's left (x smaller)."""

# Difficulty knobs, tuned (benchmarks/bench_synthfer.py) so that a small CNN trained for two
# CPU minutes lands near 65% test accuracy against a ceiling of ~79% (label = mode): the
# expression intensity scales the blend's distance from neutral (a weak smile is nearly
# neutral), feature noise blurs the prototypes, pixel noise hides one-pixel cues, and
# identity offsets overlap the cues they mimic (a high-browed neutral face looks surprised).
_INTENSITY = (0.9, 1.4)
_FEATURE_NOISE = np.array([0.09, 0.05, 0.035, 0.125, 0.125, 0.06, 0.10, 0.075])
_PIXEL_NOISE = (0.015, 0.05)  # range of the per-image Gaussian noise sigma (intensity 0-1)


class SynthFER(DatasetAdapter):
    """Procedurally drawn faces: no files, every split generated on open from `seed`."""

    name = "synthfer"
    description = "embedded synthetic faces with ground-truth label distributions (no download)"
    layouts = {"generated": "drawn in memory from the options; no files"}
    options = {"seed": 0, "n_train": 4000, "n_val": 0, "n_test": 1000, "size": 48,
               "contempt": False, "alpha": 0.2, "concentration": 5.0}
    needs_root = False
    grey = True
    # Made for checking an installation in CPU minutes, not for ranking methods.
    default_preset = "quick"

    def detect(self, root: Path) -> list[str]:
        return []  # nothing on disk is synthfer; open_dataset never asks, as needs_root is False

    def open(self, root: Path | None, layout: str, options: dict[str, Any]) -> Dataset:
        opts = _check(options)
        classes = CLASSES if opts["contempt"] else BASIC7
        tag = options_hash(opts)
        splits = {}
        for split in ("train", "val", "test"):
            n = opts[f"n_{split}"]
            if n == 0 and split == "val":
                continue
            labels, dist, marks = (annotations_on_disk(n, split, opts, tag) if n >= ON_DISK
                                   else annotations(n, split, opts))
            splits[split] = Samples(
                dataset=self.name, split=split,
                # The option hash in every id makes the fingerprint (ids, sizes, labels) and
                # so the cache entry and noise files change whenever the drawing does.
                ids=NumberedIds(f"synthfer-{tag}/{split}/", n),
                # NumPy's random streams may change between its releases; the stamp notices.
                source=SynthSource(n, split, opts, stamp=f"synthfer-v{GENERATOR_VERSION}-{tag}-"
                                                         f"numpy{np.__version__}"),
                labels=labels, classes=classes,
                extras={"distribution": dist, "landmarks": marks},
                label_extras=frozenset({"distribution"}),
                notes=(("labels are drawn from the ground-truth `distribution`; "
                        "`landmarks` are the drawn points with detector-like jitter"),),
            )
        return Dataset(name=self.name, root=None, layout=layout, classes=classes,
                       splits=splits, val="val" if "val" in splits else None)


def _check(options: dict[str, Any]) -> dict[str, Any]:
    """The options with their canonical types (so 1 and 1.0 hash alike), or ConfigError."""
    opts = dict(SynthFER.options, **options)
    try:
        for key, kind in (("seed", int), ("n_train", int), ("n_val", int), ("n_test", int),
                          ("size", int), ("contempt", bool), ("alpha", float),
                          ("concentration", float)):
            opts[key] = kind(opts[key])
    except (TypeError, ValueError) as e:
        raise ConfigError(f"options of dataset synthfer: {e}") from None
    for key in ("seed", "n_train", "n_val", "n_test"):
        least = 1 if key in ("n_train", "n_test") else 0
        if opts[key] < least:
            raise ConfigError(f"option {key}={opts[key]} of dataset synthfer: must be "
                              f">= {least}")
    if opts["size"] < 16:
        raise ConfigError(f"option size={opts['size']} of dataset synthfer: must be >= 16")
    if opts["alpha"] <= 0 or opts["concentration"] < 0:
        raise ConfigError("options of dataset synthfer: alpha must be > 0, concentration >= 0")
    return opts


def options_hash(opts: dict[str, Any]) -> str:
    """8 hex digits of the options that change any sample's pixels or labels (not the counts)."""
    keys = ("seed", "size", "contempt", "alpha", "concentration")
    blob = json.dumps({k: opts[k] for k in keys} | {"v": GENERATOR_VERSION}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def _chunk_rngs(split: str, opts: dict[str, Any], c: int):
    # Separate streams for the face and for the pixels: the same faces at any size.
    key = [opts["seed"], _SPLIT_CODES[split], c, GENERATOR_VERSION]
    return np.random.default_rng(key + [0]), np.random.default_rng(key + [1])


def _chunk_parameters(split: str, opts: dict[str, Any], c: int):
    k = 8 if opts["contempt"] else 7
    face_rng, pixel_rng = _chunk_rngs(split, opts, c)
    # Always draw a full chunk, so a split's chunk does not depend on where the split ends.
    return _draw_parameters(face_rng, CHUNK, k, opts["alpha"], opts["concentration"]), pixel_rng


def annotations(n: int, split: str, opts: dict[str, Any], out=None):
    """Everything of `n` faces but their pixels: labels [n], distributions float32 [n, K]
    (canonical class order) and landmarks float32 [n, len(LANDMARKS), 2]; filled into
    `out` (three arrays of those shapes) when given."""
    k = 8 if opts["contempt"] else 7
    labels, dist, marks = out or (np.empty(n, dtype=np.int64),
                                  np.empty((n, k), dtype=np.float32),
                                  np.empty((n, len(LANDMARKS), 2), dtype=np.float32))
    for c, start in enumerate(range(0, n, CHUNK)):
        stop = min(n, start + CHUNK)
        p, _ = _chunk_parameters(split, opts, c)
        m = stop - start
        labels[start:stop], dist[start:stop] = p["label"][:m], p["dist"][:m]
        marks[start:stop] = _landmarks(p, opts["size"])[:m]
    return labels, dist, marks


# From this many faces a split's annotations live in files beside the image cache, memory-
# mapped: about 130 bytes a face that would otherwise stay in the process's own memory.
ON_DISK = 50_000


def annotations_on_disk(n: int, split: str, opts: dict[str, Any], tag: str):
    """`annotations`, computed once into files under the cache folder and memory-mapped
    (copy-on-write: a method may change its copy, never the files)."""
    from ..data.cache import cache_root

    k = 8 if opts["contempt"] else 7
    folder = (cache_root() / "synthfer-annotations"
              / f"{tag}-v{GENERATOR_VERSION}-numpy{np.__version__}")
    shapes = {"labels": ((n,), np.int64), "distribution": ((n, k), np.float32),
              "landmarks": ((n, len(LANDMARKS), 2), np.float32)}
    paths = {name: folder / f"{split}-{n}-{name}.npy" for name in shapes}
    if not all(p.exists() for p in paths.values()):
        folder.mkdir(parents=True, exist_ok=True)
        tmp = {name: p.with_suffix(f".{os.getpid()}.tmp") for name, p in paths.items()}
        try:
            out = tuple(np.lib.format.open_memmap(tmp[name], mode="w+", dtype=dtype, shape=shape)
                        for name, (shape, dtype) in shapes.items())
            annotations(n, split, opts, out)
            for array in out:
                array.flush()
            del out
            for name in paths:
                os.replace(tmp[name], paths[name])
        finally:
            for t in tmp.values():
                t.unlink(missing_ok=True)
    return tuple(np.load(p, mmap_mode="c") for p in paths.values())


def render_chunk(c: int, split: str, opts: dict[str, Any], m: int = CHUNK) -> np.ndarray:
    """The first `m` faces of chunk `c` of `split`: uint8 [m, S, S]."""
    size = opts["size"]
    p, pixel_rng = _chunk_parameters(split, opts, c)
    noise = pixel_rng.standard_normal((CHUNK, size * size), dtype=np.float32)
    grid = _grid(size)
    images = np.empty((m, size, size), dtype=np.uint8)
    for b in range(0, m, 64):  # 64 faces keep the [B, H*W] temporaries in cache
        sl = slice(b, min(m, b + 64))
        img = _render({key_: v[sl] for key_, v in p.items()}, grid, size, noise[sl])
        images[sl] = img.reshape(-1, size, size)
    return images


def generate(n: int, split: str, opts: dict[str, Any]):
    """`n` faces of `split` drawn with checked `opts`: uint8 images [n, S, S] and the
    arrays of `annotations`."""
    images = np.empty((n, opts["size"], opts["size"]), dtype=np.uint8)
    for c, start in enumerate(range(0, n, CHUNK)):
        stop = min(n, start + CHUNK)
        images[start:stop] = render_chunk(c, split, opts, stop - start)
    return (images, *annotations(n, split, opts))


class SynthSource(ImageSource):
    """Faces rendered when read, a chunk at a time: opening a split of a million faces
    costs its labels, not its pixels, and a cached split is never drawn again."""

    def __init__(self, n: int, split: str, opts: dict[str, Any], stamp: str):
        self.n, self.split, self.opts, self._stamp = n, split, dict(opts), stamp
        self._memo: tuple[int, np.ndarray | None] = (-1, None)

    def __len__(self):
        return self.n

    def read(self, i):
        i = int(i)
        if not 0 <= i < self.n:
            raise IndexError(i)
        c = i // CHUNK
        if self._memo[0] != c:
            m = min(CHUNK, self.n - c * CHUNK)
            self._memo = (c, render_chunk(c, self.split, self.opts, m))
        return self._memo[1][i - c * CHUNK]

    def sizes(self):
        return np.full(self.n, self.opts["size"] ** 2, dtype=np.int64)

    def stamp(self):
        return self._stamp

    def __getstate__(self):  # worker processes draw their own chunks
        return {**self.__dict__, "_memo": (-1, None)}


def _draw_parameters(rng: np.random.Generator, n: int, k: int, alpha: float, boost: float):
    """Label distribution, label, expression features, identity, pose and lighting of n faces."""
    # A peaked Dirichlet: `alpha` everywhere plus `boost` on a dominant class drawn uniformly,
    # so classes are balanced and the mode carries ~81% of the mass with the defaults.
    conc = np.full((n, k), alpha)
    conc[np.arange(n), rng.integers(0, k, n)] += boost
    g = rng.standard_gamma(conc)
    w = g / g.sum(1, keepdims=True)
    label = np.minimum((np.cumsum(w, 1) < rng.random(n)[:, None]).sum(1), k - 1)
    neutral = PROTOTYPES[0]
    blend = w @ PROTOTYPES[:k]
    f = neutral + rng.uniform(*_INTENSITY, (n, 1)) * (blend - neutral)
    f = f + rng.standard_normal((n, len(FEATURES))) * _FEATURE_NOISE
    u = rng.random((n, 16))
    p = {name: f[:, i] for i, name in enumerate(FEATURES)}
    p.update(
        label=label, dist=w.astype(np.float32),
        # identity: face aspect, feature placement and size, skin and background tone
        face_h=1.22 + 0.16 * u[:, 0], eye_x=0.36 + 0.08 * u[:, 1], eye_y=-0.30 + 0.10 * u[:, 2],
        eye_w=0.17 + 0.05 * u[:, 3], brow_gap=0.20 + 0.08 * u[:, 4], mouth_y=0.52 + 0.12 * u[:, 5],
        skin=0.50 + 0.30 * u[:, 6], bg=0.10 + 0.80 * u[:, 7],
        # pose: rotation (±15°), scale, translation (in units of the image side)
        angle=np.deg2rad(30 * u[:, 8] - 15), scale=0.30 + 0.07 * u[:, 9],
        dx=0.12 * u[:, 10] - 0.06, dy=0.12 * u[:, 11] - 0.06,
        # lighting: contrast, brightness and a linear gradient across the image
        contrast=0.65 + 0.55 * u[:, 12], bright=0.2 * u[:, 13] - 0.1,
        grad=0.5 * u[:, 14], grad_dir=2 * np.pi * u[:, 15],
        sigma=rng.uniform(*_PIXEL_NOISE, n), jitter=rng.standard_normal((n, len(LANDMARKS), 2)),
    )
    return p


def _geometry(p):
    """Face-local positions of the drawn parts (unit: the face's half-width; v points down)."""
    mw = 0.30 * np.clip(p["mouth_width"], 0.6, 1.5)
    corner = -0.13 * p["mouth_curve"]  # negative v is up: a smile lifts both corners
    c_l, c_r = corner, corner - 0.12 * p["mouth_asym"]  # contempt lifts the image-right corner
    brow_y = p["eye_y"] - p["brow_gap"] - 0.10 * p["brow_height"]
    return {
        "mw": mw, "quad": (c_l + c_r) / 2, "lin": (c_r - c_l) / 2,  # lip: my + quad t² + lin t
        "open": 0.22 * np.clip(p["mouth_open"], 0, None), "my": p["mouth_y"],
        "eye_h": np.clip(0.075 * p["eye_open"], 0.012, None),
        "brow_iy": brow_y + 0.09 * p["brow_angle"],  # anger pulls the inner ends down
        "brow_ox": p["eye_x"] + 0.22, "brow_oy": brow_y - 0.02 * p["brow_angle"],
    }


_BROW_IX = 0.12  # the inner brow ends stay put: knitting shows as the angle
_NOSE_TIP = (0.07, 0.22)  # the nostril wing; its mirror image completes the nose


def _col(a):
    """A per-face parameter [B] as a float32 column [B, 1], to broadcast over pixels."""
    return np.asarray(a, dtype=np.float32)[:, None]


def _pose(p, size):
    """Per-face translation (pixels), px per face unit, cos and sin, each a column [B, 1]."""
    tx, ty = (size - 1) / 2 + p["dx"] * size, (size - 1) / 2 + p["dy"] * size + 0.03 * size
    return (_col(tx), _col(ty), _col(p["scale"] * size),
            _col(np.cos(p["angle"])), _col(np.sin(p["angle"])))


def _landmarks(p, size):
    """The drawn points in pixel coordinates (x, y; pixel centres at integers), jittered."""
    g = _geometry(p)
    zero, bix = np.zeros_like(g["mw"]), np.full_like(g["mw"], _BROW_IX)
    u = np.stack([-p["eye_x"], p["eye_x"], -g["brow_ox"], -bix, bix, g["brow_ox"], zero,
                  -g["mw"], g["mw"], zero, zero], 1)
    v = np.stack([p["eye_y"], p["eye_y"], g["brow_oy"], g["brow_iy"], g["brow_iy"], g["brow_oy"],
                  zero + _NOSE_TIP[1], g["my"] + g["quad"] - g["lin"],
                  g["my"] + g["quad"] + g["lin"], g["my"], g["my"] + g["open"]], 1)
    tx, ty, s, c, sn = _pose(p, size)
    xy = np.stack([tx + s * (c * u - sn * v), ty + s * (sn * u + c * v)], -1)
    xy = xy + p["jitter"] * (0.8 * size / 48)  # a detector's error: ~0.8 px at 48 px
    return np.clip(xy, 0, size - 1).astype(np.float32)


def _grid(size):
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x.reshape(1, -1), y.reshape(1, -1)


def _render(p, grid, size, noise):
    """Float faces [B, H*W] rendered from parameters, quantised to uint8."""
    g = {k: _col(v) for k, v in _geometry(p).items()}
    tx, ty, px, c, sn = _pose(p, size)  # px: pixels per face unit
    x, y = grid[0] - tx, grid[1] - ty
    # Pixels into face-local coordinates (the inverse of the pose).
    u = x * (c / px) + y * (sn / px)
    v = y * (c / px) - x * (sn / px)
    au = np.abs(u)  # the face is mirror-symmetric except the mouth, so eyes, brows, lines once

    def cover(r, r0=0.0, k=1.0):
        """Anti-aliased coverage of {r < r0}, where (r - r0) * k is the distance in face units.

        The distance in pixels, clipped to [-0.5, 0.5], is a one-pixel soft edge; computed in
        place on `r` (always a temporary here), as rendering is bound by memory traffic.
        """
        r *= -k * px
        r += 0.5 + r0 * k * px
        return np.clip(r, 0, 1, out=r)

    q = v * (1 / _col(p["face_h"]))
    face = cover(np.sqrt(u * u + q * q, out=q), 1.0, 0.9)
    img = _col(p["bg"]) + face * _col(p["skin"] - p["bg"])
    du, dv = (au - _col(p["eye_x"])) * (1 / _col(p["eye_w"])), (v - _col(p["eye_y"])) / g["eye_h"]
    du *= du
    du += dv * dv
    eye = cover(np.sqrt(du, out=du), 1.0, g["eye_h"])
    brow = cover(_segment(au, v, (_BROW_IX, g["brow_iy"]), (g["brow_ox"], g["brow_oy"])), 0.035)
    lines = cover(_segment(au, v, (0.17, 0.20), (g["mw"] + 0.07, g["my"] + 0.04)), 0.012)
    nose = cover(_segment(au, v, (0.0, -0.12), _NOSE_TIP), 0.012)
    # The mouth: upper lip v = my + quad t² + lin t over t = u / mw in [-1, 1]; the distance
    # to it is the vertical gap over sqrt(1 + slope²), and past the corners the horizontal gap.
    t = u / g["mw"]
    below = v - g["my"] - (g["quad"] * t + g["lin"]) * t
    slope = (2 * g["quad"] * t + g["lin"]) * (1 / g["mw"])
    beyond = np.maximum(au - g["mw"], 0)
    edge = np.abs(below) / np.sqrt(1 + slope * slope)
    mouth_line = cover(np.sqrt(edge * edge + beyond * beyond, out=edge), 0.02)
    t *= t
    inside = np.minimum(below, g["open"] * (1 - t) - below)  # between the lips when open
    mouth_in = cover(np.maximum(-inside, beyond, out=inside))
    # Darken multiplicatively, so every part keeps its contrast under any skin tone.
    np.maximum(eye, brow, out=eye)
    np.maximum(mouth_line, mouth_in, out=mouth_line)
    dark = 0.75 * eye + 0.5 * mouth_line + 0.2 * nose
    dark += (0.25 * np.clip(_col(p["cheek_lines"]), 0, 1)) * lines
    dark *= face
    img *= 1 - dark
    # Lighting: contrast about mid-grey, brightness, a linear gradient; then sensor noise.
    img -= 0.5
    img *= _col(p["contrast"])
    img += 0.5 + _col(p["bright"])
    img += x * _col(np.cos(p["grad_dir"]) * p["grad"] / size)
    img += y * _col(np.sin(p["grad_dir"]) * p["grad"] / size)
    img += noise * _col(p["sigma"])
    img *= 255
    img += 0.5
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def _segment(u, v, a, b):
    """Distance from each pixel to the segment a→b (points may be scalars or [B, 1])."""
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    eu, ev = u - ax, v - ay
    t = eu * dx
    t += ev * dy
    t *= 1 / (dx * dx + dy * dy)
    np.clip(t, 0, 1, out=t)
    eu -= t * dx
    ev -= t * dy
    eu *= eu
    ev *= ev
    eu += ev
    return np.sqrt(eu, out=eu)
