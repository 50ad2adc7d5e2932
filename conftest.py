"""Fixtures for every test of this repository, the core's and the plugins' alike."""

import pytest


@pytest.fixture(autouse=True)
def a_machine_to_itself(monkeypatch):
    """Each run sees an idle machine, so it trains with torch's threads whatever else the
    host is doing: results compared bit for bit across runs need one thread count, and a
    run on a machine others keep busy would take fewer (a test that checks that sets
    `busy_cores` itself)."""
    from ferbench import device

    monkeypatch.setattr(device, "busy_cores", lambda *a, **k: 0.0)
