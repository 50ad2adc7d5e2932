"""The reproducibility record: which code ran, where, when, and how to run it again."""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path

import pytest
import torch

import ferbench
from ferbench import provenance
from ferbench.plugins import registry
from ferbench.record import RunRecord
from ferbench.runner import RunRequest, run

PACKAGE = Path(ferbench.__file__).parent
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    """The record of one tiny synthfer run."""
    base = tmp_path_factory.mktemp("provenance")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FERBENCH_CACHE", str(base / "cache"))
        [path] = run(RunRequest(methods=["baseline"], protocols=["clean"],
                                data_options={"n_train": 64, "n_test": 32},
                                flags={"epochs": 1, "batch_size": 16, "device": "cpu",
                                       "precision": "fp32"},
                                out=str(base / "out"), leaderboard=False, show_progress=False))
    return json.loads(path.read_text())


def _checkout_commit() -> str | None:
    """HEAD of the checkout the tests run from, or None outside one."""
    try:
        done = subprocess.run(["git", "-C", str(PACKAGE), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def test_a_result_says_when_the_run_started_and_ended_in_utc(record):
    start = datetime.fromisoformat(record["started_at"])
    end = datetime.fromisoformat(record["finished_at"])
    assert start.utcoffset() == end.utcoffset() == timedelta(0)
    assert start <= end
    assert end - start <= timedelta(seconds=record["wall_time_s"] + 2)


def test_a_result_names_the_cpu_by_its_model_and_counts_its_cores(record):
    device = record["device"]
    assert device["cpu"] == provenance.cpu_model() and device["name"] == device["cpu"]
    assert device["cores"] == os.cpu_count() and device["threads"] >= 1
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "model name" in cpuinfo.read_text():
        assert device["cpu"] != platform.machine()


def test_a_result_holds_the_commit_of_the_code_that_ran(record):
    commit = _checkout_commit()
    if commit is None:
        pytest.skip("ferbench is not imported from a git checkout here")
    code = record["code"]["ferbench"]
    assert re.fullmatch(r"[0-9a-f]{40}", code["commit"]) and code["commit"] == commit
    assert isinstance(code["dirty"], bool)


def test_a_result_holds_every_installed_plugins_version(record):
    plugins = {name for name, info in registry().plugins.items() if not info.builtin}
    assert set(record["versions"]["plugins"]) == plugins
    for name, version in record["versions"]["plugins"].items():
        assert version == metadata.version(name)
    assert set(record["code"]) == {"ferbench"} | plugins


def test_a_result_holds_a_command_a_shell_splits_back_into_its_words(record):
    assert shlex.split(record["command"]) == sys.argv  # a run called from Python: its argv


def test_a_cpu_run_records_no_cuda_versions(record):
    assert "cuda" not in record["versions"] and "driver" not in record["device"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_run_records_cuda_cudnn_and_the_gpu():
    device = torch.device("cuda")
    assert provenance.cuda_versions(device) == {"cuda": torch.version.cuda,
                                                "cudnn": torch.backends.cudnn.version()}
    gpu = provenance.gpu_facts(device)
    assert gpu["memory_gib"] > 0 and re.fullmatch(r"\d+\.\d+", gpu["capability"])


def test_the_cpu_model_is_read_from_cpuinfo_and_falls_back_to_the_platform(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU\n")
    assert provenance.cpu_model(cpuinfo) == "Intel(R) Xeon(R) Gold 6338 CPU"
    if platform.system() == "Linux":
        assert provenance.cpu_model(tmp_path / "absent") == (platform.processor()
                                                             or platform.machine())


def test_without_git_the_commit_is_null(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on it
    assert provenance.git_state(PACKAGE) is None
    assert provenance.ferbench_code() is None


@needs_git
def test_the_commit_is_that_of_the_checkout_tracking_the_code(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "m.py").write_text("x = 1\n")
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "installed.py").write_text("x = 1\n")
    (tmp_path / ".gitignore").write_text("venv/\n")
    git("add", "code", ".gitignore")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    state = provenance.git_state(tmp_path / "code")
    assert re.fullmatch(r"[0-9a-f]{40}", state["commit"]) and state["dirty"] is False
    assert provenance.git_state(tmp_path / "venv") is None  # an install the checkout ignores
    (tmp_path / "code" / "m.py").write_text("x = 2\n")
    assert provenance.git_state(tmp_path / "code")["dirty"] is True
    assert provenance.git_state(tmp_path.parent / "nowhere") is None


def test_a_plugin_installed_from_a_git_url_records_that_commit(monkeypatch):
    class Installed:
        def read_text(self, name):
            return json.dumps({"url": "https://example.org/ferbench-x.git",
                               "vcs_info": {"vcs": "git", "commit_id": "a" * 40}})

    monkeypatch.setattr(provenance.metadata, "distribution", lambda name: Installed())
    assert provenance.distribution_code("ferbench-x") == {"commit": "a" * 40, "dirty": False}


def test_an_old_result_without_these_fields_still_reads(record):
    new = ("history_file", "loggers", "code", "started_at", "finished_at")
    old = {k: v for k, v in record.items() if k not in new}
    old["versions"] = {k: v for k, v in old["versions"].items() if k != "plugins"}
    read = RunRecord.from_json(old, "old.json")
    assert (read.history_file, read.loggers, read.code, read.started_at, read.finished_at) == \
        (None, {}, {}, None, None)
    assert read.metrics == record["metrics"]
    assert set(RunRecord.from_json(record).to_json()) >= set(new)
