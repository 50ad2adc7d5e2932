"""A grid file's mistakes found when it loads, before any cell: `--var` values, YAML errors
with their line, the `slurm:` section, the leaderboard's folder, and the cells' labels."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from ferbench.cli import cli
from ferbench.errors import ConfigError
from ferbench.grid import load_grid

TINY = """
vars: {n: 60, note: none}
datasets: {synthfer: {options: {n_train: "${vars.n}", n_test: 20}}}
methods: [baseline]
epochs: 1
out: "results-${vars.note}"
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path / "cache"))


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def _one_error_line(res, grid: Path) -> str:
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferbench: error: "), res.output
    assert str(grid) in lines[0]
    return lines[0]


def test_a_var_is_text_and_takes_the_type_of_the_files_value(tmp_path):
    grid = load_grid(_write(tmp_path / "grid.yaml", TINY), {"n": "0100", "note": "2024-01-05"})
    # Not YAML: 0100 is not octal 64, and a date stays the text that was typed.
    assert grid.requests[0].data_options == {"n_train": "100", "n_test": "20"}
    assert grid.out == tmp_path / "results-2024-01-05"


@pytest.mark.parametrize("value", ["[60", "@x", "six", "1.5", 1.5, True, [60]])
def test_a_var_that_is_no_number_where_the_file_has_one_is_one_line(tmp_path, value):
    path = _write(tmp_path / "grid.yaml", TINY)
    with pytest.raises(ConfigError) as e:
        load_grid(path, {"n": value})
    assert str(e.value) == (f"--var n={value}: {path}: vars.n: expected a whole number, "
                            f"as the file's value 60 is")


def test_a_var_of_the_wrong_type_names_the_file_and_the_variable(tmp_path, cache):
    grid = _write(tmp_path / "grid.yaml", TINY)
    res = CliRunner().invoke(cli, ["run", "--grid", str(grid), "--dry-run", "--var", "n=abc",
                                   "--out", str(tmp_path / "out")])
    assert "--var n=abc" in _one_error_line(res, grid)
    assert "vars.n: expected a whole number" in res.output
    assert not (tmp_path / "out").exists()


def test_a_yaml_error_names_its_line_and_column(tmp_path, cache):
    grid = _write(tmp_path / "d.yaml", """\
        datasets: {synthfer: {}}
        methods: {baseline: {}, baseline: {epochs: 2}}
        """)
    res = CliRunner().invoke(cli, ["run", "--grid", str(grid), "--dry-run"])
    assert _one_error_line(res, grid) == \
        f"ferbench: error: {grid}:2:25: found duplicate key baseline"


@pytest.mark.parametrize("slurm, entry, message", [
    ("{mem_gb: [1, 2], time_min: 120}", "mem_gb", "expected a whole number >= 1"),
    ("{time_min: 2h}", "time_min", "'2h' is not a valid value"),
    ("{partitoin: gpu}", "partitoin", "did you mean 'partition'"),
    ("{gpus_per_task: yes}", "gpus_per_task", "expected a whole number >= 0"),
    ("{sbatch: [account]}", "sbatch", "such as {account: my-lab}"),
    ("{setup: {a: 1}}", "setup", "such as [source .venv/bin/activate]"),
])
def test_slurm_settings_are_checked_when_the_grid_loads(tmp_path, cache, slurm, entry, message):
    grid = _write(tmp_path / "grid.yaml",
                  f"datasets: {{synthfer: {{}}}}\nmethods: [baseline]\nslurm: {slurm}\n")
    # A local dry run too: the mistake must not wait for the cluster.
    res = CliRunner().invoke(cli, ["run", "--grid", str(grid), "--dry-run"])
    line = _one_error_line(res, grid)
    assert line.startswith(f"ferbench: error: {grid}: slurm.{entry}: ")
    assert message in line


def test_slurm_settings_given_as_text_are_typed(tmp_path):
    grid = load_grid(_write(tmp_path / "grid.yaml", """
        datasets: {synthfer: {}}
        methods: [baseline]
        slurm: {mem_gb: "32", setup: source .venv/bin/activate, sbatch: {account: lab}}
        """))
    assert grid.slurm == {"mem_gb": 32, "setup": ["source .venv/bin/activate"],
                          "sbatch": {"account": "lab"}}


@pytest.mark.parametrize("entry", ["leaderboard", "out"])
def test_a_leaderboard_or_results_folder_that_is_a_file_is_refused_before_any_cell(
        tmp_path, cache, entry):
    (tmp_path / "afile").write_text("not a folder\n")
    grid = _write(tmp_path / "grid.yaml", f"""
        datasets: {{synthfer: {{options: {{n_train: 60, n_test: 20}}}}}}
        methods: [baseline]
        {entry}: afile/inside
        """)
    res = CliRunner().invoke(cli, ["run", "--grid", str(grid), "--dry-run"])
    line = _one_error_line(res, grid)
    assert line.startswith(f"ferbench: error: {grid}: {entry}: {tmp_path / 'afile'} is a file")


