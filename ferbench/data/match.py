"""Find the same faces in two image sets, up to lossy re-encoding (JPEG) noise.

Two images are "the same" when their root-mean-square difference is at most
`tolerance` grey levels. A coarse pass on block means finds every candidate
without missing one: the mean of a block of differences squared never exceeds the
mean of the squared differences (Jensen), so the coarse RMS distance is a lower
bound of the full one. Only the candidates are then compared pixel by pixel.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# On the real archives the FER2013 JPEG export differs from FERPlus's lossless PNGs of
# the same faces by at most 2.01 RMS grey levels (median 1.74); distinct faces differ by
# far more. Twice the observed maximum leaves room for a coarser JPEG quality.
TOLERANCE = 4.0
_BLOCK = 4
_CHUNK = 1024


def _float(images: np.ndarray) -> torch.Tensor:
    # np.array copies: a read-only memory map cannot back a tensor.
    return torch.from_numpy(np.array(images, dtype=np.float32))


def _flat(images: np.ndarray) -> torch.Tensor:
    x = _float(images)
    return x.reshape(len(x), -1) - 128.0


def _coarse(images: np.ndarray) -> torch.Tensor:
    x = _float(images)
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)  # [N, C, H, W]
    return F.avg_pool2d(x, _block(images)).flatten(1) - 128.0


def _block(images: np.ndarray) -> int:
    return _BLOCK if min(images.shape[1:3]) >= 4 * _BLOCK else 1


def same_images(query: np.ndarray, pool: np.ndarray, tolerance: float = TOLERANCE,
                exclude_self: bool = False) -> list[np.ndarray]:
    """For each query image, the indices of the pool images within `tolerance` RMS.

    `query` [N, H, W(, C)] and `pool` [M, H, W(, C)] are uint8 of one shape. With
    `exclude_self` (query is pool), an image is not listed as its own match.
    """
    if query.shape[1:] != pool.shape[1:]:
        raise ValueError(f"image shapes differ: {query.shape[1:]} and {pool.shape[1:]}")
    out: list[np.ndarray] = [np.zeros(0, np.int64)] * len(query)
    if not len(query) or not len(pool):
        return out
    pc = _coarse(pool)
    pc_sq = (pc * pc).sum(1)
    pf = _flat(pool)
    dims_f = pf.shape[1]
    # A little slack for float32 rounding in the expanded square; the exact test follows.
    # Blocks cover at most all pixels, and each block's squared mean difference times its
    # size is at most the sum of its squared differences: coarse ≤ full / block size.
    limit_c = tolerance ** 2 * dims_f / _block(pool) ** 2 * 1.001 + 1.0
    limit_f = tolerance ** 2 * dims_f
    for start in range(0, len(query), _CHUNK):
        qc = _coarse(query[start:start + _CHUNK])
        d = (qc * qc).sum(1, keepdim=True) + pc_sq[None] - 2.0 * qc @ pc.T
        qi, pi = torch.nonzero(d <= limit_c, as_tuple=True)
        if exclude_self:
            keep = (qi + start) != pi
            qi, pi = qi[keep], pi[keep]
        if not len(qi):
            continue
        qf = _flat(query[start:start + _CHUNK])
        exact = torch.empty(len(qi))
        for s in range(0, len(qi), 65536):  # bounded memory for large clusters of blank faces
            diff = qf[qi[s:s + 65536]] - pf[pi[s:s + 65536]]
            exact[s:s + 65536] = (diff * diff).sum(1)
        ok = exact <= limit_f
        qi, pi = qi[ok].numpy(), pi[ok].numpy()
        order = np.argsort(qi, kind="stable")
        qi, pi = qi[order], pi[order]
        bounds = np.searchsorted(qi, np.arange(len(qf) + 1))
        for j in range(len(qf)):
            if bounds[j + 1] > bounds[j]:
                out[start + j] = pi[bounds[j]:bounds[j + 1]].astype(np.int64)
    return out


def found_in(query: np.ndarray, pool: np.ndarray, tolerance: float = TOLERANCE,
             pixels_per_chunk: int = 2 ** 25) -> np.ndarray:
    """Which query images have a match in `pool`, reading the pool a bounded chunk at a time
    (an AffectNet-sized pool never sits in memory as floats)."""
    found = np.zeros(len(query), dtype=bool)
    step = max(1, pixels_per_chunk // max(1, int(np.prod(pool.shape[1:]))))
    for start in range(0, len(pool), step):
        todo = np.flatnonzero(~found)
        if not len(todo):
            break
        hits = same_images(query[todo], pool[start:start + step], tolerance)
        found[todo[[len(h) > 0 for h in hits]]] = True
    return found
