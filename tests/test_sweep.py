"""A whole grid as one sweep: a grid file, local workers through submitit, skip-done, a
failing cell, a killed sweep started again, and the SLURM settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ferbench.cli import cli
from ferbench.grid import load_grid
from ferbench.planning import RunRequest
from ferbench.slurm import slurm_parameters, still_queued
from ferbench.sweep import (SWEEP_DIR, Summary, _Display, _record, launch, plan_sweep,
                            remaining_estimate)

TINY_OPTIONS = {"n_train": "96", "n_val": "0", "n_test": "48"}
TINY = ["-o", "n_train=96", "-o", "n_test=48", "--epochs", "2", "--batch-size", "16",
        "--device", "cpu", "--precision", "fp32"]

GRID = """
datasets:
  synthfer: {options: {n_train: 96, n_test: 48}}
methods:
  baseline: {}
  man: {epochs: 2}
protocols: [clean, noise30]
seeds: [0, 1]
epochs: 2
batch_size: 16
device: cpu
precision: fp32
"""

# A third party's method that breaks on seed 1: the sweep must record it and go on.
FLAKY = """
from ferbench import hookimpl
from ferbench.methods.baseline import Baseline


class Flaky(Baseline):
    def training_step(self, model, batch, ctx):
        if ctx.run_key.seed == 1:
            raise RuntimeError("the flaky method broke on seed 1")
        return super().training_step(model, batch, ctx)


