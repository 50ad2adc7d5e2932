"""A run's files: its noise file before training, then its arrays, weights and record."""

from __future__ import annotations

import io
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .record import RunRecord
from .results import write_bytes, write_json, write_npz
from .runkey import RunKey


def write_noise(out: Path, dataset: str, view) -> dict | None:
    """The view's noisy labels as a noise file (once per hash); the record's `noise` section."""
    if view.noise is None:
        return None
    path = out / dataset / "noise" / f"{view.id.replace(':', '_')}-{view.noise.hash}.json"
    if not path.exists():
        write_json(path, view.noise.document)
    return {"hash": view.noise.hash, "file": str(path.relative_to(out)),
            "rate": view.noise.rate, "n_flipped": int(view.noise.flipped.sum()),
            "n_train": int(len(view.noise.flipped)), "source": view.noise.source}


def write_arrays(path: Path, view, res) -> None:
    """The per-sample arrays (.npz) of a finished run."""
    arrays = {"test_ids": view.test.ids, "test_probs": res.test_probs,
              "test_uncertainty": res.test_uncertainty, "test_labels": view.test_labels,
              "train_ids": view.train.ids}
    for k, v in res.noise_scores.items():
        arrays[f"train_noise_scores_{k}"] = v
    if res.noise_decisions is not None:
        arrays["train_noise_decisions"] = res.noise_decisions
    if res.test_members is not None:
        arrays["test_members"] = res.test_members
    for k, stack in res.per_sample.items():
        arrays[f"method_{k}"] = np.stack(stack)
    write_npz(path, arrays)


def write_weights(path: Path, state: dict, key: RunKey) -> None:
    """The trained model's tensors with the run key that made them (`--weights` takes it)."""
    buf = io.BytesIO()
    torch.save({"ferbench": {**key.as_dict(), "version": __version__}, "state_dict": state}, buf)
    write_bytes(path, buf.getvalue())


def make_record(*, key: RunKey, view, provided, preset: str, preset_source: str,
                resolved: dict, ds, res, scores: dict, noise_file: dict | None,
                device: dict, precision: str, weights_info: list, wall: float,
                command: str | None = None) -> RunRecord:
    """The result record of a finished run."""
    import timm

    return RunRecord(
        key=key,
        protocol={"id": key.protocol, "family": view.family, "params": dict(view.params),
                  "label": key.protocol, "noise": noise_file, "record": view.record},
        method={"name": key.method, "plugin": provided.plugin, "version": provided.version,
                "display_name": getattr(provided.obj, "display_name", None) or key.method,
                "preset": preset, "preset_source": preset_source,
                "weights_expected": preset in (getattr(provided.obj, "pretrained_presets", ())
                                               or ())},
        config=resolved,
        dataset={"name": ds.name, "layout": ds.layout, "classes": list(view.classes),
                 "fingerprints": {"train": view.train.fingerprint, "test": view.test.fingerprint,
                                  **({"val": view.val.fingerprint} if view.val is not None
                                     else {})},
                 "n_train": len(view.train), "n_test": len(view.test), "notes": ds.notes},
        versions={"ferbench": __version__, "torch": torch.__version__, "timm": timm.__version__,
                  "python": platform.python_version(), "plugin": provided.version,
                  "numpy": np.__version__},
        device=device, precision=precision, weights=weights_info,
        resumed_from_epoch=res.resumed_from, wall_time_s=wall, history=res.history,
        metrics=scores["metrics"], oracle=res.oracle,
        selected=({k: v for k, v in res.selected.items() if k != "test_probs"}
                  if res.selected else None),
        per_class=scores["per_class"], confusion=scores["confusion"],
        classes_scored=scores["classes_scored"], reliability=scores["reliability"],
        rejection_curve=scores["rejection_curve"], ambiguity=scores["curves"].get("ambiguity"),
        noise_detection=scores.get("noise_detection"), noise_summary=scores.get("noise_summary"),
        method_results=res.method_results, command=command or " ".join(sys.argv),
        noise_summary_epochs=scores.get("noise_summary_epochs") or {},
        distributions=scores.get("distributions") or {}, members=scores.get("members"),
        prediction_extras=scores.get("prediction_extras") or [],
        training_subset=res.training_subset)


def write_record(path: Path, record: RunRecord) -> None:
    """The result JSON, written last: the run is complete when it exists."""
    write_json(path, record.to_json())
