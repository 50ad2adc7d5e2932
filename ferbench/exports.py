"""The leaderboard's tables as files for a paper or a notebook, and the index of its runs.

Flat files hold one row per table cell (`leaderboard.csv`, `leaderboard.jsonl`) or per
stored run (`runs.csv`, `runs.jsonl`), with plain columns only, so `pandas.read_csv` and
`pandas.read_json(..., lines=True)` load them without flattening anything. Cells are in the
units their table shows (accuracies in %); the runs index keeps the result files' own
numbers (fractions), as a notebook reading result files would see them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re

from .errors import ConfigError, unknown_name
from .record import RunRecord
from .results import write_bytes
from .tables import Table, finite_number

FORMATS = ("md", "csv", "latex", "jsonl")
FIGURE_FORMATS = ("png", "pdf", "svg")
CELL_FIELDS = ("dataset", "table", "protocol", "metric", "method", "method_id", "mean", "std",
               "n", "text", "best", "mark", "title")
# The figures a reader compares runs by; any metric a run lacks is left empty.
HEADLINE = ("test_acc", "test_mean_class_acc", "test_macro_f1", "test_ece", "test_nll",
            "test_kl", "train_noise_auroc")
RUN_FIELDS = ("dataset", "protocol", "method", "method_id", "preset", "seed", "fold",
              "config_hash", *HEADLINE, "wall_time_s", "path")


def parse_formats(text: str | None, allowed: tuple, option: str) -> tuple:
    """`md,latex` → ("md", "latex"): the comma list a user gave, each name checked."""
    names = [n.strip().lower() for n in (text or "").split(",") if n.strip()]
    if not names:
        raise ConfigError(f"{option} {text!r}: name at least one of {', '.join(allowed)}")
    for n in names:
        if n not in allowed:
            raise unknown_name(f"{option[2:]}", n, allowed)
    return tuple(dict.fromkeys(names))


def _tables(dataset_tables: dict):
    """(table name, protocol label or None, Table) of one dataset's leaderboard."""
    for name, t in dataset_tables.items():
        if isinstance(t, Table):
            yield name, None, t
        elif isinstance(t, dict):
            for label, table in t.items():
                if isinstance(table, Table):
                    yield name, label, table


def cell_rows(tables: dict, method_of: dict) -> list[dict]:
    """One flat row per cell of every table. Grid tables (a metric over protocols) give the
    protocol as the column and the table's title as the metric; per-protocol tables give
    their protocol and the column as the metric."""
    rows = []
    for dataset, dataset_tables in tables.items():
        for name, label, t in _tables(dataset_tables):
            for c in t.flat():
                rows.append({"dataset": dataset, "table": name,
                             "protocol": label if label is not None else c["column"],
                             "metric": c["column"] if label is not None else t.title,
                             "method": c["row"],
                             "method_id": method_of.get(dataset, {}).get(c["row"], ""),
                             "mean": _round(c["mean"]), "std": _round(c["std"]), "n": c["n"],
                             "text": c["text"], "best": c["best"], "mark": c["mark"],
                             "title": t.title})
    return rows


def run_rows(boards: dict, out_dir) -> list[dict]:
    """One flat row per stored run: where it sits in the leaderboard and its headline
    figures; `path` is the result file relative to the leaderboard's folder."""
    rows = []
    for dataset, b in boards.items():
        order = lambda r: (b.columns[b.col(r)], b.rows[b.row(r)],  # noqa: E731
                           -1 if b.fold(r) is None else b.fold(r), str(r.key.seed), r.path or "")
        for r in sorted(b.records, key=order):
            rows.append(_run_row(dataset, b, r, out_dir))
    return rows


def _run_row(dataset: str, b, r: RunRecord, out_dir) -> dict:
    metrics = {k: _round(finite_number(r.metrics.get(k))) for k in HEADLINE}
    path = os.path.relpath(r.path, out_dir) if r.path else ""
    return {"dataset": dataset, "protocol": b.columns[b.col(r)], "method": b.rows[b.row(r)],
            "method_id": r.key.method, "preset": r.method.get("preset"), "seed": r.key.seed,
            "fold": b.fold(r), "config_hash": r.key.config_hash, **metrics,
            "wall_time_s": _round(finite_number(r.wall_time_s)), "path": path}


def _round(v):
    return None if v is None else round(v, 10)


def write_csv(path, rows: list[dict], fields: tuple) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if row.get(k) is None else row[k]) for k in fields} for row in rows)
    write_bytes(path, buf.getvalue().encode())


def write_jsonl(path, rows: list[dict]) -> None:
    write_bytes(path, "".join(json.dumps(row, ensure_ascii=False) + "\n"
                              for row in rows).encode())


def latex_document(tables: dict) -> str:
    """Every table as a LaTeX `table` float, labelled `tab:<dataset>-<table>[-<protocol>]`,
    ready to `\\input` (the preamble needs booktabs)."""
    parts = ["% ferbench leaderboard: one table float per leaderboard table.",
             "% Needs \\usepackage{booktabs} in the preamble.", ""]
    for dataset, dataset_tables in tables.items():
        parts += [f"% ---- {dataset}", ""]
        for name, label, t in _tables(dataset_tables):
            ident = "-".join(_label_part(p) for p in (dataset, name, label) if p)
            parts += [t.latex(f"tab:{ident}"), ""]
    return "\n".join(parts)


def _label_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower() or "x"
