"""Run keys and file layout, stable config hashes, atomic writes, reading results back."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from ferbench import results
from ferbench.errors import DataError
from ferbench.results import (SCHEMA_VERSION, check_writable, read_result, read_results,
                              write_json, write_npz)
from ferbench.runkey import RunKey, config_hash


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_run_key_names_its_files(tmp_path):
    key = RunKey("rafdb", "noisefile:noise01", "baseline", 2, "0123456789")
    folder = tmp_path / "rafdb" / "noisefile_noise01" / "baseline" / "0123456789"
    assert key.folder(tmp_path) == folder
    assert key.result_path(tmp_path) == folder / "seed2.json"
    assert key.stem(tmp_path).with_suffix(".npz") == folder / "seed2.npz"
    assert RunKey("synthfer", "noise30+ns1+val0.2", "esr-div", 0, "abc").result_path("out") == \
        Path("out/synthfer/noise30+ns1+val0.2/esr-div/abc/seed0.json")
    # a protocol id never escapes its folder
    evil = RunKey("x", "../../etc", "m/../n", 0, "h").result_path(tmp_path)
    assert evil.is_relative_to(tmp_path) and ".." not in evil.relative_to(tmp_path).parts
    assert key.as_dict() == {"dataset": "rafdb", "protocol": "noisefile:noise01",
                             "method": "baseline", "seed": 2, "config_hash": "0123456789"}


def test_config_hash_does_not_depend_on_key_order():
    a = {"method": {"lr": 0.1, "epochs": 2, "views": ["weak"]}, "data": {"name": "synthfer"}}
    b = {"data": {"name": "synthfer"}, "method": {"views": ["weak"], "epochs": 2, "lr": 0.1}}
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 10 and config_hash(a) == config_hash(json.loads(json.dumps(a)))
    assert config_hash(a) != config_hash({**a, "method": {**a["method"], "lr": 0.2}})
    assert config_hash(a) != config_hash({**a, "method": {**a["method"], "views": ["strong"]}})


def test_a_key_a_config_gained_later_keeps_stored_runs_keys_at_its_default():
    """The baseline's `soft_target` came after runs were stored: at its default (None) the
    hash is the one those runs have; set, it is another run."""
    from types import SimpleNamespace

    from ferbench.config.settings import added_at_default
    from ferbench.methods.baseline import BaselineConfig
    from ferbench.runkey import run_key

    view = SimpleNamespace(id="noise30", noise=None, params={}, record={})
    added = added_at_default(BaselineConfig)
    assert added == {"soft_target": None}
    before = {"method": {"lr": 0.1}, "data": {}, "engine": {}, "protocol": {}}
    key = run_key("synthfer", view, "baseline", 0, before)
    at_default = {**before, "method": {"lr": 0.1, "soft_target": None}}
    assert run_key("synthfer", view, "baseline", 0, at_default, added) == key
    on_votes = {**before, "method": {"lr": 0.1, "soft_target": "votes"}}
    assert run_key("synthfer", view, "baseline", 0, on_votes, added) != key


def test_write_json_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "a" / "b" / "seed0.json"
    write_json(path, {"schema": 1, "x": np.float32(0.5), "arr": np.arange(3), "p": tmp_path})
    assert json.loads(path.read_text()) == {"schema": 1, "x": 0.5, "arr": [0, 1, 2],
                                            "p": str(tmp_path)}
    write_json(path, {"schema": 1, "x": 2})  # replacing an existing file
    assert json.loads(path.read_text()) == {"schema": 1, "x": 2}
    write_npz(path.with_suffix(".npz"), {"probs": np.eye(3)})
    assert (np.load(path.with_suffix(".npz"))["probs"] == np.eye(3)).all()
    assert _files(tmp_path) == ["a/b/seed0.json", "a/b/seed0.npz"]


def test_a_failure_while_serialising_leaves_no_file(tmp_path, monkeypatch):
    def boom(*a, **kw):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(results.json, "dumps", boom)
    with pytest.raises(RuntimeError):
        write_json(tmp_path / "seed0.json", {"schema": 1})
    assert _files(tmp_path) == []


def test_a_failure_while_writing_keeps_the_old_file_and_removes_the_temporary(tmp_path,
                                                                               monkeypatch):
    path = tmp_path / "seed0.json"
    write_json(path, {"schema": 1, "old": True})

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.os, "replace", fail)
    with pytest.raises(OSError):
        write_json(path, {"schema": 1, "old": False})
    with pytest.raises(OSError):
        write_json(tmp_path / "seed1.json", {"schema": 1})
    assert _files(tmp_path) == ["seed0.json"]
    assert json.loads(path.read_text()) == {"schema": 1, "old": True}


def test_an_unserialisable_value_leaves_no_file(tmp_path):
    with pytest.raises(TypeError, match="not JSON-serialisable: object"):
        write_json(tmp_path / "seed0.json", {"schema": 1, "bad": object()})
    assert _files(tmp_path) == []


def test_read_results_returns_results_and_skips_everything_else(tmp_path):
    good = [tmp_path / "synthfer" / "clean" / "baseline" / "h" / f"seed{s}.json" for s in (1, 0)]
    for s, p in enumerate(good):
        write_json(p, {"schema": SCHEMA_VERSION, "key": {"seed": s}})
    write_json(tmp_path / "synthfer" / "noise" / "noise30-abc.json", {"flips": []})
    write_json(tmp_path / "other" / "seed0.json", {"schema": SCHEMA_VERSION + 1})
    write_json(tmp_path / "other" / "seed1.json", [1, 2, 3])
    (tmp_path / "other" / "seed2.json").write_text("{not json")
    (tmp_path / "leaderboard.json").write_text(json.dumps({"schema": SCHEMA_VERSION}))
    found = read_results(tmp_path)
    assert [r["_path"] for r in found] == sorted(str(p) for p in good)
    assert all(r["schema"] == SCHEMA_VERSION for r in found)


def test_reading_a_missing_folder_or_a_bad_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="results folder does not exist"):
        read_results(tmp_path / "nope")
    bad = tmp_path / "seed0.json"
    bad.write_text("{")
    with pytest.raises(DataError, match="not a readable result file") as e:
        read_result(bad)
    assert str(e.value).startswith(f"{bad}: ")
    bad.write_text(json.dumps({"schema": 99}))
    with pytest.raises(DataError, match="not a ferbench result of schema 1"):
        read_result(bad)


def test_check_writable_creates_the_folder(tmp_path):
    out = check_writable(tmp_path / "new" / "results")
    assert out.is_dir() and _files(tmp_path) == []  # the probe file is gone


def test_a_results_folder_under_a_regular_file_is_a_data_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(DataError, match="results directory is not writable") as e:
        check_writable(blocker / "sub")
    assert str(e.value).startswith(f"{blocker / 'sub'}: ")
    with pytest.raises(DataError, match="not writable"):
        check_writable(blocker)


def test_a_read_only_results_folder_is_a_data_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user that chmod does not stop (root): covered by the "
                        "folder-under-a-file test")
        with pytest.raises(DataError, match="not writable"):
            check_writable(ro)
    finally:
        ro.chmod(stat.S_IRWXU)
