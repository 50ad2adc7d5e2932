"""A third party's dataset package steers the harness through its adapter, as the built-ins do.

The package here republishes synthfer's faces as `twinfaces`. Its adapter says so
(`same_faces_as`), names the preset a run on it uses by default (`default_preset`),
and the package adds a protocol only its data supports (`modenoise`: train on the
drawn labels, measured against the mode of each face's ground-truth distribution), the
way ferbench's own datasets add `realnoise`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ferbench import hookimpl, plugins
from ferbench.cli import cli
from ferbench.datasets.base import Dataset, open_dataset
from ferbench.datasets.synthfer import SynthFER
from ferbench.errors import ConfigError
from ferbench.labels import BASIC7
from ferbench.plugins import build_registry
from ferbench.protocols import (
    Cross,
    NoiseRecord,
    Protocol,
    document_hash,
    noise_document,
    to_run_labels,
)

SMALL = ["-o", "n_train=64", "-o", "n_test=32"]


class TwinFaces(SynthFER):
    """synthfer's faces under another name, counting how often they are read."""

    name = "twinfaces"
    description = "synthfer's faces, packaged again"
    same_faces_as = ("synthfer",)
    default_preset = "fast"

    def __init__(self):
        self.opened = 0

    def open(self, root, layout, options):
        self.opened += 1
        return super().open(root, layout, options)


class ModeNoise(Protocol):
    """Train on the drawn labels; the mode of each face's distribution is the reference."""

    family = "modenoise"

    def apply(self, ds, params, open_target=None):
        view = self._base_view(ds, params)
        # synthfer's distributions are over the canonical classes, in their order.
        mode = np.asarray(view.train.extras["distribution"]).argmax(1)
        clean, noisy = to_run_labels(mode, view.classes), view.train_labels
        doc = noise_document(view.id, view.train, view.classes, clean, noisy,
                             {"source": "reference", "reference": "distribution mode"})
        view.clean_train_labels = clean
        view.noise = NoiseRecord("reference", noisy != clean, noisy, doc, document_hash(doc))
        return view


class TwinFacesPackage:
    """What the package's hook module holds."""

    def __init__(self):
        self.adapter = TwinFaces()

    @hookimpl
    def ferbench_register_datasets(self, register):
        register(self.adapter.name, self.adapter)

    @hookimpl
    def ferbench_register_protocols(self, register):
        register(ModeNoise.family, ModeNoise())


@pytest.fixture
def twin(monkeypatch):
    """The package installed beside the built-ins, and no other plugin."""
    monkeypatch.setenv("FERBENCH_LOAD_PLUGINS", "")
    package = TwinFacesPackage()
    monkeypatch.setattr(plugins, "_REGISTRY", build_registry(extra_plugins=[package]))
    return package


def ferbench(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _builtin_refusal(source: str, target: str) -> str:
    """The sentence FER2013 and FERPlus get, with the pair's names in their places."""
    with pytest.raises(ConfigError) as e:
        Cross().apply(Dataset("fer2013", None, "csv", BASIC7, {}), {"target": "ferplus"})
    return str(e.value).replace("fer2013", source, 1).replace("ferplus", target, 1)


@pytest.mark.parametrize("source,target", [("twinfaces", "synthfer"), ("synthfer", "twinfaces")])
def test_cross_between_datasets_declared_the_same_faces_is_refused_like_fer2013_ferplus(
        twin, tmp_path, source, target):
    out = tmp_path / "results"
    result = ferbench("run", "--method", "baseline", "--dataset", source, *SMALL,
                      "--protocol", "cross", "--target", target, "--out", out,
                      "--no-leaderboard")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"ferbench: error: {_builtin_refusal(source, target)}"]
    assert "Traceback" not in result.output
    assert twin.adapter.opened == (1 if source == "twinfaces" else 0)  # the target is never read
    assert not list(out.rglob("*.json"))


def test_the_package_provides_its_protocol_beside_its_dataset(twin):
    result = ferbench("list", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    protocols = {p["name"]: p["plugin"] for p in info["protocols"]}
    datasets = {d["name"]: d["plugin"] for d in info["datasets"]}
    assert protocols["modenoise"] == datasets["twinfaces"]
    assert protocols["realnoise"] == datasets["ferplus"] == "ferbench.datasets.builtin"


@pytest.mark.slow  # one one-epoch training run on 64 faces
def test_ferbench_run_uses_a_protocol_a_dataset_package_adds(twin, tmp_path):
    out = tmp_path / "results"
    result = ferbench("run", "--method", "baseline", "--dataset", "twinfaces", *SMALL,
                      "--protocol", "modenoise", "--preset", "quick", "--epochs", "1",
                      "--batch-size", "16", "--out", out, "--no-leaderboard")
    assert result.exit_code == 0, result.output
    [path] = (out / "twinfaces" / "modenoise").rglob("seed0.json")
    rec = json.loads(path.read_text())
    train = open_dataset(TwinFaces(), None, options={"n_train": 64, "n_test": 32}).splits["train"]
    disagree = int((np.asarray(train.extras["distribution"]).argmax(1) != train.labels).sum())
    assert rec["protocol"]["family"] == "modenoise"
    assert rec["protocol"]["noise"]["source"] == "reference"
    assert 0 < rec["protocol"]["noise"]["n_flipped"] == disagree
    assert "train_noise_auroc" in rec["metrics"]  # scored as any noise is


@pytest.mark.slow  # one one-epoch training run on 64 faces
def test_a_run_without_preset_uses_the_preset_the_adapter_names(twin, tmp_path):
    out = tmp_path / "results"
    result = ferbench("run", "--method", "baseline", "--dataset", "twinfaces", *SMALL,
                      "--epochs", "1", "--batch-size", "16", "--backbone",
                      "ferbench_resnet_tiny", "--image-size", "48", "--out", out,
                      "--no-leaderboard")
    assert result.exit_code == 0, result.output
    [path] = out.rglob("seed0.json")
    assert json.loads(path.read_text())["method"]["preset"] == "fast"
