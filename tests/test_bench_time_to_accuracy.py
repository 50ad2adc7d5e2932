"""The time-to-accuracy benchmark's arithmetic: final-epoch accuracy of fixed schedules only."""

from __future__ import annotations

import pytest
from conftest import benchmark_script


def _bench():
    return benchmark_script("bench_time_to_accuracy")


def _runs(table):
    """{epochs: {seed: run}} from {epochs: [(test acc, seconds), ...]}."""
    return {e: {s: {"test_acc": a, "val_acc": a - 0.01, "train_seconds": t}
                for s, (a, t) in enumerate(rows)} for e, rows in table.items()}


def test_time_to_a_target_is_the_shortest_schedule_whose_seed_mean_reaches_it():
    summary = _bench().summarise(_runs({
        2: [(0.80, 100), (0.82, 110), (0.81, 105)],
        4: [(0.845, 200), (0.835, 210), (0.84, 190)],   # mean 84.0: reaches 84
        6: [(0.85, 300), (0.84, 310), (0.86, 290)],     # mean 85.0
    }), [84, 85, 86])
    assert summary["time_to"][84] == {"epochs": 4, "train_seconds": pytest.approx(200),
                                      "train_seconds_std": pytest.approx(10)}
    assert summary["time_to"][85]["epochs"] == 6
    assert summary["time_to"][86] is None  # one seed at 86 % is not the mean
    row = summary["schedules"][2]
    assert row["seeds"] == 3 and row["test_acc"] == pytest.approx(0.81)
    assert row["test_acc_std"] == pytest.approx(0.01)
    assert row["val_acc"] == pytest.approx(0.80)


def test_every_recipe_names_an_installed_preset_and_backbone():
    import timm

    import ferbench.models  # noqa: F401
    from ferbench.methods.baseline import Baseline

    for name, spec in _bench().RECIPES.items():
        assert spec["preset"] in Baseline.presets, name
        backbone = spec["flags"].get("backbone", Baseline.presets[spec["preset"]]["backbone"])
        assert timm.is_model(backbone), name