@hookimpl
def ferbench_register_methods(register):
    register("flaky", Flaky)
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def _ferbench(*args, env=None, **kw):
    """`ferbench ARGS` in a process of its own (a sweep's workers are processes too)."""
    return subprocess.run([sys.executable, "-m", "ferbench.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, **kw)


def _results(out: Path) -> dict:
    """Stored runs by key: (protocol folder, method, seed) -> (test acc, noise hash, history)."""
    found = {}
    for p in sorted(out.rglob("seed*.json")):
        r = json.loads(p.read_text())
        noise = (r["protocol"].get("noise") or {}).get("hash")
        losses = [round(h.get("train_loss", 0), 10) for h in r["history"]]
        found[r["key"]["protocol"], r["key"]["method"], r["key"]["seed"]] = (
            r["metrics"]["test_acc"], noise, losses)
    return found


def _plugin_env(tmp_path: Path) -> dict:
    """The environment of a machine where a third party's `flaky` method is installed."""
    site = tmp_path / "site"
    info = site / "flaky_method-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flaky-method\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ferbench]\nflaky = flaky_method\n")
    (site / "flaky_method.py").write_text(FLAKY)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    return env


# --- the grid file ---------------------------------------------------------------------


def test_a_grid_file_makes_the_same_cells_as_the_flags(tmp_path, cache):
    grid = load_grid(_write(tmp_path / "lb" / "grid.yaml", GRID))
    flags = RunRequest(methods=["baseline", "man"], protocols=["clean", "noise30"],
                       seeds=[0, 1], data_options=dict(n_train="96", n_test="48"),
                       flags={"epochs": 2, "batch_size": 16, "device": "cpu",
                              "precision": "fp32"})
    out = tmp_path / "results"
    from_grid = plan_sweep(grid.requests, out, force=False, jobs=2, launcher="local",
                           decode=False)
    from_flags = plan_sweep([flags], out, force=False, jobs=2, launcher="local", decode=False)
    assert len(from_grid) == 8
    assert {c.key for c in from_grid} == {c.key for c in from_flags}
    # Paths in a grid file are relative to its folder.
    assert grid.out == tmp_path / "lb" / "results"


def test_grid_variables_are_set_from_the_command_line(tmp_path):
    path = _write(tmp_path / "grid.yaml", """
        vars: {root: nowhere}
        datasets: {synthfer: {options: {n_train: 96}}, imagefolder: {root: "${vars.root}"}}
        methods: [baseline]
        """)
    (tmp_path / "faces").mkdir()
    grid = load_grid(path, {"root": str(tmp_path / "faces")})
    assert [r.data_root for r in grid.requests] == [None, str(tmp_path / "faces")]


@pytest.mark.parametrize("text, message", [
    ("methods: [baseline\n", ":2:1: expected ',' or ']'"),
    ("datasets: {synthfer: {}}\nmethods: [nosuchmethod]\n", "unknown method 'nosuchmethod'"),
    ("datasets: {synthfer: {}}\nmethods: {baseline: {preset: nosuch}}\n",
     "methods.baseline: unknown preset"),
    ("datasets: {nosuchdata: {}}\nmethods: [baseline]\n", "unknown dataset 'nosuchdata'"),
    ("datasets: {synthfer: {}}\nmethods: [baseline]\nprotocols: [noisy]\n", "noisy"),
    ("datasets: {synthfer: {}}\nmethods: {baseline: {overrides: {no_such_key: 1}}}\n",
     "no_such_key"),
    ("datasets: {ferplus: {root: not/here}}\nmethods: [baseline]\n",
     "datasets.ferplus.root"),
    ("datasets: {synthfer: {}}\nmethods: [baseline]\nepoch: 3\n", "did you mean 'epochs'"),
    ("datasets: {synthfer: {}}\nmethods: [baseline]\nseeds: [0, 0]\n", "seeds"),
])
def test_a_bad_grid_file_is_one_line_naming_file_and_entry_before_any_cell(
        tmp_path, cache, text, message):
    grid = _write(tmp_path / "grid.yaml", text)
    res = CliRunner().invoke(cli, ["run", "--grid", str(grid), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ferbench: error: {grid}"), res.output
    assert message in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_grid_file_with_flags_that_belong_in_it_is_refused(tmp_path):
    grid = _write(tmp_path / "grid.yaml", GRID)
    res = CliRunner().invoke(cli, ["run", "--grid", str(grid), "--method", "baseline"])
    assert res.exit_code == 2
    assert "the grid file says what to run; --method " in res.output  # the flag as typed


# --- running a sweep -------------------------------------------------------------------


def test_dry_run_lists_the_cells_and_estimates_from_stored_runs(tmp_path, cache):
    out = tmp_path / "res"
    args = ["run", "--method", "baseline", "--seeds", "0,1", *TINY, "--out", str(out)]
    res = CliRunner().invoke(cli, [*args, "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "2 cells: 0 stored, 2 to run" in res.output and "unknown" in res.output
    assert not out.exists()  # a dry run writes nothing
    assert CliRunner().invoke(cli, [*args[:4], "0", *args[5:]]).exit_code == 0  # seed 0 alone
    res = CliRunner().invoke(cli, [*args, "--dry-run"])
    assert "2 cells: 1 stored, 1 to run" in res.output
    assert "time still needed: about" in res.output


def test_a_dry_run_scales_a_stored_runs_time_to_a_cells_epochs_and_training_images(
        tmp_path, cache):
    out = tmp_path / "res"
    stored = CliRunner().invoke(cli, ["run", "--method", "baseline", *TINY, "-o", "n_val=0",
                                      "--out", str(out), "--no-leaderboard"])
    assert stored.exit_code == 0, stored.output
    wall = json.loads(next(out.rglob("seed0.json")).read_text())["wall_time_s"]
    # Twice the epochs on twice the faces: four times the stored run's time.
    bigger = RunRequest(methods=["baseline"], seeds=[0], flags={"epochs": 4, "batch_size": 16,
                                                                "device": "cpu",
                                                                "precision": "fp32"},
                        data_options={**TINY_OPTIONS, "n_train": "192"})
    (cell,) = plan_sweep([bigger], out, force=False, jobs=1, launcher="local", decode=False)
    assert not cell.stored and cell.estimate_s == pytest.approx(4 * wall)


def test_two_local_workers_match_sequential_runs_and_skip_what_is_stored(tmp_path, cache):
    common = ["--method", "baseline", "--protocol", "clean", "--protocol", "noise30",
              "--seeds", "0,1", *TINY, "engine.threads=1"]
    seq = _ferbench("run", *common, "--out", tmp_path / "seq")
    assert seq.returncode == 0, seq.stderr
    par = _ferbench("run", *common, "--jobs", "2", "--out", tmp_path / "par")
    assert par.returncode == 0, par.stderr
    assert "sweep: 4 done, 0 skipped, 0 failed" in par.stderr
    assert (tmp_path / "par" / "leaderboard.md").exists()
    assert _results(tmp_path / "par") == _results(tmp_path / "seq")
    assert len(_results(tmp_path / "par")) == 4
    again = _ferbench("run", *common, "--jobs", "2", "--out", tmp_path / "par")
    assert again.returncode == 0, again.stderr
    assert "4 cells, 4 stored, 0 to run" in again.stderr
    assert "sweep: 0 done, 4 skipped, 0 failed" in again.stderr
    # Each result says how to run it alone.
    record = json.loads(next((tmp_path / "par").rglob("seed1.json")).read_text())
    assert record["command"].startswith("ferbench run --method baseline --dataset synthfer")
    assert "--seeds 1" in record["command"] and record["device"]["threads"] == 1


def test_a_failing_cell_leaves_a_record_and_the_others_complete(tmp_path, cache):
    env = _plugin_env(tmp_path)
    grid = _write(tmp_path / "grid.yaml", """
        datasets: {synthfer: {options: {n_train: 96, n_test: 48}}}
        methods: [baseline, flaky]
        protocols: [clean]
        seeds: [0, 1]
        epochs: 1
        batch_size: 16
        device: cpu
        precision: fp32
        """)
    res = _ferbench("run", "--grid", grid, "--jobs", "2", env=env)
    assert res.returncode == 1, res.stderr
    assert "sweep: 3 done, 0 skipped, 1 failed" in res.stderr
    assert "failed flaky · clean · seed 1 · synthfer: internal error: RuntimeError: the " \
           "flaky method broke on seed 1" in res.stderr
    out = tmp_path / "results"
    assert len(_results(out)) == 3
    (failure,) = (out / "sweep" / "failed").glob("*.json")
    record = json.loads(failure.read_text())
    assert "the flaky method broke on seed 1" in record["error"]
    assert "Traceback" in Path(record["log"]).read_text()
    assert (tmp_path / "leaderboard.md").exists()  # the grid's folder: `leaderboard` default
    again = _ferbench("run", "--grid", grid, "--jobs", "2", env=env)
    assert "4 cells, 3 stored, 1 to run" in again.stderr  # only the failed cell is tried again


def test_a_killed_sweep_started_again_runs_only_what_is_missing(tmp_path, cache):
    args = ["run", "--method", "baseline", "--seeds", "0,1,2", "-o", "n_train=192",
            "-o", "n_test=48", "--epochs", "4", "--batch-size", "16", "--device", "cpu",
            "--precision", "fp32", "--jobs", "1", "--no-leaderboard"]
    whole = _ferbench(*args, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed"
    sweep = subprocess.Popen([sys.executable, "-m", "ferbench.cli", *args, "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(out.rglob("seed*.json")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)  # into the next cell's training
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    stored = len(list(out.rglob("seed*.json")))
    assert 1 <= stored < 3
    while list(out.rglob("*.lock")) and time.time() < deadline:  # workers stop with it
        time.sleep(0.2)
    assert not list(out.rglob("*.lock"))
    again = _ferbench(*args, "--out", out)
    assert again.returncode == 0, again.stderr
    assert f"3 cells, {stored} stored, {3 - stored} to run" in again.stderr
    assert _results(out) == _results(tmp_path / "whole")


# --- SLURM -----------------------------------------------------------------------------


def test_slurm_without_sbatch_is_one_line_and_the_local_launcher_still_works(
        tmp_path, cache, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    res = CliRunner().invoke(cli, ["run", "--method", "baseline", *TINY, "--launcher", "slurm",
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        "ferbench: error: --launcher slurm: there is no sbatch on this machine (run the sweep "
        "on the cluster's login node; --launcher local runs the same cells here)"]
    assert not (tmp_path / "out").exists()


def test_slurm_settings_reach_the_sbatch_script(tmp_path, monkeypatch):
    import submitit

    # A login node has srun; this machine need not.
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    params = slurm_parameters({"partition": "gpu", "gpus_per_task": 1, "cpus_per_task": 8,
                               "mem_gb": 32, "time_min": 240, "array_parallelism": 16,
                               "sbatch": {"account": "fer-lab"},
                               "setup": "source .venv/bin/activate"})
    ex = submitit.SlurmExecutor(folder=tmp_path)
    ex.update_parameters(**params)
    script = ex._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-task=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB", "#SBATCH --time=240",
                 "#SBATCH --account=fer-lab", "source .venv/bin/activate"):
        assert line in script
    with pytest.raises(Exception, match="did you mean 'partition'"):
        slurm_parameters({"partiton": "gpu"})


def test_a_cell_whose_slurm_job_is_still_queued_is_not_submitted_again(tmp_path, cache):
    out = tmp_path / "results"
    req = RunRequest(methods=["baseline"], seeds=[0, 1, 2], data_options=TINY_OPTIONS)
    cells = plan_sweep([req], out, force=False, jobs=1, launcher="slurm", decode=False)
    (out / "sweep").mkdir(parents=True)
    (out / "sweep" / "slurm-jobs.json").write_text(json.dumps(
        {Path(c.spec.log).stem: f"77_{i}" for i, c in enumerate(cells)}))
    states = {"77_0": "RUNNING", "77_1": "PENDING", "77_2": "CANCELLED by 1000"}
    queued = still_queued(cells, out / SWEEP_DIR, job_state=states.get)
    assert queued == {cells[0].spec.label: "77_0", cells[1].spec.label: "77_1"}


def test_a_grid_run_into_another_results_folder_leaves_the_grids_leaderboard_alone(
        tmp_path, cache):
    grid = _write(tmp_path / "lb" / "grid.yaml", """
        datasets: {synthfer: {options: {n_train: 60, n_test: 20}}}
        methods: [baseline]
        epochs: 1
        device: cpu
        precision: fp32
        """)
    committed = _write(tmp_path / "lb" / "leaderboard.md", "the committed board\n")
    res = _ferbench("run", "--grid", grid, "--out", tmp_path / "try")
    assert res.returncode == 0, res.stderr
    assert committed.read_text() == "the committed board\n"
    assert (tmp_path / "try" / "leaderboard.md").exists()
    assert f"leaderboard: {tmp_path / 'try' / 'leaderboard.md'}" in res.stderr


def test_more_jobs_than_cells_to_run_share_the_cores_among_the_cells(tmp_path, cache,
                                                                     monkeypatch):
    import ferbench.sweep

    monkeypatch.setattr(ferbench.sweep, "cores", lambda: 6)
    req = RunRequest(methods=["baseline"], seeds=[0, 1], data_options=TINY_OPTIONS)
    cells = plan_sweep([req], tmp_path / "out", force=False, jobs=3, launcher="local",
                       decode=False)
    assert [c.spec.request.flags["threads"] for c in cells] == [3, 3]
    assert "engine.threads=3" in cells[0].spec.request.command
    for c in cells:
        c.estimate_s = 60.0
    assert remaining_estimate(cells, 3) == "about 2m00s of runs, 1m00s with 2 at once"
    cells[1].stored = True
    assert remaining_estimate(cells, 3) == "about 1m00s of runs"


def _fake_sbatch(tmp_path: Path, monkeypatch) -> Path:
    """A login node's sbatch that keeps the script it was given and answers a job id."""
    import submitit

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f"#!/bin/sh\ncp \"$1\" {tmp_path / 'submitted.sh'}\n"
                      "echo 'Submitted batch job 77'\n")
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    return tmp_path / "submitted.sh"


@pytest.mark.parametrize("slurm, array", [({}, "#SBATCH --array=0-4%5"),
                                          ({"array_parallelism": 2}, "#SBATCH --array=0-4%2")])
def test_a_job_array_runs_every_cell_at_once_unless_array_parallelism_says(
        tmp_path, cache, monkeypatch, slurm, array):
    import submitit

    submitted = _fake_sbatch(tmp_path, monkeypatch)
    # The cluster runs each task at once and it succeeds.
    monkeypatch.setattr(submitit.SlurmJob, "done", lambda self, force_check=False: True)
    monkeypatch.setattr(submitit.SlurmJob, "result",
                        lambda self: {"status": "done", "wall_s": 1.0})
    req = RunRequest(methods=["baseline"], seeds=[0, 1, 2, 3, 4], data_options=TINY_OPTIONS)
    out = tmp_path / "out"
    cells = plan_sweep([req], out, force=False, jobs=1, launcher="slurm", decode=False)
    summary = launch(cells, launcher="slurm", jobs=1, out=out, slurm=slurm)
    assert len(summary.done) == 5
    # --jobs (1 unless given) is about this machine's cores, never the cluster's.
    assert array in submitted.read_text().splitlines()


class _Gone:
    """A job that ended without a result, as submitit sees it."""

    def __init__(self, state, returncode=0):
        from submitit.core.utils import UncompletedJobError

        self.state, self.error = state, UncompletedJobError(
            f"Job 77 (task: 0) with path x\nhas not produced any output (state: {state})")
        self._process = type("P", (), {"poll": lambda _: returncode})()

    def result(self):
        raise self.error


@pytest.mark.parametrize("handle, line", [
    (_Gone("FINISHED"), "worker killed before it finished, leaving no result and no error "
                        "(a signal such as 9: out of memory?)"),
    (_Gone("INTERRUPTED", -9), "worker killed by signal 9 (SIGKILL; out of memory?)"),
    (_Gone("OUT_OF_MEMORY", None), "worker killed for using more memory than it was given "
                                   "(SLURM OUT_OF_MEMORY; raise slurm.mem_gb)"),
])
def test_a_killed_worker_is_reported_by_what_killed_it(tmp_path, cache, handle, line):
    req = RunRequest(methods=["baseline"], data_options=TINY_OPTIONS)
    (cell,) = plan_sweep([req], tmp_path / "out", force=False, jobs=1, launcher="local",
                         decode=False)
    summary = Summary()
    assert _record(summary, cell, handle) == f"FAILED: {line} (log: {cell.spec.log})"
    assert json.loads(Path(cell.spec.failure).read_text())["error"] == line


def test_a_cell_skipped_while_running_advances_the_count(tmp_path, cache, capsys):
    req = RunRequest(methods=["baseline"], seeds=[0, 1], data_options=TINY_OPTIONS)
    cells = plan_sweep([req], tmp_path / "out", force=False, jobs=1, launcher="local",
                       decode=False)
    display, summary = _Display(2, 1, False), Summary()
    for c in cells:
        display.event(c, summary, "skipped: running in another ferbench process")
    lines = capsys.readouterr()
    assert "[1/2]" in lines.err + lines.out and "[2/2]" in lines.err + lines.out
