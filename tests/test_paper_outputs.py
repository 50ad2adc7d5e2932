"""From stored results to a paper: tables in every format, figures in every format that fit
their titles, the reliability and noise-plot rules, k-fold columns and display names."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from matplotlib.text import Text
from test_leaderboard import CLASSES, protocol, record, save

from ferbench import plots
from ferbench.cli import cli
from ferbench.leaderboard import build_leaderboard

ODD = "m|x_y&z%"   # a method name with every character a table format must escape


def odd_results(tmp_path):
    """Two methods, one with an awkward name, clean and noise30, two seeds each."""
    for seed in (0, 1):
        for method, clean, noisy in (("baseline", 0.80 + seed / 100, 0.60), (ODD, 0.70, 0.65)):
            save(tmp_path, record(method=method, seed=seed, acc=clean))
            save(tmp_path, record(proto=protocol("noise30", rate=30), method=method, seed=seed,
                                  acc=noisy))
    return tmp_path


ALL = ("md", "csv", "latex", "jsonl")


def test_every_table_format_loads_back_and_keeps_an_awkward_name(tmp_path):
    out = build_leaderboard(odd_results(tmp_path / "r"), tmp_path / "lb", with_plots=False,
                            formats=ALL)
    lb = tmp_path / "lb"
    assert {p.name for p in out["files"]} == {"leaderboard.md", "leaderboard.csv",
                                               "leaderboard.jsonl", "leaderboard.tex",
                                               "runs.csv", "runs.jsonl"}
    for cells in (pd.read_csv(lb / "leaderboard.csv"),
                  pd.read_json(lb / "leaderboard.jsonl", lines=True)):
        main = cells[(cells.table == "main")]
        assert set(main.method) == {"Baseline", ODD}
        row = main[(main.method == "Baseline") & (main.protocol == "clean")].iloc[0]
        assert row["mean"] == pytest.approx(80.5) and row["n"] == 2 and bool(row["best"])
        assert row["std"] == pytest.approx(np.std([80, 81], ddof=1))
        assert main[main.method == ODD].method_id.iloc[0] == ODD
        noise = cells[(cells.table == "noise") & (cells.metric == "AUROC (%)")]
        assert set(noise.protocol) == {"noise30"} and noise["mean"].iloc[0] == pytest.approx(90)
    for runs in (pd.read_csv(lb / "runs.csv"), pd.read_json(lb / "runs.jsonl", lines=True)):
        assert len(runs) == 8 and set(runs.method_id) == {"baseline", ODD}
        assert set(runs.seed) == {0, 1} and set(runs.protocol) == {"clean", "noise30"}
        first = runs[(runs.method_id == "baseline") & (runs.protocol == "clean")
                     & (runs.seed == 1)].iloc[0]
        assert first.test_acc == pytest.approx(0.81)
        assert json.loads((lb / first.path).read_text())["metrics"]["test_acc"] == 0.81
    md = (lb / "leaderboard.md").read_text()
    assert "m\\|x\\_y\\&z%" in md


def test_latex_is_one_booktabs_tabular_per_table_with_a_row_per_method(tmp_path):
    build_leaderboard(odd_results(tmp_path / "r"), tmp_path / "lb", with_plots=False,
                      formats=("latex",))
    tex = (tmp_path / "lb" / "leaderboard.tex").read_text()
    assert not (tmp_path / "lb" / "leaderboard.md").exists()
    tables = re.findall(r"\\begin\{tabular\}\{(\w+)\}(.*?)\\end\{tabular\}", tex, re.S)
    assert tables and tex.count("\\begin{table}") == tex.count("\\end{table}") == len(tables)
    for spec, body in tables:
        rows = [line for line in body.split("\\midrule")[1].splitlines()
                if line.strip().endswith("\\\\")]
        assert len(rows) == 2   # one per method
        for line in rows + [body.split("\\midrule")[0]]:
            if line.strip().endswith("\\\\"):
                assert line.count("&") - line.count("\\&") == len(spec) - 1
    main = tex[tex.index("\\label{tab:synthfer-main}"):]
    main = main[:main.index("\\end{tabular}")]
    assert "m\\textbar{}x\\_y\\&z\\%" in main
    assert "\\textbf{80.50 $\\pm$ 0.71}" in main
    assert "\\caption{Test accuracy, final epoch (\\%) (n = 2 per cell)}" in tex
    # nothing a LaTeX compiler would read as a command or a column break, unescaped
    assert not re.search(r"(?<!\\)[%#](?!\s*ferbench|\s*Needs|\s*----)", tex)


def test_unknown_format_is_one_line_and_writes_nothing(tmp_path):
    odd_results(tmp_path)
    res = CliRunner().invoke(cli, ["leaderboard", str(tmp_path), "--format", "md,xlsx"])
    assert res.exit_code == 2
    assert "xlsx" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "leaderboard.md").exists()
    res = CliRunner().invoke(cli, ["leaderboard", str(tmp_path), "--figure-format", "gif"])
    assert res.exit_code == 2 and "gif" in res.output


def test_figures_in_every_format_from_the_command_line(tmp_path):
    odd_results(tmp_path)
    res = CliRunner().invoke(cli, ["leaderboard", str(tmp_path), "--format", "md,csv",
                                   "--figure-format", "png,pdf,svg"])
    assert res.exit_code == 0, res.output
    for kind in ("clean-confusion", "clean-reliability", "noise30-rejection",
                 "accuracy_vs_noise"):
        stem = tmp_path / f"synthfer-{kind}"
        assert stem.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
        assert stem.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
        assert b"<svg" in stem.with_suffix(".svg").read_bytes()[:2000]
    md = (tmp_path / "leaderboard.md").read_text()
    assert "![synthfer-clean-confusion](synthfer-clean-confusion.png) " \
           "([PDF](synthfer-clean-confusion.pdf), [SVG](synthfer-clean-confusion.svg))" in md
    # a later leaderboard without PDFs removes the ones it no longer draws
    res = CliRunner().invoke(cli, ["leaderboard", str(tmp_path)])
    assert res.exit_code == 0 and not list(tmp_path.glob("*.pdf"))


@pytest.fixture
def drawn(monkeypatch):
    """Every figure the leaderboard saves, kept for inspection after it is written."""
    figures = []
    save = plots._save

    def keep(fig, path, formats=("png",)):
        figures.append((path, fig))
        return save(fig, path, formats)
    monkeypatch.setattr(plots, "_save", keep)
    return figures


def outside(fig) -> list:
    """Visible text of `fig` that runs past its edges (a clipped title, say)."""
    fig.canvas.draw()
    renderer, box = fig.canvas.get_renderer(), fig.bbox
    return [t.get_text() for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip()
            and (t.get_window_extent(renderer).x0 < box.x0 - 1
                 or t.get_window_extent(renderer).x1 > box.x1 + 1
                 or t.get_window_extent(renderer).y1 > box.y1 + 1)]


def test_no_figure_clips_its_title_even_one_panel_with_a_long_protocol(tmp_path, drawn):
    # wide capitals defeat any characters-per-inch guess; only a measured title fits
    long = protocol("realnoise", rate=None, noise_hash="cd" * 8, source="reference",
                    label="REALNOISE:WWWWMMMMWWWWMMMMWWWWMMMM")
    save(tmp_path, record(dataset="ferplus", proto=long, method="baseline"))
    build_leaderboard(tmp_path)
    assert {p.stem.split("-")[-1] for p, _ in drawn} >= {"confusion", "reliability",
                                                          "rejection"}
    for path, fig in drawn:
        assert outside(fig) == [], path.name
    confusion = next(fig for p, fig in drawn if p.stem.endswith("confusion"))
    title = confusion.get_suptitle()
    assert title.replace("\n", " ").startswith("ferplus · REALNOISE:WWWW")
    assert " ".join(title.split()).endswith("confusion matrices, % of each true class")


def test_reliability_diagram_shows_each_bins_count_and_the_ece(tmp_path, drawn):
    rec = record(metrics={"test_ece": 0.05})
    rec["reliability"] = {"edges": list(np.linspace(0, 1, 6)),
                          "confidence": [0.1, 0.3, 0.5, 0.7, 0.9],
                          "accuracy": [0.2, 0.3, 0.4, 0.7, 1.0],
                          "count": [10, 0, 20, 30, 40]}
    save(tmp_path, rec)
    build_leaderboard(tmp_path)
    fig = next(fig for p, fig in drawn if p.stem.endswith("reliability"))
    top, counts = fig.axes
    # ECE = (10·0.1 + 20·0.1 + 30·0 + 40·0.1) / 100 = 7 %
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    assert "Baseline · ECE 7.0 %" in labels
    (line,) = counts.get_lines()
    assert list(line.get_ydata()) == [10, 20, 30, 40]          # the empty bin left out
    assert list(line.get_xdata()) == pytest.approx([0.1, 0.5, 0.7, 0.9])
    assert counts.get_yscale() == "log"


def test_accuracy_vs_noise_needs_two_rates_and_shows_the_floor_and_n(tmp_path, drawn):
    for seed in (0, 1, 2):
        save(tmp_path, record(method="baseline", seed=seed))
        save(tmp_path, record(proto=protocol("noise30", rate=30), method="baseline",
                              seed=seed, acc=0.6))
    save(tmp_path, record(proto=protocol("noise30", rate=30), method="man", acc=0.7))
    build_leaderboard(tmp_path)
    (fig,) = [fig for p, fig in drawn if p.stem.endswith("accuracy_vs_noise")]
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Baseline" in labels and "MAN" not in labels        # MAN has one rate only
    floor = [line for line in ax.get_lines() if list(line.get_xdata()) == [0, 1]]
    assert [line.get_ydata()[0] for line in floor] == pytest.approx([100 * 10 / 30])
    assert "constant guess (neutral)" in labels
    assert sorted(t.get_text() for t in ax.texts) == ["n=3", "n=3"]


def test_one_noise_rate_draws_no_accuracy_vs_noise_plot(tmp_path):
    save(tmp_path, record(proto=protocol("noise30", rate=30)))
    out = build_leaderboard(tmp_path)
    assert not [p for p in out["plots"] if "accuracy_vs_noise" in p.name]


def fold_record(method, fold, seed, acc):
    rec = record(dataset="ckplus", method=method, seed=seed, acc=acc)
    rec["config"]["data"] = {"name": "ckplus", "root": "/data/ck",
                             "options": {"folds": 3, "fold": fold}}
    rec["key"]["config_hash"] = f"{method[:3]}{fold}{'0' * 7}"[:10]
    rec["dataset"]["fingerprints"] = {"train": f"tr{fold}", "test": f"te{fold}"}
    return rec


def test_ck_folds_are_one_column_averaged_with_a_detail_table(tmp_path):
    accs = {"baseline": [0.60, 0.70, 0.80], "man": [0.65, 0.75, 0.95]}
    for method, per_fold in accs.items():
        for fold, acc in enumerate(per_fold):
            for seed in (0, 1):
                save(tmp_path, fold_record(method, fold, seed, acc + seed / 100))
    out = build_leaderboard(tmp_path, with_plots=False, formats=("md", "csv"))
    t = out["tables"]["ckplus"]
    assert t["main"].rows == ["Baseline", "MAN"]
    assert t["main"].columns == ["clean (3 folds)"]
    cell = t["main"].cell("MAN", "clean (3 folds)")
    assert cell.n == 6 and cell.mean == pytest.approx(np.mean([0.65, 0.75, 0.95]) + 0.005)
    detail = t["folds"]["clean (3 folds)"]
    assert detail.columns == ["fold 0", "fold 1", "fold 2"]
    assert detail.cell("Baseline", "fold 2").values == pytest.approx([0.80, 0.81])
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert sorted(runs[runs.method_id == "man"].fold) == [0, 0, 1, 1, 2, 2]


def test_missing_folds_are_named_in_the_column(tmp_path):
    for fold in (0, 2):
        save(tmp_path, fold_record("baseline", fold, 0, 0.7))
    t = build_leaderboard(tmp_path, with_plots=False)["tables"]["ckplus"]
    assert t["main"].columns == ["clean (2 of 3 folds)"]


def test_rows_use_display_names_and_fall_back_to_ids_when_two_collide(tmp_path):
    named = record(method="mine")
    named["method"]["display_name"] = "My Method (2026)"
    save(tmp_path, named)
    save(tmp_path, record(method="esr-div"))
    t = build_leaderboard(tmp_path, with_plots=False)["tables"]["synthfer"]
    assert t["main"].rows == ["ESR + diversity", "My Method (2026)"]
    twin = record(method="mine2")
    twin["method"]["display_name"] = "My Method (2026)"
    save(tmp_path, twin)
    t = build_leaderboard(tmp_path, with_plots=False)["tables"]["synthfer"]
    assert t["main"].rows == ["esr-div", "mine", "mine2"]


def test_classes_of_the_test_set_feed_the_floor(tmp_path):
    """The constant guess comes from the confusion's true-class counts (rows)."""
    save(tmp_path, record())
    t = build_leaderboard(tmp_path, with_plots=False)["tables"]["synthfer"]
    assert t["majority"]["clean"] == (CLASSES[0], pytest.approx(10 / 30))
