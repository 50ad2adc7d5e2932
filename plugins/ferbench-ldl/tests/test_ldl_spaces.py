"""Auxiliary spaces: each built-in space's points, each error a user can meet (one line,
naming the space or the extra), a third party's space through the plugin's own hook, and
the `embed:PATH` space's three kinds of file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from ferbench_ldl import AuxSpace
from ferbench_ldl.features import image_features, lbp
from ferbench_ldl.spaces import builtin_spaces, registry, space_points

import ferbench.models  # noqa: F401  (registers ferbench_resnet_tiny with timm)
from ferbench import hookimpl
from ferbench.errors import ConfigError, DataError
from ferbench.nn import normalize
from ferbench.plugins import plugin_manager
from ferbench.runkey import RunKey
from ferbench.testing import tiny_context
from ldl_fixtures import isolated_cache, one_thread  # noqa: F401  (autouse fixtures)

SMALL = {"n_train": 40, "n_test": 8}


def noisy_context():
    """LDLVA's quick config at 32 px on 40 synthfer faces under noise30."""
    m, ctx = tiny_context("ldlva", ["image_size=32"], data_options=SMALL)
    return ctx, m.config


def clean_context():
    """The same under the clean protocol, where the labels' own extras are handed out."""
    from ferbench.config import compose_run, to_method_config
    from ferbench.context import build_context
    from ferbench.datasets.base import open_dataset
    from ferbench.datasets.synthfer import SynthFER
    from ferbench.device import resolve_device
    from ferbench.plugins import registry as plugins
    from ferbench.protocols import Clean, finish_view
    from ferbench.testing import TINY

    cls = plugins().get("methods", "ldlva")
    ds = open_dataset(SynthFER(), None, None, {**TINY, **SMALL})
    view = finish_view(Clean().apply(ds, {}), {})
    mcfg = to_method_config(cls, compose_run("ldlva", cls, "quick", {}, ["image_size=32"]))
    ctx, _, _ = build_context(view, mcfg, mode="L", device=resolve_device("cpu"),
                              precision="fp32", show_progress=False)
    return ctx, mcfg


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_what_each_protocol_hands_out():
    ctx, _ = noisy_context()
    assert set(ctx.train.extras) == {"landmarks"} and ctx.train.withheld == ("distribution",)
    ctx, _ = clean_context()
    assert set(ctx.train.extras) == {"landmarks", "distribution"} and ctx.train.withheld == ()
    assert ctx.train.extras["landmarks"].shape == (40, 11, 2)


# ---- the built-in spaces --------------------------------------------------------------------
def test_landmarks_are_each_faces_shape_centred_at_unit_rms_radius():
    ctx, cfg = noisy_context()
    pts, space = space_points(ctx, "landmarks", cfg)
    assert pts.shape == (40, 22) and not space.label_carrying and space.relative
    faces = pts.view(40, 11, 2)
    assert torch.allclose(faces.mean(1), torch.zeros(40, 2), atol=1e-6)
    assert torch.allclose(faces.pow(2).sum(-1).mean(1).sqrt(), torch.ones(40), atol=1e-6)
    raw = ctx.train.extras["landmarks"].double().numpy()
    centred = raw - raw.mean(1, keepdims=True)
    want = centred / np.sqrt((centred ** 2).sum(-1).mean(1))[:, None, None]
    assert np.allclose(faces.numpy(), want, atol=1e-5)
    # A face moved and enlarged in the crop is the same shape.
    moved = ctx.train.extras["landmarks"].clone()
    moved[0] = moved[0] * 3 + torch.tensor([5.0, -2.0])
    ctx.train.extras["landmarks"] = moved
    again, _ = space_points(ctx, "landmarks", cfg)
    assert torch.allclose(again[0], pts[0], atol=1e-5)


def test_landmarks_of_an_extra_that_is_not_points_is_one_error():
    ctx, cfg = clean_context()
    with pytest.raises(ConfigError) as err:
        space_points(ctx, "landmarks:distribution", cfg)
    assert "'distribution'" in one_line(err) and "[N, points, 2]" in one_line(err)


def test_hog_and_lbp_are_finite_histograms_of_the_pixels():
    ctx, cfg = noisy_context()
    hog_pts, _ = space_points(ctx, "hog", cfg)
    # 32 px: cells of 5 px, 6 × 6 cells, 5 × 5 blocks of 2 × 2 cells, 9 orientations
    assert hog_pts.shape == (40, 5 * 5 * 2 * 2 * 9)
    assert bool(torch.isfinite(hog_pts).all()) and hog_pts.abs().sum() > 0
    lbp_pts, _ = space_points(ctx, "lbp", cfg)
    assert lbp_pts.shape == (40, 16 * 10)                 # 4 × 4 cells, 10 uniform codes
    assert torch.allclose(lbp_pts.view(40, 16, 10).sum(-1), torch.ones(40, 16), atol=1e-6)


