"""Config composition: the method's defaults < its preset < flags < `key=value` overrides."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ferbench.config import as_dict, compose_run, to_method_config
from ferbench.errors import ConfigError
from ferbench.method import Method, MethodConfig
from ferbench.methods.baseline import Baseline
from ferbench.planning import RunRequest, flag_overrides, open_named


def _compose(flags=None, overrides=(), preset="quick", cls=Baseline, name="baseline"):
    return compose_run(name, cls, preset, flags or {}, list(overrides))


def test_a_preset_sets_the_method_config():
    quick, paper = _compose(), _compose(preset="paper")
    for cfg, preset in ((quick, "quick"), (paper, "paper")):
        for key, value in Baseline.presets[preset].items():
            assert cfg.method[key] == value
    assert quick.method.backbone == "ferbench_resnet_tiny" and paper.method.backbone == "resnet18"
    # keys a preset leaves alone keep the Config's defaults
    assert quick.method.label_smoothing == 0.0 and quick.method.views == ["weak"]
    assert quick.engine.device == "auto" and quick.protocol.noise_seed == 0
    mcfg = to_method_config(Baseline, quick)
    assert isinstance(mcfg, Baseline.Config) and mcfg.lr == 3e-3 and mcfg.epochs == 8


def test_flags_override_the_preset_and_overrides_override_flags():
    req = RunRequest(flags={"epochs": 2, "batch_size": 16, "lr": 0.5, "device": "cpu"},
                     data_options={"n_train": "64"})
    flags = flag_overrides(req, {"noise_seed": 3}, open_named("synthfer", None, None, {"n_train": "064"}))
    cfg = _compose(flags)
    assert (cfg.method.epochs, cfg.method.batch_size, cfg.method.lr) == (2, 16, 0.5)
    assert cfg.engine.device == "cpu" and cfg.protocol.noise_seed == 3
    # the dataset's converted value: n_train=064 and n_train=64 are one run
    assert cfg.data.name == "synthfer" and cfg.data.options.n_train == 64
    cfg = _compose(flags, ["epochs=3", "method.batch_size=8"])
    assert (cfg.method.epochs, cfg.method.batch_size, cfg.method.lr) == (3, 8, 0.5)


def test_bare_method_keys_mean_method_and_dotted_keys_reach_any_section():
    cfg = _compose(overrides=["lr=0.25", "tta_flip=true", "views=[weak,strong]",
                              "engine.eval_every=2", "engine.select=val",
                              "protocol.val_fraction=0.1", "protocol.allow_label_extras=true"])
    assert cfg.method.lr == 0.25 and cfg.method.tta_flip is True
    assert cfg.method.views == ["weak", "strong"]
    assert cfg.engine.eval_every == 2 and cfg.engine.select == "val"
    assert cfg.protocol.val_fraction == 0.1 and cfg.protocol.allow_label_extras is True


def test_dataset_options_are_free_form_under_data_options():
    cfg = _compose({"data.options.n_train": "64"},
                   ["data.options.n_test=32", "data.options.labels=fer2013new"])
    assert as_dict(cfg)["data"]["options"] == {"n_train": "64", "n_test": 32,
                                               "labels": "fer2013new"}
    cfg = _compose({"data.options.n_train": "64"}, ["data.options.n_train=128"])
    assert cfg.data.options.n_train == 128  # an override replaces the flag's value


def test_none_flags_are_left_out():
    cfg = _compose({"method.epochs": None, "method.weights": None, "data.root": None})
    assert cfg.method.epochs == 8 and cfg.method.weights is None and cfg.data.root is None


@pytest.mark.parametrize("path", ["/data/my weights/it's=1.pt", "/data/ms-celeb [r18].pth"])
def test_flag_values_reach_the_config_verbatim(path):
    assert _compose({"method.weights": path}).method.weights == path


def test_flag_values_with_backslashes_reach_the_config_verbatim():
    path = "C:\\models\\w.pt"
    assert _compose({"method.weights": path}).method.weights == path


@pytest.mark.parametrize("text", ["lr", "=0.1", "lr=[1,", "epochs=abc", "lr=0.1=2"])
def test_a_malformed_override_is_a_config_error(text):
    with pytest.raises(ConfigError) as e:
        _compose(overrides=[text])
    assert "\n" not in str(e.value)


def test_an_override_without_value_names_itself():
    with pytest.raises(ConfigError, match="malformed override 'lr': expected KEY=VALUE"):
        _compose(overrides=["lr"])


def test_an_unknown_bare_key_suggests_the_closest():
    with pytest.raises(ConfigError, match="unknown config key 'lrr'; did you mean 'lr'"):
        _compose(overrides=["lrr=0.1"])
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        _compose(overrides=["bacth_size=8"])


@pytest.mark.parametrize("text", ["method.lrr=1", "engine.eval_evry=2",
                                  "protocol.val_fracion=0.1", "prtocol.val_fraction=0.1"])
def test_an_unknown_dotted_key_is_a_config_error_naming_it(text):
    with pytest.raises(ConfigError) as e:
        _compose(overrides=[text])
    assert text.split("=")[0] in str(e.value)


def test_an_unknown_dotted_key_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'engine.eval_every'"):
        _compose(overrides=["engine.eval_evry=2"])


def test_an_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown preset of method baseline 'turbo'") as e:
        _compose(preset="turbo")
    assert "paper" in str(e.value) and "quick" in str(e.value)
    with pytest.raises(ConfigError, match="did you mean 'quick'"):
        _compose(preset="quik")


@dataclass
class _ToyConfig(MethodConfig):
    margin: float = 0.2


class _Toy(Method):
    Config = _ToyConfig
    presets = {"quick": {"margin": 0.5}, "paper": {"margn": 0.1}}


def test_a_method_s_own_keys_take_bare_overrides_and_a_bad_preset_is_reported():
    cfg = _compose(cls=_Toy, name="toy", overrides=["margin=0.7"])
    assert cfg.method.margin == 0.7 and to_method_config(_Toy, cfg).margin == 0.7
    assert _compose(cls=_Toy, name="toy").method.margin == 0.5
    with pytest.raises(ConfigError, match="preset 'paper' of method toy does not fit its Config"):
        _compose(cls=_Toy, name="toy", preset="paper")
