"""Batches of cached uint8 images on the training device, gathered by sample index.

On the CPU a batch is read from the memory-mapped cache in sorted order (sequential
reads). On a GPU the per-batch host gather and copy would starve a fast model, so a
cache that fits comfortably in device memory is copied there once and batches are
gathered on the device; a larger one is read per batch through pinned memory.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

# The most of the device's free memory a resident cache may take: the model, its
# activations and the optimiser need the rest.
RESIDENT_FRACTION = 0.25
_CHUNK = 4096  # rows copied per step when uploading, so host memory stays bounded


class ImageFeeder:
    def __init__(self, cache: np.ndarray, device: torch.device):
        self.cache = cache
        self.device = device
        self._resident: torch.Tensor | None = None
        self._decided = device.type != "cuda"
        self._lock = threading.Lock()  # the prefetch thread and the main thread both gather

    @property
    def resident(self) -> bool:
        self._decide()
        return self._resident is not None

    def _decide(self) -> None:
        if self._decided:
            return
        with self._lock:
            if not self._decided:
                self._upload()
                self._decided = True

    def _upload(self) -> None:
        free, _ = torch.cuda.mem_get_info(self.device)
        if self.cache.nbytes > RESIDENT_FRACTION * free:
            return
        out = torch.empty(self.cache.shape, dtype=torch.uint8, device=self.device)
        for start in range(0, len(self.cache), _CHUNK):
            rows = torch.from_numpy(np.array(self.cache[start:start + _CHUNK]))
            out[start:start + len(rows)].copy_(rows)
        self._resident = out

    def gather(self, indices) -> torch.Tensor:
        """uint8 images [B, S, S, C] on the device, in the order of `indices`."""
        self._decide()
        if self._resident is not None:
            idx = torch.as_tensor(indices, dtype=torch.long).to(self.device, non_blocking=True)
            return self._resident.index_select(0, idx)
        idx = np.asarray(indices.cpu() if torch.is_tensor(indices) else indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")  # sorted reads are sequential on a memmap
        block = np.empty((len(idx),) + self.cache.shape[1:], dtype=np.uint8)
        block[order] = self.cache[idx[order]]
        t = torch.from_numpy(block)
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t
