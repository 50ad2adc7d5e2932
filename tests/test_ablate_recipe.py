"""The recipe ablation: every variant is a valid baseline config, deltas are from the reference."""

from __future__ import annotations

import pytest
from conftest import benchmark_script


def _ablation():
    return benchmark_script("ablate_recipe")


def test_each_variant_changes_the_quick_recipe_in_one_place():
    from ferbench.config import compose_run, to_method_config
    from ferbench.data.augment import resolve_view
    from ferbench.methods.baseline import Baseline

    def config(overrides):
        cfg = to_method_config(Baseline, compose_run("baseline", Baseline, "quick", {}, overrides))
        return {**vars(cfg), "views": [resolve_view(v) for v in cfg.views]}

    reference = config([])
    for name, overrides in _ablation().VARIANTS.items():
        changed = {k for k, v in config(overrides).items() if v != reference[k]}
        assert (len(changed) >= 1) == (name != "reference"), name
        assert changed <= {"optimizer", "lr", "scheduler", "label_smoothing", "views",
                           "batch_size", "weight_decay", "tta_flip"}, (name, changed)


def test_differences_are_from_the_reference_seed_mean():
    table = _ablation().summarise({
        "reference": {0: {"val_acc": 0.80, "test_acc": 0.79, "train_seconds": 100},
                      1: {"val_acc": 0.82, "test_acc": 0.81, "train_seconds": 110}},
        "tta_flip": {0: {"val_acc": 0.83, "test_acc": 0.80, "train_seconds": 100},
                     1: {"val_acc": 0.83, "test_acc": 0.84, "train_seconds": 100}},
    })
    assert table["reference"]["val_delta"] == 0
    assert table["tta_flip"]["val_delta"] == pytest.approx(0.02)
    assert table["tta_flip"]["test_delta"] == pytest.approx(0.02)
    assert table["reference"]["val_acc_std"] == pytest.approx(0.01414, abs=1e-4)
    assert table["tta_flip"]["train_seconds"] == 100
