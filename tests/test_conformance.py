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
