"""Loading a user's checkpoint into a timm backbone: the shapes FER researchers' files have."""

from __future__ import annotations

import os
import pickle

import pytest
import timm
import torch

import ferbench.models  # noqa: F401  (registers ferbench_resnet_tiny with timm)
from ferbench.errors import DataError
from ferbench.weights import load_into, read_state_dict

HEAD = ("fc.weight", "fc.bias")


def _model(name="ferbench_resnet_tiny", num_classes=7, seed=0):
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


def _same(a: dict, b: dict, skip=()) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if k not in skip)


@pytest.fixture(params=["ferbench_resnet_tiny", "resnet18"])
def arch(request):
    return request.param


def _save(path, obj):
    torch.save(obj, path)
    return path


def test_plain_state_dict_loads_every_tensor(tmp_path, arch):
    src = _model(arch, seed=1).state_dict()
    model = _model(arch, seed=2)
    info = load_into(model, _save(tmp_path / "w.pt", src))
    assert info == {"reinitialised": [], "ignored": [], "source_run": None}
    assert _same(src, model.state_dict())


@pytest.mark.parametrize("wrap", [
    lambda sd: {"state_dict": sd},
    lambda sd: {"model": sd},
    lambda sd: {"state_dict": sd, "epoch": 40, "best_acc": 0.87},
    lambda sd: {"model": {"state_dict": sd}},
    lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {"param_groups": []}},
], ids=["state_dict", "model", "with-metadata", "nested", "model_state_dict"])
def test_wrapped_checkpoints_are_unwrapped(tmp_path, wrap):
    src = _model(seed=1).state_dict()
    model = _model(seed=2)
    load_into(model, _save(tmp_path / "w.pt", wrap(src)))
    assert _same(src, model.state_dict())


@pytest.mark.parametrize("prefix", ["module.", "backbone.", "module.backbone."])
def test_prefixed_keys_are_stripped(tmp_path, arch, prefix):
    src = _model(arch, seed=1).state_dict()
    model = _model(arch, seed=2)
    load_into(model, _save(tmp_path / "w.pt", {prefix + k: v for k, v in src.items()}))
    assert _same(src, model.state_dict())


def test_a_classifier_of_another_class_count_is_reinitialised_and_reported(tmp_path, arch):
    src = _model(arch, num_classes=1000, seed=1).state_dict()  # e.g. an ImageNet checkpoint
    model = _model(arch, num_classes=7, seed=2)
    own_head = {k: model.state_dict()[k].clone() for k in HEAD}
    info = load_into(model, _save(tmp_path / "w.pt", {"state_dict": src}))
    assert sorted(info["reinitialised"]) == sorted(HEAD)
    now = model.state_dict()
    assert _same(src, now, skip=HEAD)  # the backbone came from the file
    assert all(torch.equal(own_head[k], now[k]) for k in HEAD)  # the head kept its own init
    assert now["fc.weight"].shape == (7, model.num_features)


def test_a_ferbench_weights_file_reports_its_run_key(tmp_path):
    src = _model(seed=1).state_dict()
    key = {"dataset": "synthfer", "protocol": "clean", "method": "baseline", "seed": 0,
           "config_hash": "0123456789", "version": "0.1.0"}
    path = _save(tmp_path / "seed0.weights.pt", {"ferbench": key, "state_dict": src})
    state, run_key = read_state_dict(path)
    assert run_key == key and set(state) == set(src)
    assert load_into(_model(seed=2), path)["source_run"] == key


def test_wrong_architecture_lists_the_unmatched_keys(tmp_path):
    path = _save(tmp_path / "r18.pt", _model("resnet18").state_dict())
    with pytest.raises(DataError, match="does not fit the architecture") as e:
        load_into(_model("ferbench_resnet_tiny"), path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ")
    assert "missing: stem.0.weight" in msg and "unexpected: conv1.weight" in msg
    assert "more)" in msg  # long lists are cut, with a count
    assert "\n" not in msg


def test_a_tensor_of_the_wrong_shape_outside_the_head_is_refused(tmp_path):
    src = _model(seed=1).state_dict()
    src["stem.0.weight"] = torch.zeros(16, 1, 3, 3)  # a grey-input stem
    with pytest.raises(DataError, match="wrong shape: stem.0.weight"):
        load_into(_model(), _save(tmp_path / "w.pt", src))


def test_a_missing_weights_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist") as e:
        load_into(_model(), tmp_path / "nope.pt")
    assert str(tmp_path / "nope.pt") in str(e.value)


@pytest.mark.parametrize("write", [
    lambda p: p.write_text("these are not weights\n"),
    lambda p: p.write_bytes(b""),
    pytest.param(lambda p: p.write_bytes(pickle.dumps([1, 2, 3])),
                 marks=pytest.mark.filterwarnings("ignore:Detected pickle protocol")),
    lambda p: torch.save([1, 2, 3], p),
    lambda p: torch.save(torch.zeros(3), p),
    lambda p: torch.save({}, p),
    lambda p: torch.save({"epoch": 3, "acc": 0.5}, p),
], ids=["text", "empty", "pickled-list", "torch-list", "bare-tensor", "empty-dict", "no-tensors"])
def test_a_file_that_is_not_a_checkpoint_is_a_data_error(tmp_path, write):
    path = tmp_path / "w.pt"
    write(path)
    with pytest.raises(DataError, match="not a (loadable )?checkpoint") as e:
        load_into(_model(), path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


class _Payload:
    """Unpickling this runs os.mkdir: the kind of code a hostile checkpoint could carry."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_a_checkpoint_carrying_python_code_is_refused_not_executed(tmp_path):
    marker = tmp_path / "executed"
    path = _save(tmp_path / "evil.pt", {"state_dict": _model().state_dict(),
                                        "extra": _Payload(marker)})
    with pytest.raises(DataError, match="not a loadable checkpoint"):
        load_into(_model(), path)
    assert not marker.exists()
    # The file really would run code under a full unpickler (what weights_only=True prevents).
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_checkpoint_keys_under_an_ignored_prefix_are_skipped_and_reported(tmp_path):
    """A face-recognition checkpoint's own layers (MAN's MS-Celeb `feature.*`) need not fit."""
    model = timm.create_model("ferbench_resnet_tiny", num_classes=7)
    state = dict(model.state_dict())
    state["feature.weight"] = torch.zeros(3, 3)
    path = tmp_path / "msceleb.pt"
    torch.save(state, path)
    with pytest.raises(DataError, match="unexpected: feature.weight"):
        load_into(timm.create_model("ferbench_resnet_tiny", num_classes=7), path)
    info = load_into(timm.create_model("ferbench_resnet_tiny", num_classes=7), path,
                     ignore=("feature.",))
    assert info["ignored"] == ["feature.weight"]
