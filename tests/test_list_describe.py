"""`ferbench list --method NAME` and `--dataset NAME`: everything a user needs to choose and
set one method or dataset; and `data check`, which says how a copy of a dataset compares with
its official counts.

Every installed method and dataset is listed in full, as text and as JSON; an unknown name
is one line suggesting the closest, exit status 2.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import one_error_line, write_image

from ferbench import hookimpl
from ferbench.cli import cli
from ferbench.config.settings import setting
from ferbench.describe import describe_method
from ferbench.method import Method, MethodConfig
from ferbench.plugins import build_registry, registry

METHODS = sorted(registry().methods)
DATASETS = sorted(registry().datasets)


def ferbench(*args, env=None):
    """Run `ferbench ARGS...` in this process; stdout and stderr are kept apart."""
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def test_every_installed_package_method_is_covered():
    # The methods of every plugin in plugins/ and the built-in baseline.
    assert {"baseline", "man", "ldlva", "ldl-alsg", "uafer", "esr", "esr-div", "manet",
            "manet-div"} <= set(METHODS)


# --- list --method ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", METHODS)
def test_list_method_json_holds_plugin_presets_and_every_config_key(name):
    result = ferbench("list", "--method", name, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    cls, provided = registry().get("methods", name), registry().methods[name]
    assert info["name"] == name and info["description"]
    assert (info["plugin"], info["version"]) == (provided.plugin, provided.version)
    # Every preset with its values exactly as the method declares them, and their source.
    assert list(info["presets"]) == list(cls.presets)
    for preset, values in cls.presets.items():
        assert info["presets"][preset]["values"] == json.loads(json.dumps(values))
        assert info["presets"][preset]["source"] in ("code", "paper-text", "ferbench")
        assert info["presets"][preset]["source"] == cls.preset_sources.get(preset, "ferbench")
    # Every key of the method's Config, with its type, default and declared range or choices.
    fields = dataclasses.fields(cls.Config)
    assert [k["name"] for k in info["keys"]] == [f.name for f in fields]
    for key, f in zip(info["keys"], fields):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert key["default"] == json.loads(json.dumps(default)), f.name
        assert key["type"] and isinstance(key["help"], str)
        if f.metadata.get("choices"):
            assert key["choices"] == list(f.metadata["choices"])
            assert key["allowed"] == " | ".join(map(str, f.metadata["choices"]))
        assert (key["low"], key["high"]) == (f.metadata.get("low"), f.metadata.get("high"))
    # Keys shared by every method are there for each.
    assert {"backbone", "epochs", "lr", "batch_size", "image_size", "weights"} <= {
        k["name"] for k in info["keys"]}


@pytest.mark.parametrize("name", METHODS)
def test_list_method_prints_presets_with_their_source_and_a_row_per_key(name):
    result = ferbench("list", "--method", name)
    assert result.exit_code == 0, result.output
    out = result.stdout
    info = json.loads(ferbench("list", "--method", name, "--json").stdout)
    assert out.splitlines()[0].startswith(f"{name} ({info['display_name']}): ")
    assert f"plugin: {info['plugin']} {info['version']}" in out
    for preset, p in info["presets"].items():
        assert f"  {preset} (values from: {p['source']}" in out
        for key, value in p["values"].items():
            shown = value if isinstance(value, str) else json.dumps(value)
            assert f"    {key} = {shown}" in out
    table = out[out.index("Config keys"):].splitlines()
    starts = {line.split()[0] for line in table[3:] if line and not line.startswith(" ")}
    assert starts == {k["name"] for k in info["keys"]}
    for k in info["keys"]:
        row = next(line for line in table if line.startswith(f"{k['name']} "))
        assert k["type"].split()[0] in row


def test_help_comes_from_the_comments_beside_and_above_each_key():
    baseline = {k["name"]: k for k in describe_method("baseline")["keys"]}
    # A comment block above the key, joined into one text.
    assert baseline["soft_target"]["help"].startswith("A label-carrying extra to train on")
    assert "noise protocols withhold them" in baseline["soft_target"]["help"]
    # A comment on the key's own line (MethodConfig's warmup), inherited by the baseline.
    assert baseline["warmup"]["help"] == "share of the schedule warming up (onecycle)"
    assert baseline["tta_flip"]["help"] == "average the predictions of each test image and " \
                                           "its mirror"
    from ferbench.keyhelp import key_help
    from ferbench.method import MethodConfig

    @dataclasses.dataclass
    class Bare(MethodConfig):
        plain: int = 3
    assert key_help(Bare)["plain"] == ""  # no comment: empty, never invented
    assert baseline["optimizer"]["allowed"] == "adamw | sgd | adam"
    assert baseline["momentum"]["allowed"] == "[0.0, 1.0]"
    assert baseline["batch_size"]["allowed"] == ">= 1"


def test_a_subclass_keeps_a_comment_it_does_not_repeat_and_replaces_one_it_does():
    manet = {k["name"]: k["help"] for k in describe_method("manet")["keys"]}
    esr = {k["name"]: k["help"] for k in describe_method("esr")["keys"]}
    assert manet["cap_per_class"].startswith("At most this many training images per class")
    assert esr["cap_per_class"] == "code: ≤ 5,000 training images per class"
    assert esr["lr"] == "the new branch (and the base in phase 1)"


@dataclasses.dataclass
class _DocumentedConfig(MethodConfig):
    # How hard to push,
    # in two lines.
    push: float = setting(0.5, low=0.0, high=1.0)
    mode: str = setting("a", choices=("a", "b"))  # which way
    told: int = dataclasses.field(default=3, metadata={"help": "given as metadata"})  # not this
    bare: bool = False


class _Documented(Method):
    """A third party's method, documented the way the project's own are."""

    Config = _DocumentedConfig
    presets = {"quick": {"epochs": 1}, "paper": {}, "tuned": {"push": 0.9}}
    preset_sources = {"quick": "ferbench", "paper": "paper-text"}

    def build(self, ctx):
        raise NotImplementedError

    def training_step(self, model, batch, ctx):
        raise NotImplementedError

    def predict(self, model, images):
        raise NotImplementedError


class _Plugin:
    @hookimpl
    def ferbench_register_methods(self, register):
        register("documented", _Documented)


def test_a_third_party_methods_keys_and_presets_are_described_from_its_source():
    reg = build_registry([_Plugin()])
    info = describe_method("documented", reg)
    keys = {k["name"]: k for k in info["keys"]}
    assert info["description"] == "A third party's method, documented the way the project's " \
                                  "own are."
    assert keys["push"]["help"] == "How hard to push, in two lines."
    assert (keys["push"]["low"], keys["push"]["high"], keys["push"]["default"]) == (0.0, 1.0, 0.5)
    assert keys["mode"]["help"] == "which way" and keys["mode"]["choices"] == ["a", "b"]
    assert keys["told"]["help"] == "given as metadata"
    assert keys["bare"]["help"] == "" and keys["bare"]["allowed"] == ""
    # A preset without a declared source is ferbench's own choice, as a run records it.
    assert {p: v["source"] for p, v in info["presets"].items()} == {
        "quick": "ferbench", "paper": "paper-text", "tuned": "ferbench"}
    assert info["presets"]["tuned"]["values"] == {"push": 0.9}


def test_an_unknown_method_is_one_line_with_the_closest_name():
    one_error_line(ferbench("list", "--method", "basline"), "unknown method 'basline'",
                   "did you mean 'baseline'?")
    one_error_line(ferbench("list", "--method", "basline", "--json"), "did you mean 'baseline'?")


# --- list --dataset --------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_list_dataset_shows_description_layouts_and_options_with_defaults(name):
    adapter = registry().get("datasets", name)
    result = ferbench("list", "--dataset", name)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.splitlines()[0] == f"{name}: {adapter.description}"
    for layout, text in adapter.layouts.items():
        assert f"  {layout}: {text}" in out
    for option, default in adapter.options.items():
        shown = default if isinstance(default, str) else json.dumps(default)
        assert f"  {option} = {shown}" in out
    if not adapter.options:
        assert "Options (-o KEY=VALUE):\n  (none)" in out

    info = json.loads(ferbench("list", "--dataset", name, "--json").stdout)
    assert info["layouts"] == adapter.layouts
    assert info["options"] == json.loads(json.dumps(adapter.options))
    assert info["plugin"] == registry().datasets[name].plugin
    assert info["official_counts"] == json.loads(json.dumps(
        getattr(adapter, "official_counts", None)))


def test_list_dataset_shows_official_counts_and_label_codes():
    out = ferbench("list", "--dataset", "ferplus").stdout
    assert "Official counts (microsoft/FERPlus label.csv, majority scheme):" in out
    assert "  train: 25,045 (28,558 rows)" in out
    assert "Label codes of its own files: 0 neutral, 1 happiness" in out
    assert "Same faces as: fer2013" in out


def test_an_unknown_dataset_is_one_line_with_the_closest_name():
    one_error_line(ferbench("list", "--dataset", "ferpls"), "unknown dataset 'ferpls'",
                   "did you mean 'ferplus'?")


def test_method_and_dataset_together_are_refused():
    one_error_line(ferbench("list", "--method", "baseline", "--dataset", "ferplus"),
                   "--method NAME or --dataset NAME")


# --- data check against the official counts -------------------------------------------------


def check(dataset, root, tmp_path, *more):
    report = tmp_path / "report.json"
    result = ferbench("data", "check", dataset, "--data-root", root, "--no-audit",
                      "--report", report, *more)
    assert result.exit_code == 0, result.output  # a copy that differs is reported, not refused
    return result.stdout, json.loads(report.read_text())["official"]


def fer2013_tree(root: Path, per_class: dict[str, int]) -> Path:
    """The image-folder export of FER2013 with `per_class` training images and one test image
    each of PublicTest and PrivateTest."""
    seed = 0
    for folder, n in per_class.items():
        for i in range(n):
            seed += 1
            write_image(root / "train" / folder / f"Training_{seed}.jpg", seed=seed)
    write_image(root / "test" / "happy" / "PublicTest_1.jpg", seed=1000)
    write_image(root / "test" / "sad" / "PrivateTest_1.jpg", seed=1001)
    return root


def test_a_subset_of_fer2013_is_reported_split_by_split(tmp_path):
    root = fer2013_tree(tmp_path / "fer2013", {"happy": 3, "sad": 2})
    out, official = check("fer2013", root, tmp_path)
    assert "official counts (fer2013.csv of the ICML 2013 challenge): this copy differs" in out
    assert "  train: 5 (official 28,709, -28,704): a subset; per class anger -3,995" in out
    assert "  val: 1 (official 3,589, -3,588): a subset" in out
    assert official["compared"] and official["matches"] is False
    train = official["splits"]["train"]
    assert (train["official"], train["found"], train["verdict"]) == (28709, 5, "subset")
    assert train["class_differences"]["happiness"] == 3 - 7215
    assert official["splits"]["test_all"]["found"] == 2


def ckplus_tree(root: Path, per_class: dict[str, int]) -> Path:
    """CK+'s 48x48 export: `<class>/S<subject>_<seq>_<frame>.png`, four subjects in turn."""
    seed = 0
    for folder, n in per_class.items():
        for i in range(n):
            seed += 1
            write_image(root / folder / f"S{10 + i % 4:03d}_001_{seed:08d}.png", seed=seed)
    return root


