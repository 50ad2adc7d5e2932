"""The method contract as a plugin author meets it: phases that survive an interruption,
validation figures, a fixed training subset, weights beyond timm, frozen bf16 modules,
companions switched off, the test-time flip, the protocol's public side, and a broken
output refused in one line naming the method."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from ferbench import (Method, MethodConfig, Phase, Prediction, capped_per_class, hookimpl,
                      plugins, split_epochs)
from ferbench.cli import cli
from ferbench.errors import ConfigError, DataError
from ferbench.nn import normalize
from ferbench.runner import RunRequest, run

TINY = {"n_train": 64, "n_test": 32}


@dataclass
class ToyConfig(MethodConfig):
    pass


class Toy(Method):
    """The baseline's loss on the config's backbone; subclasses add the member under test."""

    Config = ToyConfig
    presets = {"quick": {"epochs": 4, "batch_size": 16, "lr": 3e-3}, "paper": {}}

    def build(self, ctx):
        return ctx.create_backbone()

    def training_step(self, model, batch, ctx):
        logits = model(normalize(batch["views"]["weak"])).float()
        return F.cross_entropy(logits, batch["label"])

    def predict(self, model, images):
        return Prediction(probs=model(normalize(images)).float().softmax(1))


def install(monkeypatch, **methods):
    """Register `methods` (name → class) as an installed plugin would, for this test."""
    class Plugin:
        @hookimpl
        def ferbench_register_methods(self, register):
            for name, cls in methods.items():
                register(name, cls)

    reg = plugins.build_registry(extra_plugins=[Plugin()])
    monkeypatch.setattr(plugins, "_REGISTRY", reg)
    return reg


def request(out, method, protocol="clean", **kw):
    flags = {"epochs": 4, "batch_size": 16, "device": "cpu", "precision": "fp32",
             **kw.pop("flags", {})}
    return RunRequest(methods=[method], protocols=[protocol], data_options=TINY, flags=flags,
                      out=str(out), leaderboard=False, show_progress=False, **kw)


def result(paths):
    record = json.loads(paths[0].read_text())
    return record, np.load(paths[0].with_suffix(".npz"))


# ---- phases and resume --------------------------------------------------------------------

class Phased(Toy):
    """Two phases; the first one's end halves the head and counts, in model and method state."""

    stop_at = None   # ("end", "a") or ("start", "b"): the hook that interrupts, once

    def __init__(self, config):
        super().__init__(config)
        self.ended, self.started = [], []

    def phases(self, ctx):
        a, b = split_epochs(ctx.epochs, [0.5, 0.5])
        return [Phase("a", a), Phase("b", b)]

    def _maybe_stop(self, where, phase):
        if Phased.stop_at == (where, phase.name):
            Phased.stop_at = None
            raise KeyboardInterrupt(f"stopped at the {where} of phase {phase.name}")

    def on_phase_start(self, model, ctx, phase):
        self._maybe_stop("start", phase)
        self.started.append(phase.name)

    def on_phase_end(self, model, ctx, phase):
        self._maybe_stop("end", phase)
        if phase.name == "a":
            with torch.no_grad():
                for p in model.get_classifier().parameters():
                    p.mul_(0.5)
        self.ended.append(phase.name)

    def extra_results(self):
        return {"ended": list(self.ended)}

    def state_dict(self):
        return {"ended": list(self.ended)}

    def load_state_dict(self, state):
        self.ended = list(state["ended"])


@pytest.mark.parametrize("stop_at", [("end", "a"), ("start", "b")],
                         ids=["before-phase-end", "after-phase-end"])
def test_a_phased_run_interrupted_at_a_phase_boundary_resumes_to_the_same_result(
        stop_at, tmp_path, monkeypatch):
    install(monkeypatch, phased=Phased)
    full, arrays = result(run(request(tmp_path / "full", "phased")))
    assert full["method_results"] == {"ended": ["a", "b"]}
    Phased.stop_at = stop_at
    with pytest.raises(KeyboardInterrupt):
        run(request(tmp_path / "resumed", "phased"))
    assert list((tmp_path / "resumed").rglob("checkpoint.pt"))
    resumed, resumed_arrays = result(run(request(tmp_path / "resumed", "phased", resume=True)))
    assert resumed["resumed_from_epoch"] == 2
    assert resumed["method_results"] == full["method_results"]
    assert np.array_equal(resumed_arrays["test_probs"], arrays["test_probs"])
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]


