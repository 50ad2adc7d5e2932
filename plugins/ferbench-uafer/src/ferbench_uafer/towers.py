"""CLIP towers from open_clip: an architecture by name, weights from a local file.

Two file formats are what users have: OpenAI's released archives (`ViT-B-16.pt`, TorchScript,
fp16, with QuickGELU) and open_clip's state dicts. Nothing is downloaded; the tokenizer is
open_clip's bundled BPE vocabulary.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ferbench.errors import ConfigError, DataError, missing_file

CONFIG_DIR = Path(__file__).parent / "model_configs"
# The tensors OpenAI's archives hold besides the model's (its build_model deletes them too).
OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")
# The code's class words (RAF-DB and AffectNet scripts), by canonical class.
CODE_WORDS = {"neutral": "neutral", "happiness": "happy", "surprise": "surprise",
              "sadness": "sad", "anger": "anger", "disgust": "disgusted", "fear": "fear",
              "contempt": "contempt"}

_registered: set = set()


def resolve_arch(name: str) -> str:
    """An open_clip model name; a `.json` model config file is registered under its stem,
    and this plugin's own small configs (`uafer-tiny`) are always known."""
    import open_clip

    if str(CONFIG_DIR) not in _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered.add(str(CONFIG_DIR))
    if name.endswith(".json"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise missing_file(path, "CLIP model config")
        if str(path) not in _registered:
            open_clip.add_model_config(path)
            _registered.add(str(path))
        name = path.stem
    if name not in open_clip.list_models():
        vit = [m for m in open_clip.list_models() if m.startswith(("ViT-B", "uafer"))]
        raise ConfigError(f"backbone {name!r}: not an open_clip model (e.g. clip:"
                          f"{', clip:'.join(vit[:6])}; or a model config .json)")
    return name


def is_openai_archive(path) -> bool:
    """OpenAI's released files are TorchScript archives; open_clip writes state dicts."""
    from ferbench.weights import _is_torchscript

    return path is not None and Path(path).is_file() and _is_torchscript(Path(path))


def wants_quick_gelu(setting: str, arch: str, path) -> bool:
    """`auto`: QuickGELU for OpenAI's archives and `-quickgelu` names (OpenAI trained with it;
    open_clip's own trainings use GELU), else GELU."""
    if setting != "auto":
        return setting == "true"
    return arch.endswith("-quickgelu") or is_openai_archive(path)


def create_clip(arch: str, image_size: int, quick_gelu: bool) -> torch.nn.Module:
    """A whole CLIP (both towers) with random weights, at `image_size` pixels."""
    import open_clip

    # open_clip warns on the root logger that no pretrained weights were loaded: random
    # weights are the point here, and the method says so itself where it matters.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        return open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu,
                                      force_image_size=image_size)
    except (RuntimeError, ValueError, AssertionError) as e:
        raise ConfigError(f"backbone {arch!r} at image_size {image_size}: {e}") from None
    finally:
        logging.disable(previous)


def load_clip(ctx, model: torch.nn.Module, path, arch: str) -> dict:
    """Both towers from `path` (None: random, recorded); every tensor of the model must be in
    the file with its shape, else one DataError line naming the file."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise missing_file(path, "CLIP weights file")
    entry = ctx.load_weights(model, path, name=f"clip {arch}", strip_prefixes=("module.",),
                             matching_only=True)
    if path is None:
        return entry
    left = entry.get("left_random") or []
    unused = [k for k in entry.get("unused", []) if k not in OPENAI_EXTRAS]
    if left or unused:
        first = (left or unused)[0]
        raise DataError(path, f"does not fit the {arch} CLIP at {ctx.image_size} px: "
                              f"{len(left)} of its tensors missing or misshapen in the file, "
                              f"{entry['n_unused']} of the file's unused (first: {first})")
    return entry


def prompts(classes, template: str, words: dict | None = None) -> list[str]:
    """One prompt per class: the template filled with the code's word for it (or the user's)."""
    if "{}" not in template:
        raise ConfigError(f"prompt {template!r}: the template needs a {{}} for the class word")
    for name, word in (words or {}).items():
        if name not in classes:   # a misspelt class would silently keep the code's word
            raise ConfigError(f"class_words.{name}: not a class of this run "
                              f"(its classes: {', '.join(classes)})")
        if not isinstance(word, str) or not word.strip():
            raise ConfigError(f"class_words.{name}={word!r}: must be a word or phrase")
    table = {**CODE_WORDS, **(words or {})}
    return [template.format(table.get(c, c)) for c in classes]


def tokenize(texts, context_length: int) -> torch.Tensor:
    """Token ids [C, L] from open_clip's bundled tokenizer (offline); a prompt that would be
    cut short is refused."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer(context_length=context_length)
    for t in texts:
        n = len(tok.encode(t)) + 2  # start and end tokens
        if n > context_length:
            raise ConfigError(f"prompt {t!r} is {n} tokens, the text tower takes "
                              f"{context_length}: shorten the template")
    return tok(list(texts))


class Student(torch.nn.Module):
    """The trainable image tower: class token and patch tokens, both through the projection
    (open_clip returns the patch tokens after the final LayerNorm but unprojected)."""

    def __init__(self, visual: torch.nn.Module):
        super().__init__()
        if getattr(visual, "proj", None) is None or getattr(visual, "pool_type", "tok") != "tok" \
                or getattr(visual, "attn_pool", None) is not None \
                or getattr(visual, "final_ln_after_pool", False):
            raise ConfigError("uafer needs a ViT image tower with a class token, a final "
                              "LayerNorm over every token and a projection (open_clip's "
                              "ViT-* models)")
        visual.output_tokens = True
        self.visual = visual

    def forward(self, x):
        pooled, tokens = self.visual(x)          # pooled is already projected
        return pooled, tokens @ self.visual.proj

    @property
    def depth(self) -> int:
        return len(self.visual.transformer.resblocks)

    @property
    def n_patches(self) -> int:
        return int(self.visual.positional_embedding.shape[0]) - 1