def test_image_features_spread_over_worker_processes_equal_one_process():
    ctx, _ = noisy_context()
    for kind in ("hog", "lbp"):
        alone = image_features(ctx.train, kind, chunk=16, workers=1)
        spread = image_features(ctx.train, kind, chunk=16, workers=2)   # 3 chunks, 2 workers
        assert spread.shape[0] == 40 and torch.equal(alone, spread)


def test_lbp_of_a_flat_image_on_hand_counts():
    # Every pixel codes 8 (all neighbours equal), except along the border, where
    # scikit-image reads zeros outside: corners 3, edges 5. A 4 × 4 cell of an 8 × 8 image
    # holds one corner, six edge pixels and nine inner ones.
    h = lbp(np.full((8, 8), 100, np.uint8), grid=2).reshape(4, 10)
    want = np.zeros(10)
    want[3], want[5], want[8] = 1 / 16, 6 / 16, 9 / 16
    assert np.allclose(h, want[None].repeat(4, 0))


def test_extra_space_takes_a_numeric_extra_as_it_is():
    ctx, cfg = noisy_context()
    pts, space = space_points(ctx, "extra:landmarks", cfg)
    assert not space.label_carrying and space.needs_arg
    assert torch.equal(pts, ctx.train.extras["landmarks"].float().reshape(40, 22))
    ctx, cfg = clean_context()
    pts, space = space_points(ctx, "extra:distribution", cfg)     # clean: handed out
    assert torch.equal(pts, ctx.train.extras["distribution"].float())
    assert space.label_carrying        # recorded as what it is: made from the labels
    _, space = space_points(ctx, "extra:landmarks", cfg)
    assert not space.label_carrying


def test_a_missing_extra_is_named():
    ctx, cfg = noisy_context()
    with pytest.raises(ConfigError) as err:
        space_points(ctx, "extra:missing", cfg)
    assert "'missing'" in one_line(err) and "landmarks" in one_line(err)


def test_a_withheld_label_carrying_extra_is_refused_saying_the_protocol_withholds_it():
    ctx, cfg = noisy_context()
    with pytest.raises(ConfigError) as err:
        space_points(ctx, "extra:distribution", cfg)
    text = one_line(err)
    assert "noise30 withholds" in text and "'distribution'" in text


@pytest.mark.parametrize("spec,extra", [("votes", "'votes'"), ("va", "'valence'")])
def test_spaces_of_extras_synthfer_has_not_are_one_line_naming_the_extra(spec, extra):
    for ctx, cfg in (noisy_context(), clean_context()):
        with pytest.raises(ConfigError) as err:
            space_points(ctx, spec, cfg)
        assert f"auxiliary space {spec!r}" in one_line(err) and extra in one_line(err)


def test_an_unknown_space_suggests_the_closest_name():
    ctx, cfg = noisy_context()
    with pytest.raises(ConfigError) as err:
        space_points(ctx, "landmark", cfg)
    assert "did you mean 'landmarks'?" in one_line(err)


@pytest.mark.parametrize("spec", ["extra", "extra:", "embed"])
def test_a_space_that_needs_an_argument_says_so(spec):
    ctx, cfg = noisy_context()
    with pytest.raises(ConfigError) as err:
        space_points(ctx, spec, cfg)
    assert "needs an argument" in one_line(err) and f"{spec.rstrip(':')}:ARG" in one_line(err)


# ---- a third party's spaces -----------------------------------------------------------------
class ThirdParty:
    """A package adding spaces through `ferbench_ldl_register_spaces`, as the README shows."""

    @hookimpl
    def ferbench_ldl_register_spaces(self, register):
        register("aus", AuxSpace(lambda ctx, arg, cfg: torch.arange(len(ctx.train) * 3.0)
                                 .view(-1, 3), "stand-in action units"))
        register("short", AuxSpace(lambda ctx, arg, cfg: torch.zeros(len(ctx.train) - 1, 2),
                                   "one point short"))
        register("holes", AuxSpace(_with_nan, "a NaN in row 3"))
        register("landmarks", AuxSpace(lambda ctx, arg, cfg: torch.zeros(len(ctx.train), 2),
                                       "an impostor of a built-in name"))
        register("junk", object())


def _with_nan(ctx, arg, cfg):
    pts = torch.zeros(len(ctx.train), 2)
    pts[3, 1] = float("nan")
    return pts


@pytest.fixture
def third_party():
    pm = plugin_manager()
    plugin = ThirdParty()
    pm.register(plugin)
    try:
        yield plugin
    finally:
        pm.unregister(plugin)
    assert "aus" not in registry().spaces


