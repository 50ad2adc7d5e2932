"""Loading users' checkpoints into models: the shapes FER researchers have."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .errors import DataError, missing_file
from .runkey import file_digest

_WRAPPERS = ("state_dict", "model", "model_state_dict", "net", "network", "weights")
_PREFIXES = ("module.", "backbone.", "model.", "encoder.", "base.")


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The tensors of a checkpoint file and, for a ferbench weights file, its run key."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise missing_file(path, "weights file")
    try:
        if _is_torchscript(path):
            # OpenAI's released CLIP files are TorchScript archives: their tensors, not code.
            obj = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        else:
            with warnings.catch_warnings():  # torch's pickle-protocol warnings: the error says it
                warnings.simplefilter("ignore")
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        # torch's own text runs to paragraphs of advice; its first sentence is the reason.
        detail = (str(e).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")
        raise DataError(path, f"not a loadable checkpoint ({type(e).__name__}"
                              f"{': ' + detail if detail else ''})") from None
    run_key = obj.get("ferbench") if isinstance(obj, dict) else None
    for _ in range(3):  # nested wrappers such as {"model": {"state_dict": ...}}
        if isinstance(obj, dict):
            inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
            if inner is not None and not any(torch.is_tensor(v) for v in obj.values()):
                obj = inner
                continue
        break
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise DataError(path, "not a checkpoint: expected a state dict of tensors (optionally "
                              "under 'state_dict' or 'model')")
    return obj, run_key


def _is_torchscript(path: Path) -> bool:
    """A zip archive holding TorchScript code (`code/` and `constants.pkl`)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any(n.split("/", 1)[-1] == "constants.pkl" for n in names) and \
        any("/code/" in f"/{n}" for n in names)


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def load_into(model: torch.nn.Module, path: str | Path, ignore=()) -> dict:
    """Load weights into `model`; a classifier of another class count is re-initialised.

    `ignore` lists key prefixes of the checkpoint to leave out (a face-recognition
    checkpoint's own feature or margin layers). Returns what happened
    (`reinitialised` head keys, `ignored` keys, the source run key if any). Any
    other mismatch is a DataError listing the unmatched keys.
    """
    state, run_key = read_state_dict(path)
    own = model.state_dict()
    state = {(k if k in own else _strip(k)): v for k, v in state.items()}
    ignored = sorted(k for k in state if ignore and k.startswith(tuple(ignore)))
    state = {k: v for k, v in state.items() if k not in ignored}
    head = _classifier_prefix(model)
    reinit = [k for k, v in state.items()
              if head and k.startswith(head) and k in own and own[k].shape != v.shape]
    for k in reinit:
        state.pop(k)
    # A headless checkpoint (features only) leaves the head at its random initialisation.
    reinit += [k for k in own if head and k.startswith(head) and k not in state
               and k not in reinit]
    missing = [k for k in own if k not in state and not (head and k.startswith(head))
               and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected),
                            ("wrong shape", wrong)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:5])}"
                             + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""))
        raise DataError(path, "does not fit the architecture (" + "; ".join(parts) + ")")
    model.load_state_dict(state, strict=False)
    return {"reinitialised": reinit, "ignored": ignored, "source_run": run_key}


def _classifier_prefix(model) -> str | None:
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    name = cfg.get("classifier") if isinstance(cfg, dict) else None
    if isinstance(name, (list, tuple)):
        name = name[0]
    return f"{name}." if name else None


def load_partial(module: torch.nn.Module, path: str | Path, strip_prefixes=(),
                 matching_only: bool = False, only_prefixed: bool = False) -> dict:
    """Load a local checkpoint (`weights_only=True`) into any module, not only a timm model.

    `strip_prefixes` are removed from the checkpoint's keys first (e.g. "module.",
    "visual."); keys that do not start with one of them are kept as they are, or, with
    `only_prefixed`, left out (the image tower of a whole CLIP file, whose text tower has
    keys of the same names without the prefix). With `matching_only`, only tensors whose name and shape match are loaded and the rest of
    the module stays at its random initialisation; without it, any missing, unexpected
    or misshapen key is a DataError naming the file and the first such key. Returns
    what the result records: file, sha256, how many tensors were loaded, which were left
    random and which of the checkpoint's were not used.
    """
    state, _ = read_state_dict(path)
    prefixes = tuple(strip_prefixes)
    renamed = {}
    for k, v in state.items():
        p = next((p for p in prefixes if k.startswith(p)), None)
        if p is None and only_prefixed:
            continue
        renamed[k[len(p):] if p else k] = v
    own = module.state_dict()
    fits = {k: v for k, v in renamed.items() if k in own and own[k].shape == v.shape}
    random = [k for k in own if k not in fits and not k.endswith("num_batches_tracked")]
    unused = [k for k in renamed if k not in fits]
    if not matching_only and (random or unused):
        first = (random or unused)[0]
        why = ("wrong shape" if first in renamed and first in own else
               "missing" if first in own else "unexpected")
        raise DataError(path, f"does not fit {type(module).__name__} ({why}: {first}; "
                              f"{len(random)} of its tensors unmatched, {len(unused)} of the "
                              f"file's unused)")
    if not fits:
        raise DataError(path, f"no tensor fits {type(module).__name__} "
                              f"(first key: {next(iter(renamed), 'none')})")
    module.load_state_dict(fits, strict=False)
    return {"file": str(path), "sha256": file_digest(path), "loaded": len(fits),
            "left_random": random, "unused": unused[:20], "n_unused": len(unused),
            "init": "partial" if random else "checkpoint"}
