"""Live tracking: each epoch's history row, as the epoch ends, to every logger of the run.

A logger has three calls, which the engine makes in this order:

- `start(run)` once, before the first epoch it trains: `run` holds the run's `name`,
  `key`, `config`, `epochs` and `history`, the rows of epochs a resumed run finished
  before (empty for a fresh run); a logger that keeps its own copy writes them again, so
  a resumed run's log holds each epoch once;
- `log_epoch(row, step)` after each epoch, with the row the history gains (`step` is the
  row's `epoch`);
- `finish(summary)` when the run ends however it ends: `summary["status"]` is
  `finished`, `failed` or `killed`.

The history file is essential: a failure to write it stops the run. An optional logger
that fails while the run trains (a tracking server gone) is reported on the console and
dropped, and the run goes on; its library missing is a ConfigError before training.
"""

from __future__ import annotations

import importlib.util
import json
import math
import numbers
import os
from pathlib import Path
from typing import Protocol

from .errors import ConfigError
from .progress import console

# The optional loggers `engine.loggers` may name, each with the package it needs (the extra
# of the same name installs it).
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
LOGGER_NAMES = tuple(PACKAGES)


class Logger(Protocol):
    """What the engine calls on each logger (see the module docstring)."""

    def start(self, run: dict) -> None: ...

    def log_epoch(self, row: dict, step: int) -> None: ...

    def finish(self, summary: dict) -> None: ...


def history_path(stem: Path) -> Path:
    """The JSON-lines history of the run whose files start with `stem` (`.../seed0`)."""
    return stem.parent / f"{stem.name}.history.jsonl"


class JsonLinesHistory:
    """Each epoch's row as one JSON line, flushed at once: readable while the run trains and
    after it is killed. A fresh run starts the file afresh; a resumed one rewrites it from the
    checkpoint's history, so no epoch appears twice. The file appears with its first row: a
    run that fails in its first epoch leaves none (nor an empty folder)."""

    essential = True

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = None

    def start(self, run: dict) -> None:
        self.path.unlink(missing_ok=True)
        for row in run.get("history", ()):
            self._write(row)

    def log_epoch(self, row: dict, step: int) -> None:
        self._write(row)

    def finish(self, summary: dict) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, row: dict) -> None:
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(row, default=_plain) + "\n")
        self._file.flush()