# ---- validation ---------------------------------------------------------------------------

class KeepsBestOnValidation(Toy):
    def __init__(self, config):
        super().__init__(config)
        self.seen = []

    def on_validation_end(self, model, ctx, epoch, metrics):
        self.seen.append((epoch, metrics["val_acc"]))

    def extra_results(self):
        return {"epochs_seen": [e for e, _ in self.seen],
                "best_val_acc": max(a for _, a in self.seen)}


def test_a_method_that_selects_on_validation_gets_every_epoch_s_figures(tmp_path, monkeypatch):
    install(monkeypatch, keeper=KeepsBestOnValidation)
    # eval_every=0 tests nothing during training; the method still sees validation each epoch
    req = request(tmp_path, "keeper", overrides=["protocol.val_fraction=0.25",
                                                 "engine.eval_every=0"])
    record, _ = result(run(req))
    assert record["method_results"]["epochs_seen"] == [0, 1, 2, 3]
    assert record["method_results"]["best_val_acc"] == max(h["val_acc"]
                                                           for h in record["history"])
    assert all("test_acc" not in h for h in record["history"])


# ---- a fixed training subset ----------------------------------------------------------------

class Capped(Toy):
    def __init__(self, config):
        super().__init__(config)
        self.drawn = set()

    def training_indices(self, ctx):
        return capped_per_class(ctx.train.labels, cap=3)

    def training_step(self, model, batch, ctx):
        self.drawn.update(batch["index"].tolist())
        return super().training_step(model, batch, ctx)

    def extra_results(self):
        return {"drawn": sorted(self.drawn)}


def test_a_method_trains_on_its_fixed_capped_subset_alone(tmp_path, monkeypatch):
    install(monkeypatch, capped=Capped)
    record, arrays = result(run(request(tmp_path, "capped", flags={"batch_size": 4})))
    labels = arrays["train_ids"]  # every training face is still scored and stored
    assert len(labels) == 64
    kept = capped_per_class(torch.as_tensor(_train_labels()), cap=3).tolist()
    assert record["method_results"]["drawn"] == kept  # 3 of each of 7 classes: 21 faces
    assert record["training_subset"] == {"n": 21, "of": 64}


def _train_labels():
    from ferbench.datasets.base import open_dataset
    from ferbench.datasets.synthfer import SynthFER

    ds = open_dataset(SynthFER(), None, None, TINY)
    return np.asarray(ds.split(ds.train).labels)


def test_capped_per_class_is_deterministic_and_keeps_small_classes_whole():
    labels = torch.tensor([0] * 10 + [1] * 2 + [2] * 5)
    a, b = capped_per_class(labels, 3, seed=1), capped_per_class(labels, 3, seed=1)
    assert torch.equal(a, b) and len(a) == 3 + 2 + 3
    assert set(a.tolist()) >= {10, 11}  # class 1 has two faces: both kept


# ---- per-sample distributions the harness scores ----------------------------------------------

class BuildsTargets(Toy):
    def on_epoch_end(self, model, ctx, epoch):
        from ferbench import PerSample

        return {"targets": PerSample(ctx.train_predictions("none"), distribution=True),
                "confidence": PerSample(ctx.train_predictions("none").max(1).values)}


def test_a_method_s_distributions_are_scored_against_ground_truth_it_never_saw(tmp_path,
                                                                              monkeypatch):
    install(monkeypatch, targets=BuildsTargets)
    record, arrays = result(run(request(tmp_path, "targets", "noise30", flags={"epochs": 2})))
    series = record["distributions"]["targets"]
    assert series["epoch"] == [0, 1] and record["metrics"]["train_targets_kl"] == series["kl"][1]
    assert all(v > 0 for v in series["kl"] + series["kl_flipped"] + series["kl_clean"])
    summary = record["noise_summary_epochs"]["confidence"]
    assert len(summary["flipped"]["mean"]) == 2 and summary["n_flipped"] == round(0.3 * 64)
    assert arrays["method_targets"].shape == (2, 64, 7)



