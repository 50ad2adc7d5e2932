"""Tables of mean ± std cells rendered as escaped markdown (used by the leaderboard)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from tabulate import tabulate

from .metrics import higher_is_better

MISSING = "–"
_SPECIAL = re.compile(r"([\\`*_|<>\[\]~&$#])")


@dataclass(frozen=True)
class Spec:
    """How a column is shown: scale, decimals, which way is best (+1 high, -1 low, 0 none)."""
    scale: float = 100.0
    decimals: int = 2
    better: int = 1
    kind: str = "num"      # num | text (e.g. train_noise_at) | size (params, FLOPs)


# Columns whose direction is not a stored metric's (those use `metric_spec`): a
# percentage, a percentage never ranked, and text.
PCT, PCT_ANY, TEXT = Spec(), Spec(better=0), Spec(better=0, kind="text")


def metric_spec(key: str, scale: float = 100.0, decimals: int = 2, kind: str = "num") -> Spec:
    """The column of a stored metric, best the way `metrics.HIGHER_IS_BETTER` says for `key`."""
    higher = higher_is_better(key)
    return Spec(scale, decimals, 0 if higher is None else 1 if higher else -1, kind)


@dataclass
class Cell:
    """One group's values (one per seed): n, mean and sample std (ddof=1; 0 when n = 1)."""
    values: list
    n: int = field(init=False)
    mean: float = field(init=False)
    std: float = field(init=False)

    def __post_init__(self):
        self.n = len(self.values)
        numeric = self.n and not isinstance(self.values[0], str)
        self.mean = float(np.mean(self.values)) if numeric else math.nan
        self.std = float(np.std(self.values, ddof=1)) if numeric and self.n > 1 else 0.0


@dataclass
class Table:
    """Rows x columns of cells holding raw values (fractions, not %); `markdown` renders it."""
    title: str
    rows: list
    columns: list
    cells: dict            # (row name, column label) -> Cell
    specs: dict            # column label -> Spec
    marks: dict = field(default_factory=dict)   # (row name, column label) -> mark after the cell
    footnote: str = ""     # markdown shown under the table (what the marks mean)

    def cell(self, row: str, column: str) -> Cell | None:
        return self.cells.get((row, column))

    def best(self, column: str) -> set:
        """Rows with the column's best value at display precision; none if every row ties."""
        spec = self.specs[column]
        if spec.better == 0 or spec.kind != "num":
            return set()
        shown = {r: round(self.cells[r, column].mean * spec.scale, spec.decimals)
                 for r in self.rows if (r, column) in self.cells}
        top = (max if spec.better > 0 else min)(shown.values())
        best = {r for r, v in shown.items() if v == top}
        return best if len(best) < len(shown) else set()

    def text(self, row: str, column: str) -> str:
        cell, spec = self.cells.get((row, column)), self.specs[column]
        if cell is None:
            return MISSING
        if spec.kind == "text":
            return escape("/".join(sorted(set(map(str, cell.values)))))
        if spec.kind == "size":
            return _human(cell.mean)
        d, s = spec.decimals, spec.scale
        spread = f" ± {cell.std * s:.{d}f}" if cell.n > 1 else ""
        return f"{cell.mean * s:.{d}f}{spread} (n={cell.n})"

    def markdown(self) -> str:
        bold = {c: self.best(c) for c in self.columns}
        body = [[escape(r)] + [(f"**{self.text(r, c)}**" if r in bold[c] else self.text(r, c))
                               + self.marks.get((r, c), "") for c in self.columns]
                for r in self.rows]
        return tabulate(body, headers=["method"] + [escape(c) for c in self.columns],
                        tablefmt="github", disable_numparse=True)


def escape(text) -> str:
    """Markdown-safe text for a table cell or heading: specials backslashed, newlines spaced."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _human(v: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.2f} {unit}"
    return f"{v:.0f}"