class TensorBoardLogger:
    """Each epoch's numbers as TensorBoard scalars, one tag per row key, in
    `<out>/tensorboard/<run_path>` (`tensorboard --logdir <out>/tensorboard` shows every run)."""

    def __init__(self, out: Path, run_path: str):
        self.log_dir = Path(out) / "tensorboard" / run_path
        self.where = {"log_dir": f"tensorboard/{run_path}"}  # under the results folder
        self._writer = None

    def start(self, run: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step=0 hides whatever an earlier run of this key left in the folder; the
        # rows of a resumed run's finished epochs are written again below.
        self._writer = SummaryWriter(str(self.log_dir), purge_step=0)
        self._writer.add_text("config", "```\n" + json.dumps(run.get("config", {}), indent=1,
                                                             default=_plain) + "\n```")
        for row in run.get("history", ()):
            self.log_epoch(row, row["epoch"])

    def log_epoch(self, row: dict, step: int) -> None:
        for name, value in _numbers(row).items():
            self._writer.add_scalar(name, value, step)
        self._writer.flush()

    def finish(self, summary: dict) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class MlflowLogger:
    """Each epoch's numbers as MLflow metrics of one MLflow run, in the experiment named by
    MLFLOW_EXPERIMENT_NAME (default `ferbench`), at MLFLOW_TRACKING_URI or else in
    `<out>/mlflow.db` with artifacts in `<out>/mlruns` (`mlflow ui --backend-store-uri
    sqlite:///<out>/mlflow.db`). A database, not MLflow's `./mlruns` folder store, which
    recent MLflow refuses unless told otherwise."""

    def __init__(self, out: Path):
        out = Path(out).resolve()
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{out / 'mlflow.db'}"
        self.artifacts = (out / "mlruns").as_uri()
        self.experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "ferbench"
        self.where = {"tracking_uri": self.uri, "experiment": self.experiment, "run_id": None}
        self._client = self._run_id = None

    def start(self, run: dict) -> None:
        from mlflow.entities import Param, RunTag
        from mlflow.tracking import MlflowClient

        self._client = client = MlflowClient(self.uri)
        found = client.get_experiment_by_name(self.experiment)
        experiment = found.experiment_id if found else client.create_experiment(
            self.experiment, artifact_location=self.artifacts)
        tags = {f"ferbench.{k}": str(v) for k, v in (run.get("key") or {}).items()}
        self._run_id = client.create_run(experiment, run_name=run.get("name"),
                                         tags=tags).info.run_id
        self.where["run_id"] = self._run_id
        # Older MLflow servers refuse parameter values over 500 characters: a long value is
        # cut here; the result file holds the config whole.
        params = [Param(k, str(v)[:500]) for k, v in _flatten(run.get("config", {})).items()]
        client.log_batch(self._run_id, params=params,
                         tags=[RunTag("ferbench.epochs", str(run.get("epochs")))])
        for row in run.get("history", ()):
            self.log_epoch(row, row["epoch"])

    def log_epoch(self, row: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = _millis()
        self._client.log_batch(self._run_id, metrics=[
            Metric(k, v, now, step) for k, v in _numbers(row).items()])

    def finish(self, summary: dict) -> None:
        if self._client is None:
            return
        from mlflow.entities import Metric

        final = {f"final_{k}": v for k, v in _numbers(summary).items()}
        if final:
            self._client.log_batch(self._run_id, metrics=[
                Metric(k, v, _millis(), 0) for k, v in final.items()])
        status = {"finished": "FINISHED", "killed": "KILLED"}.get(summary.get("status"),
                                                                  "FAILED")
        self._client.set_terminated(self._run_id, status=status)
        self._client = None


def check_loggers(names) -> None:
    """Refuse, in one line and before anything trains, a logger whose package is missing."""
    for name in names:
        package = PACKAGES[name]
        if not installed(package):
            raise ConfigError(f"engine.loggers={name} needs the {package} package: "
                              f"pip install 'ferbench[{name}]'")


def installed(package: str) -> bool:
    """Whether `package` can be imported (found without importing it)."""
    return importlib.util.find_spec(package) is not None


def open_loggers(names, *, out: Path, run_path: str) -> dict[str, Logger]:
    """The optional loggers `engine.loggers` names, by name, writing for the run whose files
    lie at `run_path` under the results folder `out` (TensorBoard in
    `<out>/tensorboard/<run_path>`, MLflow at MLFLOW_TRACKING_URI or in `<out>/mlflow.db`)."""
    check_loggers(names)
    made = {}
    for name in names:
        if name == "tensorboard":
            made[name] = TensorBoardLogger(out, run_path)
        elif name == "mlflow":
            made[name] = MlflowLogger(out)
    return made


class Loggers:
    """The loggers of one run, called together: `start` once, whatever calls it first."""

    def __init__(self, loggers=(), run: dict | None = None):
        self.loggers = list(loggers)
        self.run = dict(run or {})
        self.started = False

    def start(self, **run) -> None:
        if self.started:
            return
        self.started = True
        self._each("start", {**self.run, **run})

    def log_epoch(self, row: dict) -> None:
        self._each("log_epoch", row, row["epoch"])

    def finish(self, summary: dict) -> None:
        if self.started:
            self._each("finish", summary)

    def _each(self, call: str, *args) -> None:
        for logger in list(self.loggers):
            try:
                getattr(logger, call)(*args)
            except Exception as e:
                if getattr(logger, "essential", False):
                    raise
                # A tracking server gone mid-run costs its log, not the run: the history
                # file and the result hold every figure.
                self.loggers.remove(logger)
                why = (str(e).strip().splitlines() or [type(e).__name__])[0]
                console.print(f"  warning: logger {type(logger).__name__} failed in {call} "
                              f"({why[:200]}); the run goes on without it", highlight=False)


def _numbers(row: dict) -> dict[str, float]:
    """The finite numbers of a row (TensorBoard and MLflow take scalars only)."""
    return {k: float(v) for k, v in row.items()
            if k != "epoch" and isinstance(v, numbers.Real) and not isinstance(v, bool)
            and math.isfinite(v)}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _plain(v):
    """numpy scalars and arrays as JSON; anything else as its text."""
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)


def _millis() -> int:
    import time

    return int(time.time() * 1000)
