"""Batches of cached images gathered by index, on the CPU and (where there is one) a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ferbench.data.feeder import ImageFeeder


@pytest.fixture
def cache(tmp_path):
    images = np.lib.format.open_memmap(tmp_path / "images.npy", mode="w+", dtype=np.uint8,
                                       shape=(50, 6, 6, 1))
    images[:] = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
    images.flush()
    return np.load(tmp_path / "images.npy", mmap_mode="r")


def test_a_batch_holds_the_images_in_the_order_asked_for(cache):
    idx = torch.tensor([7, 3, 49, 3, 0])
    batch = ImageFeeder(cache, torch.device("cpu")).gather(idx)
    assert batch.dtype == torch.uint8 and batch.shape == (5, 6, 6, 1)
    assert np.array_equal(batch.numpy(), cache[idx.numpy()])


def test_numpy_indices_work_as_well_as_tensors(cache):
    feeder = ImageFeeder(cache, torch.device("cpu"))
    assert torch.equal(feeder.gather(np.array([4, 2])), feeder.gather(torch.tensor([4, 2])))


def test_on_the_cpu_the_cache_stays_on_disk(cache):
    assert not ImageFeeder(cache, torch.device("cpu")).resident


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_a_small_cache_is_resident_and_gives_the_same_batches(cache):
    gpu = ImageFeeder(cache, torch.device("cuda"))
    idx = torch.tensor([9, 1, 1, 30])
    assert gpu.resident
    assert torch.equal(gpu.gather(idx).cpu(), ImageFeeder(cache, torch.device("cpu")).gather(idx))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_a_cache_too_large_for_its_memory_is_streamed(cache, monkeypatch):
    import ferbench.data.feeder as feeder

    monkeypatch.setattr(feeder, "RESIDENT_FRACTION", 0.0)
    gpu = ImageFeeder(cache, torch.device("cuda"))
    assert not gpu.resident
    got = gpu.gather(torch.tensor([5, 2]))
    assert got.is_cuda and np.array_equal(got.cpu().numpy(), cache[[5, 2]])
