"""The autouse fixture the network tests import: one CPU thread (not a conftest.py: a second
top-level `conftest` module would shadow the core tests' own)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