class CountsInPlace(Toy):
    """Keeps one running tensor and hands the same tensor to the harness every epoch."""

    def build(self, ctx):
        self.seen = torch.zeros(len(ctx.train))
        return super().build(ctx)

    def training_step(self, model, batch, ctx):
        self.seen[batch["index"].cpu()] += 1
        return super().training_step(model, batch, ctx)

    def on_epoch_end(self, model, ctx, epoch):
        from ferbench import PerSample

        return {"seen": PerSample(self.seen)}


def test_each_epoch_keeps_the_per_sample_values_it_was_given_though_the_method_reuses_them(
        tmp_path, monkeypatch):
    install(monkeypatch, counts=CountsInPlace)
    _, arrays = result(run(request(tmp_path, "counts", "clean", flags={"epochs": 3})))
    seen = arrays["method_seen"]
    assert seen.shape == (3, 64)
    assert (seen[0] >= 1).all() and (seen[1] > seen[0]).any() and (seen[2] > seen[1]).any()


class RefusesAtBuild(Toy):
    def build(self, ctx):
        raise ConfigError("aux_space='nope': no such space")


def test_a_method_that_refuses_its_data_while_building_leaves_no_file_behind(tmp_path,
                                                                             monkeypatch):
    install(monkeypatch, refuses=RefusesAtBuild)
    with pytest.raises(ConfigError, match="no such space"):
        run(request(tmp_path / "out", "refuses", "noise30"))
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []

# ---- weights beyond timm, frozen modules in bf16 ------------------------------------------

class Tower(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 4)
        self.extra = torch.nn.Linear(4, 4)


class LoadsTower(Toy):
    tower_file = None

    def build(self, ctx):
        model = super().build(ctx)
        tower = Tower()
        ctx.load_weights(tower, LoadsTower.tower_file, name="text tower",
                         strip_prefixes=("module.visual.",), matching_only=True)
        model.tower = ctx.frozen(tower)
        # outside autocast, on fp32 input: the frozen module casts it under bf16
        self.embedding = model.tower.proj(torch.ones(2, 8)).float()
        return model


def test_a_checkpoint_loaded_into_any_module_is_recorded(tmp_path, monkeypatch):
    donor = Tower()
    path = tmp_path / "tower.pt"
    torch.save({f"module.visual.{k}": v for k, v in donor.state_dict().items()
                if k.startswith("proj.")}, path)
    LoadsTower.tower_file = str(path)
    install(monkeypatch, tower=LoadsTower)
    record, _ = result(run(request(tmp_path / "out", "tower", flags={"epochs": 1})))
    [entry] = [w for w in record["weights"] if w.get("module") == "text tower"]
    assert entry["file"] == str(path) and len(entry["sha256"]) == 16
    assert entry["loaded"] == 2 and entry["left_random"] == ["extra.weight", "extra.bias"]
    assert entry["init"] == "partial"


def test_a_checkpoint_that_does_not_fit_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"proj.weight": torch.zeros(3, 3)}, path)
    from ferbench.weights import load_partial

    with pytest.raises(DataError) as e:
        load_partial(Tower(), path)
    assert str(e.value).startswith(f"{path}: does not fit Tower (")


def test_the_image_tower_of_a_whole_clip_file_loads_by_its_prefix(tmp_path):
    """A whole CLIP file holds `visual.proj.weight` and a text tower's `proj.weight` of
    another shape: `only_prefixed` takes the image tower's tensors and nothing else."""
    from ferbench.weights import load_partial

    tower = Tower()
    whole = {f"visual.{k}": torch.full_like(v, 0.5) for k, v in tower.state_dict().items()}
    whole["proj.weight"] = torch.zeros(16, 16)            # the text tower's, same name
    path = tmp_path / "clip.pt"
    torch.save(whole, path)
    with pytest.raises(DataError):
        load_partial(Tower(), path, strip_prefixes=("visual.",))
    loaded = Tower()
    entry = load_partial(loaded, path, strip_prefixes=("visual.",), only_prefixed=True)
    assert entry["loaded"] == 4 and entry["init"] == "checkpoint"
    assert all(bool((v == 0.5).all()) for v in loaded.state_dict().values())


