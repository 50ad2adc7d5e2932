"""Tables of mean ± std cells (used by the leaderboard), rendered as escaped markdown or a
LaTeX booktabs tabular, or given as flat rows (one per cell) for CSV and JSON lines."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from tabulate import Line, TableFormat, tabulate

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
            return escape(_joined(cell))
        if spec.kind == "size":
            return _human(cell.mean)
        return f"{_mean_std(cell, spec, ' ± ')} (n={cell.n})"

    def markdown(self) -> str:
        bold = {c: self.best(c) for c in self.columns}
        body = [[escape(r)] + [(f"**{self.text(r, c)}**" if r in bold[c] else self.text(r, c))
                               + self.marks.get((r, c), "") for c in self.columns]
                for r in self.rows]
        return tabulate(body, headers=["method"] + [escape(c) for c in self.columns],
                        tablefmt="github", disable_numparse=True)

    def latex(self, label: str = "") -> str:
        """A `table` float around a booktabs tabular (needs `\\usepackage{booktabs}`):
        mean $\\pm$ std, the best bold, marks as superscripts, and n shown only in cells
        whose n differs from the table's usual n, which the caption gives."""
        counts = [c.n for c in self.cells.values()]
        usual = max(set(counts), key=counts.count) if counts else 0
        bold = {c: self.best(c) for c in self.columns}

        def cell(r, c):
            cell, spec = self.cells.get((r, c)), self.specs[c]
            if cell is None:
                return "--"
            if spec.kind == "text":
                return latex_escape(_joined(cell))
            if spec.kind == "size":
                return latex_escape(_human(cell.mean))
            text = _mean_std(cell, spec, r" $\pm$ ")
            text = f"\\textbf{{{text}}}" if r in bold[c] else text
            text += f" (n={cell.n})" if cell.n != usual else ""
            mark = self.marks.get((r, c))
            return text + (f"\\textsuperscript{{{latex_escape(mark)}}}" if mark else "")

        body = [[latex_escape(r)] + [cell(r, c) for c in self.columns] for r in self.rows]
        tabular = tabulate(body, headers=["method"] + [latex_escape(c) for c in self.columns],
                           tablefmt=_BOOKTABS, disable_numparse=True,
                           colalign=("left",) + ("right",) * len(self.columns))
        caption = latex_escape(self.title) + (f" (n = {usual} per cell)" if usual > 1 else "")
        return "\n".join(["\\begin{table}[t]", "\\centering", f"\\caption{{{caption}}}",
                          *([f"\\label{{{label}}}"] if label else []), tabular,
                          "\\end{table}"])

    def flat(self) -> list[dict]:
        """One row per cell: the row and column names and the cell in the table's units
        (`mean`, `std`; `text` for a text column), `n`, whether it is the column's best, its
        mark."""
        bold = {c: self.best(c) for c in self.columns}
        out = []
        for (r, c), cell in self.cells.items():
            spec = self.specs[c]
            scale = spec.scale if spec.kind == "num" else 1.0
            text = spec.kind == "text"
            out.append({"row": r, "column": c,
                        "mean": None if text else cell.mean * scale,
                        "std": None if text else cell.std * scale, "n": cell.n,
                        "text": _joined(cell) if text else None,
                        "best": r in bold[c], "mark": self.marks.get((r, c), "")})
        return out


def _joined(cell: Cell) -> str:
    """A text column's cell: its distinct values, a/b where the runs differ."""
    return "/".join(sorted(set(map(str, cell.values))))


def _mean_std(cell: Cell, spec: Spec, pm: str) -> str:
    """The mean at the column's scale and decimals, `pm` and the std where n > 1."""
    d, s = spec.decimals, spec.scale
    return f"{cell.mean * s:.{d}f}" + (f"{pm}{cell.std * s:.{d}f}" if cell.n > 1 else "")


def finite_number(v) -> float | None:
    """`v` as a float where it is a finite number (not a bool), else None."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def _latex_row(cells, colwidths, colaligns) -> str:
    return " & ".join(cells) + r" \\"


def _begin(colwidths, colaligns) -> str:
    spec = "".join({"right": "r", "center": "c"}.get(a, "l") for a in colaligns)
    return f"\\begin{{tabular}}{{{spec}}}\n\\toprule"


# tabulate's latex_booktabs escapes every cell, which would also escape the bold and the
# ± a cell needs: the same layout, with cells escaped here instead (`latex_escape`).
_BOOKTABS = TableFormat(lineabove=_begin, linebelowheader=Line("\\midrule", "", "", ""),
                        linebetweenrows=None,
                        linebelow=Line("\\bottomrule\n\\end{tabular}", "", "", ""),
                        headerrow=_latex_row, datarow=_latex_row, padding=1,
                        with_header_hide=None)
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}", "–": "--",
          "—": "---", "±": r"$\pm$", "·": r"$\cdot$", "−": "$-$", "×": r"$\times$",
          "≥": r"$\geq$", "≤": r"$\leq$", "λ": r"$\lambda$", "→": r"$\to$",
          "…": r"\ldots{}", "†": r"\dag{}", "‡": r"\ddag{}"}
_LATEX_SPECIAL = re.compile("|".join(map(re.escape, _LATEX)))


def latex_escape(text) -> str:
    """Text for a LaTeX cell or caption: specials escaped, the symbols ferbench writes
    spelled the LaTeX way (pdflatex has no glyph for a bare λ or −), newlines spaced."""
    return _LATEX_SPECIAL.sub(lambda m: _LATEX[m.group()], " ".join(str(text).split()))


def escape(text) -> str:
    """Markdown-safe text for a table cell or heading: specials backslashed, newlines spaced."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _human(v: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.2f} {unit}"
    return f"{v:.0f}"
