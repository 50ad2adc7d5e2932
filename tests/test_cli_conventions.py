"""Command-line conventions: `python -m ferbench`, comma lists for --method and --protocol,
`run --print-config`, and the plugin-loading variable named in the help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import yaml
from click.testing import CliRunner

from conftest import one_error_line
from ferbench.cli import cli

# A run small enough to train in seconds (fp32 named: `auto` picks bf16 on some CPUs).
TINY = ["-o", "n_train=64", "-o", "n_test=32", "--epochs", "1", "--batch-size", "16",
        "--device", "cpu", "--precision", "fp32"]


def ferbench(*args, env=None):
    """Run `ferbench ARGS...` in this process; stdout and stderr are kept apart."""
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def python_m(*args, env=None):
    """Run `python -m ferbench ARGS...` as a user does, in a fresh process."""
    return subprocess.run([sys.executable, "-m", "ferbench", *map(str, args)],
                          capture_output=True, text=True, timeout=300, check=False, env=env)


def planned(*args) -> list[dict]:
    """The runs `ferbench run ARGS... --print-config` plans, one YAML document each."""
    result = ferbench("run", *args, "--print-config")
    assert result.exit_code == 0, result.output
    return list(yaml.safe_load_all(result.stdout))


# --- python -m ferbench ----------------------------------------------------------------------


def test_python_m_ferbench_is_the_ferbench_command():
    result = python_m("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: ferbench [OPTIONS] COMMAND")
    listed = python_m("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "baseline" in {m["name"] for m in json.loads(listed.stdout)["methods"]}


def test_python_m_ferbench_gives_one_error_line_and_status_2():
    result = python_m("run", "--method", "nosuchmethod", "--print-config")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("ferbench: error: unknown method 'nosuchmethod'")


# --- FERBENCH_LOAD_PLUGINS ---------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--help"], ["list", "--help"]])
def test_the_help_names_the_variable_that_chooses_plugins(args):
    result = ferbench(*args)
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "FERBENCH_LOAD_PLUGINS=NAME,NAME loads only these third-party plugins" in text
    assert "built-ins always load" in text


def test_an_empty_plugin_list_leaves_the_built_ins_only():
    env = {**os.environ, "FERBENCH_LOAD_PLUGINS": ""}
    result = python_m("list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert [m["name"] for m in json.loads(result.stdout)["methods"]] == ["baseline"]


# --- comma lists ------------------------------------------------------------------------------


def test_comma_lists_plan_the_same_runs_as_repeated_flags():
    commas = planned("--method", "baseline,esr", "--protocol", "clean,noise30")
    repeated = planned("--method", "baseline", "--method", "esr",
                       "--protocol", "clean", "--protocol", "noise30")
    assert [(c["protocol"], c["method"]) for c in commas] == [
        ("clean", "baseline"), ("clean", "esr"), ("noise30", "baseline"), ("noise30", "esr")]
    assert [c["run_key"] for c in commas] == [c["run_key"] for c in repeated]


def test_comma_lists_mix_with_repetition():
    runs = planned("--method", "baseline,esr", "--method", "man", "--protocol", "noise30")
    assert [c["method"] for c in runs] == ["baseline", "esr", "man"]


@pytest.mark.parametrize("flag, value", [("--method", "baseline,"), ("--method", ",esr"),
                                         ("--method", "baseline,,esr"),
                                         ("--protocol", "clean,,noise30"),
                                         ("--protocol", "")])
def test_an_empty_item_in_a_comma_list_is_refused(flag, value, tmp_path):
    one_error_line(ferbench("run", flag, value, "--out", tmp_path / "out"),
                   f"{flag} {value!r}: an empty item in the comma list")
    assert not (tmp_path / "out").exists()


def test_a_noise_file_whose_name_holds_a_comma_is_one_protocol(tmp_path):
    noise = tmp_path / "labels,v2.txt"
    noise.write_text("not_a_sample.png sadness\n")
    # The file is read (and refused for its content), not split into two protocols.
    one_error_line(ferbench("run", "--method", "baseline", *TINY, "--protocol",
                            f"noise_file={noise}", "--out", tmp_path / "out"),
                   f"{noise}:1:", "unknown image name not_a_sample.png")


def test_a_grid_file_still_plans_its_cells(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(textwrap.dedent("""
        datasets: {synthfer: {options: {n_train: 64, n_test: 32}}}
        methods: [baseline, esr]
        protocols: [clean, noise30]
        seeds: [0, 1]
        """))
    runs = planned("--grid", grid)
    assert len(runs) == 8
    assert {(c["method"], c["protocol"], c["seed"]) for c in runs} == {
        (m, p, s) for m in ("baseline", "esr") for p in ("clean", "noise30") for s in (0, 1)}
    dry = ferbench("run", "--grid", grid, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "8 cells: 0 stored, 8 to run" in dry.stdout



def grid_with_variable(tmp_path, use: str):
    grid = tmp_path / "grid.yaml"
    grid.write_text(textwrap.dedent(f"""
        vars: {{v: none}}
        datasets: {{synthfer: {{options: {{n_train: 64, n_test: 32}}}}}}
        methods: {{baseline: {{overrides: {{{use}: "${{vars.v}}"}}}}}}
        """))
    return grid


def test_a_number_given_with_var_reads_as_decimal_as_o_reads_it(tmp_path):
    runs = planned("--grid", grid_with_variable(tmp_path, "epochs"), "--var", "v=0100")
    assert runs[0]["config"]["method"]["epochs"] == 100          # YAML 1.1 would say 64


@pytest.mark.parametrize("value", ["2024-01-05", "[60", "@x"])
def test_a_var_that_is_no_number_is_text_judged_by_the_key_it_fills(tmp_path, value):
    grid = grid_with_variable(tmp_path, "backbone")
    result = ferbench("run", "--grid", grid, "--var", f"v={value}", "--print-config")
    assert result.exit_code == 2, result.output
    assert f"'{value}'" in one_error_line(result)   # named as given, one line, status 2

# --- run --print-config ----------------------------------------------------------------------


def test_print_config_shows_each_run_resolved_and_writes_nothing(tmp_path, isolated_cache):
    out = tmp_path / "results"
    t0 = time.monotonic()
    runs = planned("--method", "baseline,man", "--protocol", "noise30", "--seeds", "0,1",
                   "--preset", "quick", "lr=0.01", "engine.eval_every=2", "--out", out)
    elapsed = time.monotonic() - t0
    assert not out.exists()  # nothing written, not even the results folder
    assert not isolated_cache.exists()  # no image was decoded
    assert elapsed < 60, f"planning four runs took {elapsed:.0f} s"
    assert [(c["method"], c["seed"]) for c in runs] == [
        ("baseline", 0), ("baseline", 1), ("man", 0), ("man", 1)]
    first = runs[0]
    assert (first["preset"], first["preset_source"], first["dataset"], first["protocol"]) == (
        "quick", "ferbench", "synthfer", "noise30")
    assert first["config"]["method"]["lr"] == 0.01
    assert first["config"]["engine"]["eval_every"] == 2
    assert first["config"]["method"]["backbone"] == "ferbench_resnet_tiny"
    key = first["run_key"]
    assert (key["dataset"], key["protocol"], key["method"], key["seed"]) == (
        "synthfer", "noise30", "baseline", 0)
    assert key["result"] == str(out / "synthfer" / "noise30" / "baseline" / key["config_hash"]
                                / "seed0.json")
    # One method config has one hash across seeds; another method has its own.
    assert runs[1]["run_key"]["config_hash"] == key["config_hash"]
    assert runs[2]["run_key"]["config_hash"] != key["config_hash"]


def test_print_config_is_what_the_run_then_records(tmp_path):
    out = tmp_path / "results"
    args = ["--method", "baseline", "--protocol", "noise30", *TINY, "--out", out]
    (shown,) = planned(*args)
    result = ferbench("run", *args, "--no-leaderboard")
    assert result.exit_code == 0, result.output
    (stored,) = out.glob("**/seed0.json")
    record = json.loads(stored.read_text())
    assert shown["run_key"]["result"] == str(stored)
    assert {k: v for k, v in shown["run_key"].items() if k != "result"} == record["key"]
    assert shown["config"] == record["config"]


def test_print_config_with_a_bad_setting_is_one_line(tmp_path):
    one_error_line(ferbench("run", "--method", "baseline", "lr=-1", "--print-config",
                            "--out", tmp_path / "out"), "lr=-1")
    one_error_line(ferbench("run", "--print-config", "--dry-run"), "give one")
    assert not (tmp_path / "out").exists()