def test_a_torchscript_archive_is_read_as_its_tensors(tmp_path):
    """OpenAI's released CLIP files are TorchScript archives: their tensors load like a
    state dict's."""
    from ferbench.weights import load_partial

    class Callable(Tower):
        def forward(self, x):
            return self.extra(self.proj(x))

    tower = Callable()
    path = tmp_path / "scripted.pt"
    torch.jit.script(tower).save(str(path))
    fresh = Tower()
    entry = load_partial(fresh, path)
    assert entry["loaded"] == 4
    for k, v in tower.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)


def test_a_frozen_module_called_in_build_works_under_bf16(tmp_path, monkeypatch):
    LoadsTower.tower_file = None
    install(monkeypatch, tower=LoadsTower)
    record, _ = result(run(request(tmp_path, "tower", flags={"epochs": 1,
                                                              "precision": "bf16"})))
    assert record["precision"] == "bf16"
    assert {"module": "text tower", "file": None, "init": "random"} in record["weights"]


# ---- companions, the test-time flip, the protocol's public side ----------------------------

class CompanionsOff(Toy):
    def __init__(self, config):
        super().__init__(config)
        self.with_companions = 0

    def batch_companions(self, index):
        return None  # switched off by config, say

    def training_step(self, model, batch, ctx):
        self.with_companions += "companions" in batch
        return super().training_step(model, batch, ctx)

    def extra_results(self):
        return {"with_companions": self.with_companions}


class OwnUncertainty(Toy):
    def predict(self, model, images):
        probs = model(normalize(images)).float().softmax(1)
        return Prediction(probs=probs, uncertainty=torch.full((len(images),), 0.25))


class ReadsProtocol(Toy):
    def extra_results(self):
        return {"rate": self.rate, "family": self.family}

    def on_epoch_start(self, model, ctx, epoch):
        self.rate, self.family = ctx.protocol.rate, ctx.protocol.family


def test_companions_a_method_switches_off_never_reach_its_batches(tmp_path, monkeypatch):
    install(monkeypatch, nocomp=CompanionsOff)
    record, _ = result(run(request(tmp_path, "nocomp", flags={"epochs": 1})))
    assert record["method_results"] == {"with_companions": 0}


def test_the_test_time_flip_keeps_a_method_s_own_uncertainty(tmp_path, monkeypatch):
    install(monkeypatch, own=OwnUncertainty)
    _, arrays = result(run(request(tmp_path, "own", flags={"epochs": 1},
                                   overrides=["tta_flip=true"])))
    assert np.allclose(arrays["test_uncertainty"], 0.25)


@pytest.mark.parametrize("protocol, rate, family", [("noise30", 0.3, "noise"),
                                                    ("clean", None, "clean")])
def test_a_method_reads_the_protocol_s_nominal_noise_rate(protocol, rate, family, tmp_path,
                                                          monkeypatch):
    install(monkeypatch, reader=ReadsProtocol)
    record, _ = result(run(request(tmp_path, "reader", protocol, flags={"epochs": 1})))
    assert record["method_results"] == {"rate": rate, "family": family}


# ---- broken outputs -------------------------------------------------------------------------

class SumsToTwo(Toy):
    def predict(self, model, images):
        return Prediction(probs=2 * model(normalize(images)).float().softmax(1))


class WrongDecisions(Toy):
    def noise_decisions(self, model, ctx):
        return torch.zeros(3, dtype=torch.bool)


@pytest.mark.parametrize("name, cls, says", [
    ("sums2", SumsToTwo, "SumsToTwo.predict: probs rows must sum to 1 (probabilities, "
                         "not logits)"),
    ("wrongdec", WrongDecisions, "WrongDecisions.noise_decisions must be [N_train=64], "
                                 "got [3]")])
