"""The README's promises: its plugin example works as written, its commands are the real ones."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import write_image

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), re.S)


def test_the_readme_plugin_example_is_a_working_method(tmp_path, monkeypatch):
    """Install the README's `ferbench-mixup` package as written and run the conformance kit on it."""
    toml = next(b for b in _blocks("toml") if 'name = "ferbench-mixup"' in b)
    code = next(b for b in _blocks("python") if "class Mixup(Method)" in b)
    pkg = tmp_path / "ferbench-mixup"
    (pkg / "src" / "ferbench_mixup").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(toml)
    (pkg / "src" / "ferbench_mixup" / "__init__.py").write_text(code)
    # An installed distribution is a dist-info folder with entry_points.txt on sys.path.
    site = tmp_path / "site"
    dist = site / "ferbench_mixup-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ferbench-mixup\n"
                                   "Version: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[ferbench]\nmixup = ferbench_mixup\n")
    monkeypatch.syspath_prepend(str(pkg / "src"))
    monkeypatch.syspath_prepend(str(site))
    import ferbench.plugins as plugins

    monkeypatch.setattr(plugins, "_REGISTRY", None)
    reg = plugins.registry()
    assert reg.methods["mixup"].plugin == "ferbench-mixup"
    from ferbench.testing import check_method

    report = check_method("mixup", workdir=tmp_path / "work")
    assert report["results"], "the example method did not complete a run"
    from click.testing import CliRunner

    from ferbench.cli import cli

    refused = CliRunner().invoke(cli, ["run", "--method", "mixup", "alpha=-1",
                                       "--out", str(tmp_path / "out")])
    assert refused.exit_code == 2
    assert refused.stderr.splitlines() == ["ferbench: error: alpha=-1.0: must be > 0"]


def test_ci_runs_the_readme_test_command():
    test_cmd = next(line.strip() for b in _blocks("bash") for line in b.splitlines()
                    if line.strip().startswith("python -m pytest"))
    ci = (README.parent / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines()


def test_ferbench_list_names_every_plugin_of_this_repository():
    import tomllib

    out = subprocess.run([sys.executable, "-c", "from ferbench.cli import main; main()", "list",
                          "--json"], capture_output=True, text=True, check=True).stdout
    listed = {p["name"] for p in json.loads(out)["plugins"]}
    for pyproject in (README.parent / "plugins").glob("*/pyproject.toml"):
        name = tomllib.loads(pyproject.read_text())["project"]["name"]
        assert name in listed, f"{name} is in plugins/ but not discovered by ferbench list"


def test_the_readme_dataset_plugin_example_reads_checks_and_trains(tmp_path, monkeypatch):
    """Install the README's `ferbench-csvfaces` as written; audit, train, and refuse a bad row."""
    from click.testing import CliRunner

    from ferbench.cli import cli

    code = next(b for b in _blocks("python") if "class CsvFaces(DatasetAdapter)" in b)
    toml = next(b for b in _blocks("toml") if 'name = "ferbench-csvfaces"' in b)
    assert 'csvfaces = "ferbench_csvfaces"' in toml
    src = tmp_path / "src" / "ferbench_csvfaces"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text(code)
    dist = tmp_path / "site" / "ferbench_csvfaces-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ferbench-csvfaces\n"
                                   "Version: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[ferbench]\ncsvfaces = ferbench_csvfaces\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path / "cache"))
    import ferbench.plugins as plugins

    monkeypatch.setattr(plugins, "_REGISTRY", None)
    data = tmp_path / "faces"
    rows = ["path,label,split"]
    for i in range(24):
        split, label = ("train" if i < 16 else "test"), ("happy", "sad", "angry")[i % 3]
        write_image(data / "img" / f"{i}.png", i, size=32)
        rows.append(f"img/{i}.png,{label},{split}")
    (data / "faces.csv").write_text("\n".join(rows) + "\n")
    runner = CliRunner()
    check = runner.invoke(cli, ["data", "check", "csvfaces", "--data-root", str(data)])
    assert check.exit_code == 0, check.output
    run = runner.invoke(cli, ["run", "--dataset", "csvfaces", "--data-root", str(data),
                              "--method", "baseline", "--preset", "quick", "--epochs", "1",
                              "--batch-size", "8", "--device", "cpu",
                              "--out", str(tmp_path / "out")])
    assert run.exit_code == 0, run.output
    [result] = (tmp_path / "out").rglob("seed0.json")
    assert json.loads(result.read_text())["dataset"]["n_train"] == 16
    (data / "faces.csv").write_text("\n".join([*rows[:3], "img/3.png,bored,train"]) + "\n")
    bad = runner.invoke(cli, ["data", "check", "csvfaces", "--data-root", str(data)])
    assert bad.exit_code == 2
    assert bad.stderr.splitlines() == [
        f"ferbench: error: {data / 'faces.csv'}:4: expected path,label,split with an emotion "
        f"as the label"]
