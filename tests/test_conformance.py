"""Every registered method, built-in or installed plugin, meets the method contract."""

from __future__ import annotations

import pytest

from ferbench.plugins import registry
from ferbench.testing import check_method

METHODS = sorted(registry().methods)


@pytest.mark.parametrize("name", METHODS)
def test_a_registered_method_meets_the_contract(name, tmp_path):
    report = check_method(name, workdir=tmp_path)
    assert report["loss_last"] < report["loss_first"]
    assert report["results"], f"{name}: the conformance run stored no result"


def test_benchmark_arms_are_timed_in_blocks_whose_order_alternates():
    from ferbench.testing import time_alternating

    calls = []
    seconds, peak = time_alternating(calls.append, ["a", "b"], rounds=3, steps=2, device="cpu",
                                     warmup=1)
    assert calls == ["a", "b"] + ["a"] * 2 + ["b"] * 2 + ["b"] * 2 + ["a"] * 2 \
        + ["a"] * 2 + ["b"] * 2
    assert [len(seconds[k]) for k in "ab"] == [3, 3] and peak == {"a": 0, "b": 0}
    assert all(t >= 0 for ts in seconds.values() for t in ts)