def test_a_broken_method_output_is_one_line_naming_it_and_leaves_nothing(
        name, cls, says, tmp_path, monkeypatch):
    install(monkeypatch, **{name: cls})
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["run", "--method", name, "--protocol", "noise30",
                                   "-o", "n_train=64", "-o", "n_test=32", "--epochs", "1",
                                   "--batch-size", "16", "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 2, res.output
    [line] = [line for line in res.stderr.splitlines() if line.startswith("ferbench:")]
    assert line.startswith("ferbench: error: ") and f"test_contract.{says}" in line, line
    assert not list(out.rglob("checkpoint.pt")) and not list(out.rglob("seed0.json"))


# ---- the conformance kit catches each broken rule --------------------------------------------

class PhasesShort(Toy):
    def phases(self, ctx):
        return [Phase("only", ctx.epochs - 1)]


class BadWeights(Toy):
    def sample_weights(self, ctx):
        return torch.ones(len(ctx.train) - 1)


class SubsetOutOfRange(Toy):
    def training_indices(self, ctx):
        return torch.tensor([0, len(ctx.train)])


class FloatCompanions(Toy):
    def batch_companions(self, index):
        return torch.zeros(len(index), 2)


class ShortPerSample(Toy):
    def on_epoch_end(self, model, ctx, epoch):
        from ferbench import PerSample

        return {"lam": PerSample(torch.zeros(len(ctx.train) - 1))}


class NotADistribution(Toy):
    def on_epoch_end(self, model, ctx, epoch):
        from ferbench import PerSample

        return {"targets": PerSample(torch.ones(len(ctx.train), ctx.num_classes),
                                     distribution=True)}


class ForgetsItsState(Toy):
    """Scales its loss by how many steps it has taken, but keeps that count out of state."""

    def __init__(self, config):
        super().__init__(config)
        self.steps = 0

    def training_step(self, model, batch, ctx):
        self.steps += 1
        return super().training_step(model, batch, ctx) * (1 + self.steps / 100)


@pytest.mark.parametrize("cls, says", [
    (PhasesShort, "phases: its epochs add up to 1, not the run's 2"),
    (BadWeights, "sample_weights must be [N_train=96]"),
    (SubsetOutOfRange, "training_indices returned positions outside 0..95"),
    (FloatCompanions, "batch_companions must return LongTensor [B, C]"),
    (ShortPerSample, "per-sample array 'lam' must be [N_train=96, ...]"),
    (NotADistribution, "distribution 'targets' must be [N_train, K=7] rows of probabilities"),
    (SumsToTwo, "probs must be non-negative rows summing to 1"),
    (ForgetsItsState, "a run interrupted mid-run and resumed differs from one run through"),
], ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_the_conformance_kit_refuses_a_method_that_breaks_a_rule(cls, says, tmp_path):
    from ferbench.testing import check_method

    with pytest.raises(AssertionError) as e:
        check_method(cls, workdir=tmp_path)
    assert says in str(e.value), str(e.value)


def test_the_conformance_kit_passes_a_phased_method_that_keeps_its_state(tmp_path):
    from ferbench.testing import check_method

    report = check_method(Phased, workdir=tmp_path)
    assert report["resumed"] == ["mid-run", "before the end of phase 0",
                                 "after the end of phase 0", "before the end of phase 1"]


class BrokenTargets(Toy):
    def on_epoch_end(self, model, ctx, epoch):
        from ferbench import PerSample

        return {"targets": PerSample(2 * ctx.train_predictions("none"), distribution=True)}


def test_a_broken_distribution_stops_the_run_at_its_epoch_leaving_no_checkpoint(tmp_path,
                                                                               monkeypatch):
    from ferbench.errors import PluginError

    install(monkeypatch, broken=BrokenTargets)
    with pytest.raises(PluginError, match=r"BrokenTargets\.on_epoch_end\['targets'\]: a "
                                          r"distribution's rows must be"):
        run(request(tmp_path, "broken", flags={"epochs": 2}))
    assert not list(tmp_path.rglob("checkpoint.pt"))