def test_a_third_party_adds_a_space_through_the_plugins_hook(third_party):
    ctx, cfg = noisy_context()
    pts, space = space_points(ctx, "aus", cfg)
    assert torch.equal(pts, torch.arange(120.0).view(40, 3))
    assert space.description == "stand-in action units"


def test_a_space_of_the_wrong_length_or_with_nan_is_one_error_naming_it(third_party):
    ctx, cfg = noisy_context()
    with pytest.raises(ConfigError) as err:
        space_points(ctx, "short", cfg)
    assert "'short'" in one_line(err) and "39 points for 40" in one_line(err)
    with pytest.raises(ConfigError) as err:
        space_points(ctx, "holes", cfg)
    text = one_line(err)
    assert "'holes'" in text and "non-finite" in text and str(ctx.train.ids[3]) in text


def test_a_duplicate_name_and_a_non_space_are_refused(third_party):
    refused = dict(registry().refused)
    assert refused["landmarks"] == "name already registered"
    assert refused["junk"].startswith("not an AuxSpace")


def test_a_third_party_cannot_shadow_a_built_in_space(third_party):
    assert registry().spaces["landmarks"].description == \
        builtin_spaces()["landmarks"].description


# ---- embed:PATH -----------------------------------------------------------------------------
def tiny_backbone(seed=1):
    torch.manual_seed(seed)
    return timm.create_model("ferbench_resnet_tiny", num_classes=0).eval()


def features_of(model, ctx):
    with torch.no_grad():
        return model(normalize(ctx.train.images(torch.arange(len(ctx.train)), "none")))


def test_embed_of_a_missing_file_names_it(tmp_path):
    ctx, cfg = noisy_context()
    with pytest.raises(DataError) as err:
        space_points(ctx, f"embed:{tmp_path / 'nothing.pt'}", cfg)
    assert "nothing.pt" in one_line(err) and "does not exist" in one_line(err)


def test_embed_of_a_timm_checkpoint_gives_the_frozen_models_features(tmp_path):
    ctx, cfg = noisy_context()
    cfg.aux_backbone = "ferbench_resnet_tiny"
    model = tiny_backbone()
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    pts, space = space_points(ctx, f"embed:{tmp_path / 'tiny.pt'}", cfg)
    assert pts.shape == (40, model.num_features) and space.relative
    assert torch.allclose(pts, features_of(model, ctx), atol=1e-5)