def test_a_ckplus_copy_with_more_of_one_class_is_a_different_copy(tmp_path):
    root = ckplus_tree(tmp_path / "ckplus", {"contempt": 18, "happiness": 4})
    out, official = check("ckplus", root, tmp_path)
    assert ("  all: 22 (official 890, -868): a different copy; per class anger -43, "
            "contempt +1, ") in out
    assert official["splits"]["all"]["verdict"] == "differs"
    assert official["splits"]["all"]["class_differences"]["contempt"] == 1


@pytest.mark.realdata
@pytest.mark.parametrize("dataset", ["ferplus", "fer2013", "ckplus"])
def test_the_real_archives_match_their_official_counts(dataset, unpacked, tmp_path):
    out, official = check(dataset, unpacked(dataset), tmp_path)
    assert ": every split matches" in out
    assert official["compared"] and official["matches"] is True
    assert {s: e["verdict"] for s, e in official["splits"].items()} == {
        s: "matches" for s in official["splits"]}
    if dataset == "ferplus":
        assert "  train: 25,045 (official 25,045): matches; rows 28,558 (official 28,558): " \
               "match" in out
        assert official["splits"]["test"]["rows"] == {"official": 3573, "found": 3573,
                                                      "matches": True}


@pytest.mark.realdata
def test_ferplus_under_another_scheme_is_not_compared_and_says_why(unpacked, tmp_path):
    out, official = check("ferplus", unpacked("ferplus"), tmp_path, "-o", "scheme=plurality")
    assert ("not compared, the official counts are for scheme=majority "
            "(given: scheme=plurality)") in out
    assert official["compared"] is False and official["matches"] is None