def test_two_entries_of_one_method_have_labels_of_their_own(tmp_path, cache):
    grid = _write(tmp_path / "grid.yaml", """
        datasets: {synthfer: {options: {n_train: 60, n_test: 20}}}
        methods: {a: {name: baseline}, b: {name: baseline, overrides: {lr: 0.000001}},
                  baseline: {epochs: 2}}
        epochs: 1
        """)
    res = CliRunner().invoke(cli, ["run", "--grid", str(grid), "--dry-run"])
    assert res.exit_code == 0, res.output
    cells = [ln.split("  ")[0] for ln in res.output.splitlines() if "· seed 0 ·" in ln]
    assert cells == ["a (baseline) · clean · seed 0 · synthfer",
                     "b (baseline) · clean · seed 0 · synthfer",
                     "baseline · clean · seed 0 · synthfer"]


def test_a_method_listed_twice_is_labelled_by_its_place_in_the_list(tmp_path, cache):
    grid = _write(tmp_path / "grid.yaml", """
        datasets: {synthfer: {options: {n_train: 60, n_test: 20}}}
        methods: [baseline, {name: baseline, overrides: {lr: 0.000001}}]
        epochs: 1
        """)
    res = CliRunner().invoke(cli, ["run", "--grid", str(grid), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "methods[0] (baseline) · clean" in res.output
    assert "methods[1] (baseline) · clean" in res.output


def test_a_bad_slurm_setting_on_the_command_line_is_one_line_even_for_a_local_dry_run(
        tmp_path, cache):
    grid = _write(tmp_path / "grid.yaml", TINY)
    res = CliRunner().invoke(cli, ["run", "--grid", str(grid), "--dry-run",
                                   "--slurm", "time_min=2h"])
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines() == [
        "ferbench: error: --slurm time_min: '2h' is not a valid value; expected a whole "
        "number >= 1 such as 120 (minutes)"]


def test_a_var_whose_file_value_is_a_list_takes_a_list(tmp_path, cache):
    grid = _write(tmp_path / "grid.yaml", """
        vars: {seeds: [0, 1, 2]}
        datasets: {synthfer: {options: {n_train: 60, n_test: 20}}}
        methods: [baseline]
        seeds: ${vars.seeds}
        epochs: 1
        """)
    assert load_grid(grid, {"seeds": "[07, 8]"}).requests[0].seeds == [7, 8]  # decimal
    assert load_grid(grid, {"seeds": "7"}).requests[0].seeds == [7]
    with pytest.raises(ConfigError) as e:
        load_grid(grid, {"seeds": "[0, 1"})
    assert str(e.value) == (f"--var seeds=[0, 1: {grid}: vars.seeds: '[0, 1' does not parse "
                            f"as a YAML list")


def test_a_var_whose_file_value_is_null_is_read_as_yaml_and_text_stays_text(tmp_path, cache):
    grid = _write(tmp_path / "grid.yaml", """
        vars: {seeds: null, protocols: null, note: none}
        datasets: {synthfer: {options: {n_train: 60, n_test: 20}}}
        methods: [baseline]
        protocols: ${vars.protocols}
        seeds: ${vars.seeds}
        out: "results-${vars.note}"
        """)
    g = load_grid(grid, {"seeds": "3", "protocols": "[clean, noise30]", "note": "0100"})
    assert g.requests[0].seeds == [3] and g.requests[0].protocols == ["clean", "noise30"]
    assert g.out == tmp_path / "results-0100"


@pytest.mark.parametrize("word, value", [("yes", True), ("Off", False), ("true", True)])
def test_a_boolean_var_takes_yamls_words_for_true_and_false(tmp_path, word, value):
    grid = _write(tmp_path / "grid.yaml", """
        vars: {flip: false}
        datasets: {synthfer: {options: {n_train: 60, n_test: 20}}}
        methods: {baseline: {overrides: {tta_flip: "${vars.flip}"}}}
        """)
    assert load_grid(grid, {"flip": word}).requests[0].overrides == [f"tta_flip={value}".lower()]


def test_slurm_settings_given_on_the_command_line_are_typed_as_the_file_would_type_them(
        tmp_path):
    from ferbench.slurm import check_slurm, settings_from_text

    typed = check_slurm(settings_from_text({
        "mem_gb": "+32", "setup": "[module load cuda, source .venv/bin/activate]",
        "sbatch": "{account: lab, qos: 2024-01-05}", "partition": "010"}))
    assert typed == {"mem_gb": 32, "setup": ["module load cuda", "source .venv/bin/activate"],
                     "sbatch": {"account": "lab", "qos": "2024-01-05"}, "partition": "010"}
    assert check_slurm(settings_from_text({"setup": "source .venv/bin/activate"})) == {
        "setup": ["source .venv/bin/activate"]}
    with pytest.raises(ConfigError, match="sbatch: '{a: !!int 0x1}' is not a valid value"):
        check_slurm(settings_from_text({"sbatch": "{a: !!int 0x1}"}))


def test_a_setup_line_in_the_grid_file_is_one_line_though_it_begins_with_a_bracket(tmp_path):
    grid = load_grid(_write(tmp_path / "grid.yaml", """
        datasets: {synthfer: {}}
        methods: [baseline]
        slurm: {setup: "[ -f .env ] && source .env"}
        """))
    assert grid.slurm == {"setup": ["[ -f .env ] && source .env"]}
