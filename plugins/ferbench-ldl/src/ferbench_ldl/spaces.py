"""Auxiliary spaces: where an image's neighbours are looked for.

A space is named in the config as `NAME` or `NAME:ARG` (`extra:pseudo_va`,
`embed:runs/…/seed0.weights.pt`). Built-in spaces are registered through the plugin's own
hook, `ferbench_ldl_register_spaces`, exactly as another package adds one.

The harness's rule decides which spaces a run may use: under a noise protocol it
withholds label-carrying extras (FERPlus votes, AffectNet valence-arousal, synthfer's
distribution) from methods, and a space built on one is refused in one line; spaces
derived from the image alone are always allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ferbench.errors import ConfigError, DataError, missing_file, unknown_name


@dataclass(frozen=True)
class AuxSpace:
    """One auxiliary space.

    `points(ctx, arg, config)` returns one point per training sample, float [N, D]
    (`arg` is the text after `NAME:`, or None; `config` the method's Config).
    `label_carrying`: built from annotations made with the labels (refused where the
    protocol withholds them). `relative`: its distances are divided by the median
    distance to the K-th neighbour before the kernel (a space without a natural scale);
    False keeps the space's own scale (valence-arousal, as the official code).
    `needs_arg`: the name alone is not enough (`extra:NAME`, `embed:PATH`). `takes_arg`:
    False where `NAME:ARG` would be ignored, so the config refuses it (the default, True,
    leaves what an argument means to the space).
    """

    points: Callable
    description: str
    label_carrying: bool = False
    relative: bool = True
    needs_arg: bool = False
    takes_arg: bool = True


@dataclass
class SpaceRegistry:
    spaces: dict[str, AuxSpace] = field(default_factory=dict)
    refused: list[tuple[str, str]] = field(default_factory=list)   # (name, why)


def registry() -> SpaceRegistry:
    """Every space registered through `ferbench_ldl_register_spaces` by installed plugins."""
    from ferbench.plugins import plugin_manager

    reg = SpaceRegistry()

    def register(name, space):
        if not isinstance(space, AuxSpace):
            reg.refused.append((str(name), f"not an AuxSpace ({type(space).__name__})"))
        elif name in reg.spaces:
            reg.refused.append((str(name), "name already registered"))
        else:
            reg.spaces[str(name)] = space

    pm = plugin_manager()
    hook = getattr(pm.hook, "ferbench_ldl_register_spaces", None)
    # pluggy calls the latest plugin first; call each in registration order instead, so the
    # first registrant of a name (the built-ins) keeps it, and one that raises is isolated.
    for impl in (hook.get_hookimpls() if hook is not None else []):
        try:
            impl.function(register=register)
        except Exception as e:
            reg.refused.append((impl.plugin_name, f"ferbench_ldl_register_spaces raised "
                                                  f"{type(e).__name__}: {e}"))
    return reg


def parse(spec: str) -> tuple[str, str | None]:
    name, _, arg = str(spec).partition(":")
    return name.strip(), (arg.strip() or None)


def check_spec(setting: str, spec) -> None:
    """Refuse, when the config is built, an argument given to a registered space that takes
    none (`hog:junk` would silently be `hog`); `setting` is the `KEY=VALUE` the error names.
    Unknown names are left to `space_points`, which suggests the closest."""
    name, arg = parse(spec)
    space = registry().spaces.get(name)
    if space is not None and arg is not None and not space.takes_arg:
        raise ConfigError(f"{setting}: must be {name} without an argument (:{arg}); the "
                          f"space takes none")


def space_points(ctx, spec: str, config):
    """The points of space `spec` for the training set, checked: float [N, D], finite.
    Returns (points, AuxSpace); every problem is one ConfigError or DataError naming it."""
    import torch

    name, arg = parse(spec)
    reg = registry()
    space = reg.spaces.get(name)
    if space is None:
        raise unknown_name("auxiliary space", name, sorted(reg.spaces))
    if space.needs_arg and not arg:
        raise ConfigError(f"auxiliary space {name!r} needs an argument: {name}:ARG "
                          f"({space.description})")
    pts = space.points(ctx, arg, config)
    pts = torch.as_tensor(pts).detach().float().cpu()
    n = len(ctx.train)
    if pts.ndim == 1:
        pts = pts[:, None]
    pts = pts.reshape(len(pts), -1)
    if len(pts) != n:
        raise ConfigError(f"auxiliary space {spec!r} has {len(pts)} points for {n} training "
                          f"samples")
    if pts.shape[1] == 0:
        raise ConfigError(f"auxiliary space {spec!r} has no coordinates")
    bad = ~torch.isfinite(pts).all(1)
    if bad.any():
        first = int(torch.nonzero(bad)[0])
        raise ConfigError(f"auxiliary space {spec!r} has non-finite values for "
                          f"{int(bad.sum())} samples (first: {ctx.train.ids[first]})")
    if arg in getattr(ctx.train, "label_extras", ()) and not space.label_carrying:
        # `extra:NAME` of an extra given as `:label` (or synthfer's distribution) carries
        # labels like `votes` does: the record says so.
        space = replace(space, label_carrying=True)
    return pts, space


# ---- the built-in spaces ----------------------------------------------------------------
def _extra(ctx, name: str, space: str):
    """A permitted extra of the training set, or one line saying why it is not there."""
    return ctx.train_extra(name, f"auxiliary space {space!r}",
                           "; under noise use a space derived from the images (hog, lbp, "
                           "landmarks, embed:PATH)")


def _va(ctx, arg, config):
    import torch

    return torch.stack([_extra(ctx, "valence", "va").float(),
                        _extra(ctx, "arousal", "va").float()], 1)


def _votes(ctx, arg, config):
    from ferbench.labels import extra_distributions

    votes = _extra(ctx, "votes", "votes")
    dist = extra_distributions("votes", votes, ctx.classes)
    # A face with no vote on the run's classes sits at the centre of the simplex.
    dist[~(dist == dist).all(1)] = 1.0 / len(ctx.classes)
    return dist


def _landmarks(ctx, arg, config):
    """Each face's points centred and scaled to unit RMS radius: the shape, not where the
    face sits in the crop or how large it is."""
    pts = _extra(ctx, arg or "landmarks", "landmarks").float()
    if pts.ndim != 3 or pts.shape[-1] != 2:
        raise ConfigError(f"auxiliary space 'landmarks': extra {arg or 'landmarks'!r} is "
                          f"{list(pts.shape)}, not [N, points, 2]")
    centred = pts - pts.mean(1, keepdim=True)
    radius = centred.pow(2).sum(-1).mean(1).sqrt().clamp_min(1e-6)
    return centred / radius[:, None, None]


def _user_extra(ctx, arg, config):
    return _extra(ctx, arg, f"extra:{arg}").float()


def _image_features(kind: str):
    def points(ctx, arg, config):
        from .features import image_features

        return image_features(ctx.train, kind)
    return points


def _embed(ctx, arg, config):
    from .embedding import embedding_points

    return embedding_points(ctx, Path(arg).expanduser(), config)


def builtin_spaces() -> dict[str, AuxSpace]:
    return {
        "va": AuxSpace(_va, "the dataset's valence and arousal (AffectNet); label-carrying",
                       label_carrying=True, relative=False, takes_arg=False),
        "votes": AuxSpace(_votes, "FERPlus annotator vote distributions; label-carrying",
                          label_carrying=True, relative=False, takes_arg=False),
        "landmarks": AuxSpace(_landmarks, "facial landmarks of an extra ([N, P, 2]; default "
                                          "`landmarks`, synthfer's drawn points), shape only"),
        "extra": AuxSpace(_user_extra, "any numeric extra, e.g. a user's pseudo valence-"
                                       "arousal or landmark file given with --extra NAME=PATH",
                          needs_arg=True),
        "hog": AuxSpace(_image_features("hog"), "HOG histograms of the grey image "
                                                "(scikit-image), computed from pixels alone",
                      takes_arg=False),
        "lbp": AuxSpace(_image_features("lbp"), "uniform LBP histograms on a 4×4 grid "
                                                "(scikit-image), computed from pixels alone",
                      takes_arg=False),
        "embed": AuxSpace(_embed, "pooled features of a frozen image model: embed:PATH to a "
                                  "ferbench weights.pt trained on these images and labels, a "
                                  "timm checkpoint or an open_clip image tower (see "
                                  "aux_backbone)", needs_arg=True),
    }


__all__ = ["AuxSpace", "DataError", "check_spec", "missing_file", "registry",
           "space_points", "parse"]
