"""The engine: determinism, resume after an interruption, phases, and the baseline's contract."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ferbench.method import split_epochs
from ferbench.runner import RunRequest, run

TINY = {"n_train": 96, "n_test": 48}


def _request(out, **kw):
    base = dict(methods=["baseline"], protocols=["noise30"], data_options=TINY,
                flags={"epochs": 3, "batch_size": 16, "device": "cpu", "precision": "fp32"},
                out=str(out), leaderboard=False, show_progress=False)
    base.update(kw)
    # Bit-identical comparisons need one thread count: a run on a busy CPU would otherwise
    # take fewer threads and sum in another order.
    base["overrides"] = ["engine.threads=2", *base.get("overrides", [])]
    return RunRequest(**base)


def _result(paths):
    record = json.loads(paths[0].read_text())
    arrays = np.load(paths[0].with_suffix(".npz"))
    return record, arrays


def test_same_seed_gives_bit_identical_results(tmp_path):
    a, arr_a = _result(run(_request(tmp_path / "a")))
    b, arr_b = _result(run(_request(tmp_path / "b")))
    assert np.array_equal(arr_a["test_probs"], arr_b["test_probs"])
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]


def test_another_seed_trains_differently_on_the_same_noise(tmp_path):
    a, arr_a = _result(run(_request(tmp_path / "a")))
    b, arr_b = _result(run(_request(tmp_path / "b", seeds=[1])))
    assert not np.array_equal(arr_a["test_probs"], arr_b["test_probs"])
    assert a["protocol"]["noise"]["hash"] == b["protocol"]["noise"]["hash"]


def test_resume_after_an_interruption_gives_the_same_result(tmp_path, monkeypatch):
    full, arr_full = _result(run(_request(tmp_path / "full")))

    from ferbench.methods.baseline import Baseline

    def interrupt_at_epoch_two(self, model, ctx, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("stopped before epoch 2")

    monkeypatch.setattr(Baseline, "on_epoch_start", interrupt_at_epoch_two, raising=False)
    with pytest.raises(KeyboardInterrupt):
        run(_request(tmp_path / "resumed"))
    assert not list((tmp_path / "resumed").rglob("seed0.json")), "an interrupted run left a result"
    assert list((tmp_path / "resumed").rglob("checkpoint.pt"))
    monkeypatch.undo()

    resumed, arr_resumed = _result(run(_request(tmp_path / "resumed", resume=True)))
    assert resumed["resumed_from_epoch"] == 2
    assert np.array_equal(arr_full["test_probs"], arr_resumed["test_probs"])
    assert [h["loss"] for h in full["history"]] == [h["loss"] for h in resumed["history"]]
    assert not list((tmp_path / "resumed").rglob("checkpoint.pt")), "checkpoint left behind"


def test_stage_lengths_never_round_a_stage_away():
    assert split_epochs(10, [0.1, 0.9]) == [1, 9]
    assert split_epochs(2, [0.05, 0.95]) == [1, 1]
    assert split_epochs(3, [1, 1, 1]) == [1, 1, 1]
    assert sum(split_epochs(7, [0.3, 0.3, 0.4])) == 7
    assert split_epochs(0, [0.5, 0.5]) == [0, 0]


@pytest.mark.slow  # torch.compile builds its kernels with the C++ compiler (tens of seconds)
def test_compiled_training_steps_train_the_plain_model(tmp_path):
    """engine.compile=true: the steps run compiled; the stored weights are the plain model's."""
    import torch

    plain, arr_plain = _result(run(_request(tmp_path / "plain", protocols=["clean"])))
    paths = run(_request(tmp_path / "compiled", protocols=["clean"],
                         overrides=["engine.compile=true"]))
    compiled, arr_compiled = _result(paths)
    assert compiled["config"]["engine"]["compile"] is True
    assert compiled["key"]["config_hash"] != plain["key"]["config_hash"]
    # the same training, up to the compiled kernels' rounding (which grows over the steps)
    assert np.allclose([h["loss"] for h in compiled["history"]],
                       [h["loss"] for h in plain["history"]], rtol=0.02)
    assert arr_compiled["test_probs"].shape == arr_plain["test_probs"].shape
    weights = torch.load(paths[0].with_name("seed0.weights.pt"), weights_only=True)
    state = weights.get("state_dict", weights)
    assert state and not any(k.startswith("_orig_mod.") for k in state)


