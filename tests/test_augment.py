"""Batched augmentation views: what each view does to a batch, and reproducibility."""

from __future__ import annotations

import pytest
import torch

from ferbench import View, hookimpl, plugins
from ferbench.data.augment import apply_view, crop_flip, random_erase, resolve_view
from ferbench.errors import ConfigError
from ferbench.plugins import build_registry


def _batch(b=8, size=16, c=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, size, size, c), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("view", ["none", "weak", "strong", "flip"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_view_gives_three_channel_floats_in_unit_range(view, channels):
    x = apply_view(view, _batch(c=channels), torch.Generator().manual_seed(0))
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_none_is_the_image_itself_and_flip_mirrors_it():
    raw = _batch(c=1)
    none = apply_view("none", raw, torch.Generator())
    assert torch.equal(none[:, 0], raw[..., 0].float() / 255)
    flipped = apply_view("flip", raw, torch.Generator())
    assert torch.equal(flipped, none.flip(3))


def test_the_same_generator_state_gives_the_same_augmentation():
    raw = _batch()
    a = apply_view("strong", raw, torch.Generator().manual_seed(3))
    b = apply_view("strong", raw, torch.Generator().manual_seed(3))
    c = apply_view("strong", raw, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_crop_without_padding_or_flip_is_the_identity():
    raw = _batch()
    assert torch.equal(crop_flip(raw, torch.Generator(), pad=0.0, flip=False), raw)


def test_crop_and_flip_keep_every_output_pixel_from_the_padded_image():
    # A constant image stays constant under reflect padding, crops and mirroring.
    raw = torch.full((4, 16, 16, 1), 77, dtype=torch.uint8)
    out = crop_flip(raw, torch.Generator().manual_seed(0), pad=0.25, flip=True)
    assert bool((out == 77).all())


def test_random_erasing_fills_a_rectangle_only_in_chosen_samples():
    x = torch.full((32, 1, 16, 16), 0.5)
    out = random_erase(x, torch.Generator().manual_seed(0), p=1.0, scale=(0.1, 0.2))
    changed = (out != 0.5).flatten(1).any(1)
    assert bool(changed.all())
    untouched = random_erase(x, torch.Generator().manual_seed(0), p=0.0)
    assert torch.equal(untouched, x)


def test_views_resolve_with_their_full_parameters_for_the_config_hash():
    name, params = resolve_view(("weak", {"erase": 0.25}))
    assert name == "weak" and params == {"pad": 0.125, "flip": True, "erase": 0.25}
    with pytest.raises(ConfigError, match="did you mean 'strong'"):
        resolve_view("strnog")


def _invert(images, gen):
    return 1 - images.permute(0, 3, 1, 2).float() / 255


class InvertOnce:
    """A plugin that adds the view `test-invert-once` and tries to take the built-in `flip`."""

    @hookimpl
    def ferbench_register_views(self, register):
        register("test-invert-once", View(_invert))
        register("flip", View(_invert))


@pytest.fixture
def plugin_registry(monkeypatch):
    """Makes the process registry one built from the built-ins and the given plugin objects."""
    monkeypatch.setenv("FERBENCH_LOAD_PLUGINS", "")

    def build(*extra):
        reg = build_registry(extra_plugins=list(extra))
        monkeypatch.setattr(plugins, "_REGISTRY", reg)
        return reg
    return build


def test_a_plugin_can_register_a_view_once(plugin_registry):
    reg = plugin_registry(InvertOnce())
    out = apply_view("test-invert-once", _batch(), torch.Generator())
    assert out.shape == (8, 3, 16, 16)
    assert torch.equal(out[:, :1], 1 - apply_view("none", _batch(), torch.Generator())[:, :1])
    # A built-in view's name can never be taken: the later registration is refused.
    [error] = reg.plugins["InvertOnce-0"].errors
    assert error == "view 'flip' is already registered by ferbench.data.views; skipped"
    assert reg.views["flip"].plugin == "ferbench.data.views"


def test_a_view_two_plugins_claim_is_refused_for_both(plugin_registry):
    class Again(InvertOnce):
        pass

    plugin_registry(InvertOnce(), Again())
    with pytest.raises(ConfigError, match=r"^view 'test-invert-once' is registered by more than "
                                          r"one plugin \(InvertOnce-0, Again-1\): uninstall all "
                                          r"but one$"):
        apply_view("test-invert-once", _batch(), torch.Generator())


def test_a_plugin_view_is_checked_like_a_built_in_one(plugin_registry):
    def scaled(images, gen, gain):
        return (images.permute(0, 3, 1, 2).float() / 255 * gain).clamp(0, 1)

    class Gain:
        @hookimpl
        def ferbench_register_views(self, register):
            register("gain", View(scaled, {"gain": 1.0}, {"gain": (0.0, 4.0)}))

    plugin_registry(Gain())
    assert resolve_view(("gain", {"gain": 2})) == ("gain", {"gain": 2})
    assert torch.equal(apply_view(("gain", {"gain": 0.0}), _batch(), torch.Generator()),
                       torch.zeros(8, 3, 16, 16))
    with pytest.raises(ConfigError, match=r"^augmentation view gain: gain=5 must be in "
                                          r"\[0.0, 4.0\]$"):
        resolve_view(("gain", {"gain": 5}))
    with pytest.raises(ConfigError, match=r"^unknown augmentation view 'gian'; did you mean "
                                          r"'gain'\? \(choices: flip, gain, none, strong, weak\)$"):
        resolve_view("gian")


@pytest.mark.parametrize("view", ["weak", "strong"])
@pytest.mark.parametrize("size", [48, 112])
def test_augmentation_kernel_speed(benchmark, view, size):
    """pytest --benchmark-enable -k kernel_speed prints images/s per view and size."""
    raw = _batch(b=256, size=size)
    gen = torch.Generator().manual_seed(0)
    out = benchmark(apply_view, view, raw, gen)
    assert out.shape == (256, 3, size, size)


@pytest.mark.parametrize("size, channels", [(16, 1), (48, 1), (20, 3)])
def test_crop_flip_equals_cropping_a_reflect_padded_copy(size, channels):
    """The gathers draw the same numbers and give the same pixels as padding then cropping."""
    raw = torch.randint(0, 256, (32, size, size, channels), dtype=torch.uint8,
                        generator=torch.Generator().manual_seed(size))
    out = crop_flip(raw, torch.Generator().manual_seed(1), pad=0.125, flip=True)
    gen = torch.Generator().manual_seed(1)
    p = round(0.125 * size)
    padded = torch.nn.functional.pad(raw.permute(0, 3, 1, 2).float(), (p, p, p, p),
                                     mode="reflect").to(torch.uint8).permute(0, 2, 3, 1)
    oy = torch.randint(0, 2 * p + 1, (32,), generator=gen)
    ox = torch.randint(0, 2 * p + 1, (32,), generator=gen)
    mirrored = torch.rand(32, generator=gen) < 0.5
    for i in range(32):
        crop = padded[i, oy[i]:oy[i] + size, ox[i]:ox[i] + size]
        assert torch.equal(out[i], crop.flip(1) if mirrored[i] else crop)
    assert 0 < int(mirrored.sum()) < 32  # both branches were checked
