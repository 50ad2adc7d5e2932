"""Fixtures every ferbench-uafer test module imports: an isolated decoded cache, one CPU
thread, and a tiny CLIP written to disk in the two formats users have. Not a conftest.py: a
second top-level `conftest` module would shadow the core tests' own `from conftest import`."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

# Small enough for a unit test, with the real BPE vocabulary so the bundled tokenizer fits.
TEST_ARCH = "ferbench-test-uafer"
TEST_CFG = {"embed_dim": 16,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8,
                           "head_width": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2,
                         "layers": 1}}
OTHER_CFG = {**TEST_CFG, "vision_cfg": {**TEST_CFG["vision_cfg"], "width": 48}}
# What a unit test's context runs: the test tower at 32 px, its 16 patches, top-3 of them.
TEST_OVERRIDES = [f"backbone=clip:{TEST_ARCH}", "image_size=32", "topk=3", "fix_layer=0"]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """The decoded synthfer images go to this session's own folder, never the user's cache."""
    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "uafer-cache"))


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread per test, restored afterwards (a small machine shared with a
    training process runs tiny models many times slower with two contending threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class OpenAILayout(torch.nn.Module):
    """A CLIP laid out as OpenAI's released archives are: the towers' modules and parameters at
    the top level, plus the three bookkeeping tensors OpenAI's files carry."""

    def __init__(self, clip):
        super().__init__()
        for name, child in clip.named_children():
            setattr(self, name, child)
        for name, p in clip.named_parameters(recurse=False):
            setattr(self, name, p)
        self.register_buffer("input_resolution", torch.tensor(32))
        self.register_buffer("context_length", torch.tensor(16))
        self.register_buffer("vocab_size", torch.tensor(49408))

    def forward(self, x):
        return self.visual(x)


def register(folder, name, cfg):
    import open_clip

    path = folder / f"{name}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return path


@pytest.fixture(scope="session")
def clip_files(tmp_path_factory):
    """The test CLIP registered with open_clip, its random weights written as an open_clip
    state dict (`open_clip.pt`) and as a TorchScript archive in fp16 named like OpenAI's
    (`openai.pt`), and a CLIP of another width (`other.pt`)."""
    import open_clip

    d = tmp_path_factory.mktemp("clip")
    register(d, TEST_ARCH, TEST_CFG)
    register(d, "ferbench-test-other", OTHER_CFG)
    torch.manual_seed(0)
    model = open_clip.create_model(TEST_ARCH, pretrained=None)
    torch.save(model.state_dict(), d / "open_clip.pt")
    with warnings.catch_warnings():  # tracing's deprecation and tracer notes
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(OpenAILayout(model).eval(), torch.zeros(1, 3, 32, 32),
                                 check_trace=False)
    traced.half()
    traced.save(str(d / "openai.pt"))
    other = open_clip.create_model("ferbench-test-other", pretrained=None)
    torch.save(other.state_dict(), d / "other.pt")
    return d