def test_embed_of_a_checkpoint_of_something_else_is_refused(tmp_path):
    ctx, cfg = noisy_context()
    cfg.aux_backbone = "ferbench_resnet_tiny"
    torch.save({"foo.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(DataError) as err:
        space_points(ctx, f"embed:{tmp_path / 'other.pt'}", cfg)
    assert "other.pt" in one_line(err)


def ferbench_weights(path, dataset, protocol, model):
    """A file as ferbench stores a run's weights (store.py): its run key, then the tensors
    of the whole method model (the backbone under `backbone.`, a head beside it)."""
    state = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    state["head.weight"] = torch.zeros(7, model.num_features)
    torch.save({"ferbench": {"dataset": dataset, "protocol": protocol, "method": "baseline",
                             "seed": 0, "config_hash": "abc", "version": "test"},
                "state_dict": state}, path)
    return path


def test_embed_of_a_ferbench_run_under_another_protocol_is_refused(tmp_path):
    ctx, cfg = noisy_context()
    ctx.run_key = RunKey("synthfer", "noise30", "ldlva", 0, "0123456789")
    path = ferbench_weights(tmp_path / "seed0.weights.pt", "synthfer", "clean", tiny_backbone())
    with pytest.raises(DataError) as err:
        space_points(ctx, f"embed:{path}", cfg)
    text = one_line(err)
    assert "seed0.weights.pt" in text and "under clean" in text and "under noise30" in text


def test_embed_of_a_ferbench_weights_file_without_its_record_is_refused(tmp_path):
    """Its run key names the protocol but not the labels: without the record, the arrays and
    the noise file stored beside it, nothing says they are this run's."""
    ctx, cfg = noisy_context()
    ctx.run_key = RunKey("synthfer", "noise30", "ldlva", 0, "0123456789")
    path = ferbench_weights(tmp_path / "seed0.weights.pt", "synthfer", "noise30", tiny_backbone())
    with pytest.raises(DataError) as err:
        space_points(ctx, f"embed:{path}", cfg)
    assert "seed0.weights.pt" in one_line(err) and "without its result" in one_line(err)


def test_embed_of_a_ferbench_run_without_a_run_key_to_check_is_refused(tmp_path):
    ctx, cfg = noisy_context()
    assert ctx.run_key is None
    path = ferbench_weights(tmp_path / "seed0.weights.pt", "synthfer", "noise30", tiny_backbone())
    with pytest.raises(DataError) as err:
        space_points(ctx, f"embed:{path}", cfg)
    assert "no run key" in one_line(err)


# ---- embed:PATH of a stored run, through `ferbench run` ----------------------------------------
RUN = ["--preset", "quick", "-o", "n_test=8", "--epochs", "1", "--batch-size", "16",
       "--device", "cpu", "--precision", "fp32", "--no-leaderboard"]


def ferbench_run(out, method, protocol, *args):
    from click.testing import CliRunner

    from ferbench.cli import cli

    return CliRunner().invoke(cli, ["run", "--method", method, f"--protocol={protocol}", *RUN,
                                    "--out", str(out), *args])


def baseline_weights(out, protocol="noise30", *options):
    """The weights.pt of a stored baseline run on synthfer (40 faces unless `options` say)."""
    res = ferbench_run(out, "baseline", protocol, "-o", "n_train=40", *options)
    assert res.exit_code == 0, res.output
    return next(out.rglob("seed0.weights.pt"))


def ldlva_embedding(out, weights, protocol="noise30"):
    return ferbench_run(out, "ldlva", protocol, "-o", "n_train=40", "image_size=32", "k=3",
                        f"aux_space=embed:{weights}")


def refused_line(res, out) -> str:
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("ferbench: error:") and "Traceback" not in res.output
    assert not list(out.rglob("seed*.json"))
    return lines[-1]


def test_embed_of_a_stored_run_on_these_images_and_labels_is_accepted(tmp_path):
    weights = baseline_weights(tmp_path / "source")
    res = ldlva_embedding(tmp_path / "ldl", weights)
    assert res.exit_code == 0, res.output
    record = json.loads(next((tmp_path / "ldl").rglob("seed0.json")).read_text())
    assert record["method_results"]["spaces"][0]["space"] == f"embed:{weights}"


@pytest.mark.parametrize("options,message", [
    (["-o", "n_train=60"], "was trained on 60 training images, this run has 40"),
    (["-o", "seed=5"], "was trained on other training images"),
])
def test_embed_of_a_stored_run_on_other_images_is_refused_saying_so(options, message, tmp_path):
    weights = baseline_weights(tmp_path / "source", "noise30", *options)
    line = refused_line(ldlva_embedding(tmp_path / "ldl", weights), tmp_path / "ldl")
    assert str(weights) in line and message in line


def test_embed_of_a_stored_run_under_another_noise_file_of_the_same_protocol_is_refused(
        tmp_path):
    files = []
    for name, label in (("a", "happiness"), ("b", "sadness")):
        (tmp_path / name).mkdir()
        files.append(tmp_path / name / "noise.txt")
        files[-1].write_text("".join(f"{i:06d} {label}\n" for i in range(40)))
    weights = baseline_weights(tmp_path / "source", f"noise_file={files[0]}")
    res = ldlva_embedding(tmp_path / "ldl", weights, f"noise_file={files[1]}")
    line = refused_line(res, tmp_path / "ldl")
    assert str(weights) in line and "other noisy labels" in line


def test_embed_of_a_stored_run_whose_other_flips_cancel_in_the_class_counts_is_refused(
        tmp_path):
    """Both noise files agree on every flip the source's lists and on the label counts per
    class; this run's also swaps two faces' labels. Only the noise hash tells them apart."""
    def noise_file(name, labels):
        (tmp_path / name).mkdir()
        path = tmp_path / name / "noise.txt"
        path.write_text("".join(f"{sid} {label}\n" for sid, label in labels.items()))
        return path

    # Every face as happiness: the noise file the run stores lists each other face's label.
    probe = tmp_path / "probe"
    happy = noise_file("all-happy", {f"{i:06d}": "happiness" for i in range(40)})
    baseline_weights(probe, f"noise_file={happy}")
    doc = json.loads(next((probe / "synthfer" / "noise").glob("*.json")).read_text())
    clean = {f"{i:06d}": "happiness" for i in range(40)}
    clean.update({f["id"].rsplit("/", 1)[-1]: f["clean"] for f in doc["flips"]})
    first, *rest = sorted(clean)
    source = {**clean, first: next(c for c in doc["classes"] if c != clean[first])}
    a, b = next((x, y) for x in rest for y in rest if clean[x] < clean[y])
    here = {**source, a: clean[b], b: clean[a]}
    weights = baseline_weights(tmp_path / "source", f"noise_file={noise_file('source', source)}")
    res = ldlva_embedding(tmp_path / "ldl", weights, f"noise_file={noise_file('here', here)}")
    line = refused_line(res, tmp_path / "ldl")
    assert str(weights) in line and "was trained under another noise file" in line
