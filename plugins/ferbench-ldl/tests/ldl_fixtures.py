"""Autouse fixtures every ferbench-ldl test module imports: an isolated decoded cache and one
CPU thread. Not a conftest.py: a second top-level `conftest` module would shadow the core
tests' own `from conftest import ...`."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """The decoded synthfer images go to this session's own folder, never the user's cache."""
    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "ldl-cache"))


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread per test, restored afterwards: on a small machine shared with a
    training process, two contending threads make these tiny models about ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
