"""Watching a run: the history file beside the result, and the loggers `engine.loggers` names."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from ferbench import tracking
from ferbench.cli import cli
from ferbench.engine import Engine
from ferbench.runner import RunRequest, run
from ferbench.testing import _tiny_run

TINY = ["-o", "n_train=64", "-o", "n_test=32", "--batch-size", "16", "--device", "cpu",
        "--precision", "fp32", "--no-leaderboard"]


class Recorder:
    """A logger that writes down every call it gets."""

    def __init__(self, out=None, fail_in=None):
        self.calls, self.fail_in, self.where = [], fail_in, {"kind": "recorder"}

    def start(self, run):
        self.calls.append(("start", run))

    def log_epoch(self, row, step):
        if self.fail_in == "log_epoch":
            raise ConnectionError("tracking server went away\nsecond line")
        self.calls.append(("log_epoch", row, step))

    def finish(self, summary):
        self.calls.append(("finish", summary))


def _request(out, epochs=2, **kw):
    return RunRequest(methods=["baseline"], protocols=["clean"],
                      data_options={"n_train": 64, "n_test": 32},
                      flags={"epochs": epochs, "batch_size": 16, "device": "cpu",
                             "precision": "fp32"},
                      out=str(out), leaderboard=False, show_progress=False, **kw)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_logger_hears_the_start_every_epoch_and_the_end():
    method, ctx, test = _tiny_run("baseline", epochs=2)
    logger = Recorder()
    res = Engine(method, ctx, test=test, seed=0, show_progress=False, loggers=[logger],
                 run={"name": "baseline on tiny synthfer"}).fit()
    assert [c[0] for c in logger.calls] == ["start", "log_epoch", "log_epoch", "finish"]
    start = logger.calls[0][1]
    assert (start["name"], start["epochs"], start["history"]) == \
        ("baseline on tiny synthfer", 2, [])
    assert [c[1] for c in logger.calls[1:3]] == res.history
    assert [c[2] for c in logger.calls[1:3]] == [0, 1]
    finish = logger.calls[-1][1]
    assert finish["status"] == "finished" and finish["test_acc"] == res.history[-1]["test_acc"]


def test_a_logger_hears_that_a_run_failed():
    method, ctx, test = _tiny_run("baseline", epochs=2)

    def broken(model, batch, ctx):
        raise RuntimeError("the method broke")

    method.training_step = broken
    logger = Recorder()
    with pytest.raises(RuntimeError):
        Engine(method, ctx, test=test, seed=0, show_progress=False, loggers=[logger]).fit()
    assert logger.calls[-1] == ("finish", {"status": "failed", "error": "the method broke"})


def test_a_logger_that_fails_mid_run_is_dropped_with_a_warning_and_the_run_completes(
        tmp_path, monkeypatch):
    from ferbench.progress import console

    monkeypatch.setattr(tracking, "installed", lambda package: True)
    monkeypatch.setattr(tracking, "MlflowLogger", lambda out: Recorder(fail_in="log_epoch"))
    with console.capture() as printed:
        [path] = run(_request(tmp_path, overrides=["engine.loggers=[mlflow]"]))
    assert "warning: logger Recorder failed in log_epoch (tracking server went away); the " \
           "run goes on without it" in printed.get()
    assert json.loads(path.read_text())["metrics"]["test_acc"] is not None


def test_a_run_writes_its_history_file_beside_its_result(tmp_path):
    [path] = run(_request(tmp_path))
    record = json.loads(path.read_text())
    history = path.parent / record["history_file"]
    assert history == path.with_name("seed0.history.jsonl")
    assert _lines(history) == record["history"]


def test_the_history_file_is_readable_after_the_run_is_killed(tmp_path):
    pandas = pytest.importorskip("pandas", reason="pandas reads JSON lines here")
    out = tmp_path / "out"
    env = {**os.environ, "FERBENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "ferbench.cli", "run", "--method", "baseline",
                             "--protocol", "clean", "--epochs", "500", "--preset", "quick",
                             *TINY, "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            found = list(out.rglob("seed0.history.jsonl")) if out.exists() else []
            if found and found[0].read_text().count("\n") >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)  # no handler runs: what is on disk is what was flushed
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    [history] = found
    rows = pandas.read_json(history, lines=True)
    assert len(rows) >= 1
    assert rows["epoch"].tolist() == list(range(len(rows)))  # every completed epoch, in order
    assert rows["loss"].notna().all() and rows["test_acc"].notna().all()
    assert not list(out.rglob("seed0.json")), "the killed run stored a result"


def test_a_resumed_run_writes_each_epoch_once_and_a_fresh_run_starts_afresh(tmp_path,
                                                                            monkeypatch):
    from ferbench.methods.baseline import Baseline

    def interrupt_at_epoch_two(self, model, ctx, epoch):
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Baseline, "on_epoch_start", interrupt_at_epoch_two, raising=False)
    with pytest.raises(KeyboardInterrupt):
        run(_request(tmp_path, epochs=3))
    [history] = tmp_path.rglob("seed0.history.jsonl")
    assert [r["epoch"] for r in _lines(history)] == [0, 1]
    monkeypatch.undo()

    [path] = run(_request(tmp_path, epochs=3, resume=True))
    record = json.loads(path.read_text())
    assert record["resumed_from_epoch"] == 2
    assert [r["epoch"] for r in _lines(history)] == [0, 1, 2]
    assert _lines(history) == record["history"]

    run(_request(tmp_path, epochs=3, force=True))
    assert [r["epoch"] for r in _lines(history)] == [0, 1, 2]


def test_a_logger_does_not_change_the_run_key_and_the_record_says_where_it_wrote(
        tmp_path, monkeypatch):
    [plain] = run(_request(tmp_path / "plain"))
    monkeypatch.setattr(tracking, "installed", lambda package: True)
    made = []
    monkeypatch.setattr(tracking, "MlflowLogger", lambda out: made.append(Recorder()) or made[-1])
    [watched] = run(_request(tmp_path / "watched", overrides=["engine.loggers=[mlflow]"]))
    assert watched.relative_to(tmp_path / "watched") == plain.relative_to(tmp_path / "plain")
    record = json.loads(watched.read_text())
    assert "loggers" not in record["config"]["engine"]
    assert record["loggers"] == {"mlflow": {"kind": "recorder"}}
    assert [c[0] for c in made[0].calls] == ["start", "log_epoch", "log_epoch", "finish"]


def test_tensorboard_writes_each_epoch_to_an_events_file(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed "
                                              "(pip install 'ferbench[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [path] = run(_request(tmp_path, overrides=["engine.loggers=[tensorboard]"]))
    log_dir = tmp_path / json.loads(path.read_text())["loggers"]["tensorboard"]["log_dir"]
    assert log_dir == tmp_path / "tensorboard" / path.relative_to(tmp_path).with_suffix("")
    assert list(log_dir.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(log_dir))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [0, 1]
    assert {"loss", "lr", "test_acc"} <= set(events.Tags()["scalars"])


@pytest.mark.parametrize("override,message", [
    ("engine.loggers=[wandb]", "engine.loggers='wandb': must be tensorboard or mlflow"),
    ("engine.loggers=[tensorboard,wandb]",
     "engine.loggers='wandb': must be tensorboard or mlflow"),
])
def test_an_unknown_logger_is_refused_in_one_line(tmp_path, override, message):
    res = CliRunner().invoke(cli, ["run", "--method", "baseline", "--epochs", "1", *TINY,
                                   override, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert res.stderr.splitlines() == [f"ferbench: error: {message}"]
    assert not (tmp_path / "out").exists()


def test_a_logger_whose_package_is_missing_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "installed", lambda package: False)
    res = CliRunner().invoke(cli, ["run", "--method", "baseline", "--epochs", "1", *TINY,
                                   "engine.loggers=[mlflow]", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert res.stderr.splitlines() == ["ferbench: error: engine.loggers=mlflow needs the mlflow "
                                       "package: pip install 'ferbench[mlflow]'"]
    assert "epoch 1/1" not in res.output and not (tmp_path / "out").exists()
