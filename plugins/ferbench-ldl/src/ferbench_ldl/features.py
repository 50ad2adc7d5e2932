"""Label-free points computed from the pixels alone: the classic FER features.

Computed on the run's decoded cache (the images at the run's size, before any
augmentation), in grey, with scikit-image.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch


def _grey(images: np.ndarray) -> np.ndarray:
    """uint8 grey images [N, S, S]: LBP compares integer pixels (floats make ties noisy)."""
    if images.ndim == 4:
        images = np.rint(images.astype(np.float32).mean(-1))
    return images.astype(np.uint8)


def hog(image: np.ndarray) -> np.ndarray:
    """HOG: 9 orientations, cells of a sixth of the side, 2×2 blocks (L2-Hys)."""
    from skimage.feature import hog as sk_hog

    cell = max(2, image.shape[0] // 6)
    return sk_hog(image, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2),
                  feature_vector=True)


def lbp(image: np.ndarray, grid: int = 4, points: int = 8, radius: int = 1) -> np.ndarray:
    """Uniform LBP codes histogrammed on a grid×grid layout, each cell's histogram summing
    to 1 (Shan et al.'s FER features)."""
    from skimage.feature import local_binary_pattern

    codes = local_binary_pattern(image, points, radius, method="uniform")
    bins = points + 2
    s = image.shape[0]
    edges = np.linspace(0, s, grid + 1).astype(int)
    out = []
    for r0, r1 in zip(edges[:-1], edges[1:]):
        for c0, c1 in zip(edges[:-1], edges[1:]):
            h = np.bincount(codes[r0:r1, c0:c1].astype(np.int64).ravel(), minlength=bins)
            out.append(h / max(1, h.sum()))
    return np.concatenate(out)


FEATURES = {"hog": hog, "lbp": lbp}


def image_features(split, kind: str, chunk: int = 512, workers: int | None = None) -> torch.Tensor:
    """One feature vector per sample of a split (its cached uint8 images), float [N, D].

    Spread over `workers` processes (default: this run's torch threads, so a packed
    sweep's share of the cores is respected): at 224 px a face's HOG takes ~5 ms, which
    is minutes for FERPlus on one core.
    """
    spans = [(kind, s, min(len(split), s + chunk)) for s in range(0, len(split), chunk)]
    workers = min(workers or torch.get_num_threads(), len(spans))
    if workers <= 1:
        _init_worker(split)
        parts = [_features_of(span) for span in spans]
    else:
        # fork: the memory-mapped cache is inherited, not pickled to every worker
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"),
                                 initializer=_init_worker, initargs=(split,)) as pool:
            parts = list(pool.map(_features_of, spans))
    return torch.from_numpy(np.concatenate(parts))


_SPLIT = None


def _init_worker(split):
    global _SPLIT
    _SPLIT = split


def _features_of(span) -> np.ndarray:
    kind, start, stop = span
    grey = _grey(np.asarray(_SPLIT.cache[start:stop]))
    return np.stack([FEATURES[kind](img) for img in grey]).astype(np.float32)
