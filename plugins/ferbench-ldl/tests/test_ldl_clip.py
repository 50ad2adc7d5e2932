"""The `embed:` space with an open_clip image tower: a user's CLIP file, in the formats a
user has (a whole open_clip state dict, the tower's own, OpenAI's TorchScript archive),
gives the same points."""

from __future__ import annotations

import json

import pytest
import torch
from ferbench_ldl.spaces import space_points

from ferbench.errors import DataError
from ferbench.testing import tiny_context
from ldl_fixtures import isolated_cache, one_thread  # noqa: F401  (autouse fixtures)

open_clip = pytest.importorskip("open_clip")

TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                       "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2,
                     "layers": 1}}


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    """A tiny CLIP config registered with open_clip, and its random weights written in both
    formats: open_clip's state dict and a TorchScript archive whose tensors are named like
    OpenAI's (`visual.*`)."""
    d = tmp_path_factory.mktemp("clip")
    (d / "ferbench-test-clip.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(d / "ferbench-test-clip.json")
    torch.manual_seed(0)
    model = open_clip.create_model("ferbench-test-clip", pretrained=None)
    torch.save(model.state_dict(), d / "open_clip.pt")
    torch.save(model.visual.state_dict(), d / "tower.pt")

    class Whole(torch.nn.Module):
        def __init__(self, visual):
            super().__init__()
            self.visual = visual

        def forward(self, x):
            return self.visual(x)

    traced = torch.jit.trace(Whole(model.visual).eval(), torch.zeros(1, 3, 32, 32),
                             check_trace=False)
    traced.save(str(d / "openai.pt"))
    return d


def context(tmp_path, monkeypatch):
    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path / "cache"))
    method, ctx = tiny_context("ldlva", ["aux_backbone=clip:ferbench-test-clip",
                                         "image_size=32", "backbone=ferbench_resnet_tiny"])
    return method, ctx


def test_a_clip_tower_in_any_file_format_gives_the_same_points(clip_files, tmp_path,
                                                                   monkeypatch):
    method, ctx = context(tmp_path, monkeypatch)
    a, _ = space_points(ctx, f"embed:{clip_files / 'open_clip.pt'}", method.config)
    b, _ = space_points(ctx, f"embed:{clip_files / 'openai.pt'}", method.config)
    c, _ = space_points(ctx, f"embed:{clip_files / 'tower.pt'}", method.config)
    assert a.shape == (len(ctx.train), 16)
    assert torch.isfinite(a).all() and a.std() > 0
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    loaded = [w for w in ctx._weights_log if str(w.get("module", "")).startswith("aux clip")]
    assert loaded and all(w["init"] in ("checkpoint", "partial") and not w["left_random"]
                          for w in loaded)


def test_a_file_that_is_not_that_tower_is_one_error_naming_it(clip_files, tmp_path,
                                                              monkeypatch):
    method, ctx = context(tmp_path, monkeypatch)
    wrong = tmp_path / "resnet.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(DataError, match="resnet.pt"):
        space_points(ctx, f"embed:{wrong}", method.config)