def test_fp32_training_keeps_its_gradients_exact_by_default():
    """channels-last `auto` stays off in fp32: its CPU weight gradients can be percents off."""
    import copy

    import timm
    import torch
    import torch.nn.functional as F

    import ferbench.models  # noqa: F401
    from ferbench.device import resolve_channels_last

    cpu = torch.device("cpu")
    assert resolve_channels_last("auto", cpu, "fp32") is False
    assert resolve_channels_last("auto", cpu, "bf16") is True
    assert resolve_channels_last("on", cpu, "fp32") is True
    torch.manual_seed(0)
    base = timm.create_model("ferbench_resnet_tiny", num_classes=7)
    x, y = torch.rand(32, 1, 48, 48).expand(-1, 3, -1, -1), torch.randint(0, 7, (32,))

    def grads(dtype):
        m = copy.deepcopy(base).to(dtype)
        F.cross_entropy(m(x.to(dtype)), y).backward()
        return {n: p.grad.double() for n, p in m.named_parameters()}

    exact, fp32 = grads(torch.float64), grads(torch.float32)
    k = "stages.3.0.conv1.weight"
    assert (fp32[k] - exact[k]).abs().max() < 1e-4 * exact[k].abs().max()


def _nan_after(steps: int):
    """A baseline training step whose loss turns NaN after `steps` calls."""
    from ferbench.methods.baseline import Baseline

    plain, calls = Baseline.training_step, [0]

    def step(self, model, batch, ctx):
        calls[0] += 1
        loss = plain(self, model, batch, ctx)
        return loss * float("nan") if calls[0] > steps else loss
    return step


def test_a_loss_that_turns_nan_stops_the_run_naming_the_epoch(tmp_path, monkeypatch):
    from ferbench.methods.baseline import Baseline

    monkeypatch.setattr(Baseline, "training_step", _nan_after(8))  # 6 steps an epoch
    with pytest.raises(FloatingPointError, match="loss became nan at epoch 1"):
        run(_request(tmp_path))
    assert not list(tmp_path.rglob("seed0.json"))


def test_losses_read_in_groups_give_the_same_history(tmp_path, monkeypatch):
    import ferbench.engine as engine

    one, _ = _result(run(_request(tmp_path / "one")))
    monkeypatch.setattr(engine, "loss_read_interval", lambda device: 4)  # as on a GPU
    grouped, _ = _result(run(_request(tmp_path / "grouped")))
    assert [h["loss"] for h in grouped["history"]] == [h["loss"] for h in one["history"]]
    from ferbench.methods.baseline import Baseline

    monkeypatch.setattr(Baseline, "training_step", _nan_after(8))
    with pytest.raises(FloatingPointError, match="loss became nan at epoch 1"):
        run(_request(tmp_path / "nan"))


def test_test_time_flip_scores_each_face_with_its_mirror_image(tmp_path):
    """`tta_flip=true` averages each test face with its mirror; the history and the final
    metrics agree, and the plain run (same seed, same training) is scored differently."""
    flags = {"epochs": 2, "batch_size": 16, "device": "cpu", "precision": "fp32"}
    plain, arr_plain = _result(run(_request(tmp_path / "plain", flags=flags)))
    flip, arr_flip = _result(run(_request(tmp_path / "flip", flags=flags,
                                          overrides=["tta_flip=true"])))
    assert [h["loss"] for h in plain["history"]] == [h["loss"] for h in flip["history"]]
    assert not np.allclose(arr_plain["test_probs"], arr_flip["test_probs"])
    assert flip["history"][-1]["test_acc"] == pytest.approx(flip["metrics"]["test_acc"])
    assert plain["history"][-1]["test_acc"] == pytest.approx(plain["metrics"]["test_acc"])
