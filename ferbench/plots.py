"""Figures for the leaderboard (PNG, and PDF or SVG for a paper), drawn from pieces of
stored result records.

Each function draws one figure and writes it atomically (temporary name, then
rename), once per format asked for, and returns the paths in that order. Titles
that would run past the figure's edge are wrapped to fit before it is written.
Figures are built on matplotlib's Agg canvas directly, without pyplot,
so no global backend or figure state is touched. The inputs are the record
fields named in docs/results.md (`confusion`, `reliability`, `rejection_curve`,
`noise_summary_epochs`) gathered per method, one entry per seed; pooling over
seeds happens here.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
import warnings
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .metrics import ece_from_bins
from .results import write_bytes

MAX_PANELS = 12   # confusion matrices per grid figure; more are cut and the title says so
DPI = 110
# No creation date in a PDF or SVG: the same results give the same bytes.
_METADATA = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}
_MARKERS = "osD^vP*Xh<>p"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _text(s, width: int | None = None) -> str:
    """Plain text for matplotlib: `$` would start mathtext; newlines would break layouts."""
    s = " ".join(str(s).split()).replace("$", r"\$")
    return "\n".join(textwrap.wrap(s, width)) if width else s


def _title_chars(fig: Figure) -> int:
    """How many characters of a 10-point title fit across `fig` (about 12 per inch)."""
    return max(30, int(12 * fig.get_figwidth()))


def _titles(fig: Figure) -> list:
    # A figure's own texts hold its suptitle.
    return [t for t in [*fig.texts, *(ax.title for ax in fig.axes)]
            if t.get_visible() and t.get_text()]


def _fit_titles(fig: Figure) -> None:
    """Rewrap each title that runs past the figure's left or right edge, from its measured
    width: a character count per inch guesses wrong for wide glyphs and long names."""
    for _ in range(3):
        fig.canvas.draw()   # lays the figure out (constrained layout) and measures its text
        renderer, width = fig.canvas.get_renderer(), fig.bbox.width
        over = False
        for t in _titles(fig):
            box = t.get_window_extent(renderer)
            if box.x0 >= 0 and box.x1 <= width:
                continue
            room = 2 * min(box.x0 + box.width / 2, width - box.x0 - box.width / 2) * 0.95
            lines = t.get_text().split("\n")
            chars = max(len(line) for line in lines)
            fit = max(12, int(chars * max(room, 1.0) / box.width))
            t.set_text("\n".join(textwrap.wrap(" ".join(" ".join(lines).split()), fit)))
            over = True
        if not over:
            return


def _save(fig: Figure, path, formats=("png",)) -> list[Path]:
    """`path` (its suffix replaced) in each of `formats`; the paths in that order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _fit_titles(fig)
    out = []
    for fmt in formats:
        buf = io.BytesIO()
        # Fonts stay text in an SVG, so a reader can search and restyle it.
        with matplotlib.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):
            fig.savefig(buf, format=fmt, dpi=DPI, metadata=_METADATA.get(fmt))
        target = path.with_suffix(f".{fmt}")
        write_bytes(target, buf.getvalue())
        out.append(target)
    return out


def _style(i: int, n: int) -> dict:
    cmap = matplotlib.colormaps["tab20" if n > 10 else "tab10"]
    return {"color": cmap(i % cmap.N), "marker": _MARKERS[i % len(_MARKERS)]}


def _legend(ax, n: int) -> None:
    if n > 6:  # many methods: keep the plot area free
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    elif n:
        ax.legend(fontsize=8)


def _floats(values) -> np.ndarray:
    """A float array from a JSON list; anything that is not a number becomes NaN."""
    ok = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    values = values if isinstance(values, list) else []
    return np.array([float(v) if ok(v) else np.nan for v in values], dtype=np.float64)


def _square(m) -> np.ndarray | None:
    try:
        a = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError):   # ragged or non-numeric
        return None
    return a if a.ndim == 2 and a.shape[0] == a.shape[1] and a.size else None


def confusion_grid(path, title: str, panels, formats=("png",)) -> list[Path]:
    """A grid of row-normalised confusion matrices, one panel per method, annotated in %.

    `panels` is a list of ``(name, matrices, classes)``: the per-seed K x K count
    matrices (rows true, columns predicted) are summed before normalising, so the
    panel is the seeds' pooled confusion. At most `MAX_PANELS` panels are drawn.
    """
    shown = list(panels)[:MAX_PANELS]
    if not shown:
        raise ValueError("confusion_grid needs at least one panel")
    ncols = min(4, math.ceil(math.sqrt(len(shown))))
    nrows = math.ceil(len(shown) / ncols)
    k = max(np.asarray(m[0]).shape[0] for _, m, _ in shown)
    side = max(2.8, 0.3 * k + 1.4)
    fig = _figure(side * ncols, side * nrows + 0.5)
    fig.get_layout_engine().set(h_pad=0.1, w_pad=0.1)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (name, mats, classes) in zip(axes.flat, shown):
        counts = np.sum([np.asarray(m, dtype=np.float64) for m in mats], axis=0)
        support = counts.sum(axis=1, keepdims=True)
        norm = np.divide(counts, support, out=np.zeros_like(counts), where=support > 0)
        n = norm.shape[0]
        names = [_text(c) for c in classes] if len(classes) == n else [str(i) for i in range(n)]
        ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
        size = 7 if n <= 8 else 5
        for i in range(n):
            for j in range(n):
                if support[i, 0] > 0:
                    ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center",
                            fontsize=size, color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        seeds = "1 seed" if len(mats) == 1 else f"{len(mats)} seeds pooled"
        ax.set_title(f"{_text(name, 40)}\n({seeds})", fontsize=8)
    for ax in axes.flat[len(shown):]:
        ax.axis("off")
    cut = f" (first {MAX_PANELS} of {len(panels)} methods)" if len(panels) > MAX_PANELS else ""
    fig.suptitle(_text(f"{title}: confusion matrices, % of each true class{cut}",
                       _title_chars(fig)), fontsize=10)
    return _save(fig, path, formats)


def _pool_reliability(bins: list[dict]):
    """Per-bin confidence and accuracy pooled over seeds (weighted by bin counts), the mean
    count per seed, and each bin's centre; empty bins left out."""
    runs = [[_floats(b.get(f)) for f in ("count", "confidence", "accuracy")] for b in bins]
    ref = len(runs[0][0])
    runs = [r for r in runs if all(len(a) == ref for a in r)]
    count = np.sum([np.nan_to_num(c) for c, _, _ in runs], axis=0)
    conf = np.sum([np.nan_to_num(f) * np.nan_to_num(c) for c, f, _ in runs], axis=0)
    acc = np.sum([np.nan_to_num(a) * np.nan_to_num(c) for c, _, a in runs], axis=0)
    edges = _floats(bins[0].get("edges"))
    centres = (edges[:-1] + edges[1:]) / 2 if len(edges) == ref + 1 \
        else (np.arange(ref) + 0.5) / max(ref, 1)
    keep = count > 0
    return (conf[keep] / count[keep], acc[keep] / count[keep], count[keep] / len(runs),
            centres[keep])


def reliability_diagram(path, title: str, curves: dict, formats=("png",)) -> list[Path]:
    """Accuracy against confidence per bin, one line per method, with the diagonal; each
    method's ECE (mean over seeds) in its legend entry, and below, how many test faces fall
    in each bin (mean per seed, log scale), so a reader sees which points rest on few faces.

    `curves` maps a method name to its per-seed `reliability` dicts
    (``edges``, ``confidence``, ``accuracy``, ``count`` per bin); empty bins are left out.
    """
    fig = _figure(7.5 if len(curves) > 6 else 5.8, 6.4)
    ax, counts = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    for i, (name, bins) in enumerate(curves.items()):
        conf, acc, per_bin, centres = _pool_reliability(bins)
        if not len(conf):
            continue
        eces = [e for e in map(ece_from_bins, bins) if e is not None]
        ece = f" · ECE {100 * np.mean(eces):.1f} %" if eces else ""
        style = _style(i, len(curves))
        ax.plot(conf, acc, lw=1.5, ms=4, label=_text(name, 40) + ece, **style)
        counts.plot(centres, per_bin, lw=1, ms=3, color=style["color"],
                    marker=style["marker"])
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy in bin")
    ax.set_title(_text(f"{title}: reliability diagram"), fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, len(curves) + 1)
    counts.set(xlabel="confidence (mean max probability in bin)", ylabel="faces in bin")
    counts.set_yscale("log")
    counts.grid(alpha=0.3)
    return _save(fig, path, formats)


def accuracy_vs_noise(path, title: str, series: dict, floor: tuple | None = None,
                      formats=("png",)) -> list[Path]:
    """Mean test accuracy against the generated noise rate, one line per method, std as
    error bars and each point's n beside it; `floor` (class, share) draws what a constant
    guess of the most frequent test class scores.

    `series` maps a method name to ``[(rate, mean, std, n), ...]`` with the rate a
    fraction (clean = 0) and mean/std fractions; points are drawn in rate order.
    """
    fig = _figure(7.5 if len(series) > 6 else 6.2, 4.8)
    ax = fig.subplots()
    rates = set()
    for i, (name, points) in enumerate(series.items()):
        pts = sorted(points, key=lambda p: p[0])
        x, y, e = (np.array([p[j] for p in pts], dtype=np.float64) * 100 for j in range(3))
        rates.update(x.tolist())
        style = _style(i, len(series))
        ax.errorbar(x, y, yerr=e, capsize=3, lw=1.5, ms=5, label=_text(name, 40), **style)
        for xi, yi, p in zip(x, y, pts):
            ax.annotate(f"n={p[3]}", (xi, yi), xytext=(4, 4), textcoords="offset points",
                        fontsize=6, color=style["color"])
    if floor is not None:
        ax.axhline(100 * floor[1], color="grey", ls=":", lw=1.2,
                   label=_text(f"constant guess ({floor[0]})", 40))
    ax.set_xticks(sorted(rates))
    ax.set(xlabel="generated label noise rate (%)", ylabel="test accuracy, final epoch (%)")
    ax.set_title(_text(f"{title}: accuracy vs noise (mean ± std over seeds)"), fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, len(series) + (floor is not None))
    return _save(fig, path, formats)


def rejection_curves(path, title: str, curves: dict, formats=("png",)) -> list[Path]:
    """Accuracy on the most certain share of the test set against that share, one line per method.

    `curves` maps a method name to its per-seed `rejection_curve` dicts
    (``coverage``, ``accuracy``); seeds with the first seed's coverage grid are averaged.
    """
    fig = _figure(7.5 if len(curves) > 6 else 5.8, 4.8)
    ax = fig.subplots()
    for i, (name, runs) in enumerate(curves.items()):
        cov = _floats(runs[0].get("coverage"))
        accs = [_floats(r.get("accuracy")) for r in runs]
        accs = [a for a, r in zip(accs, runs)
                if len(a) == len(cov) == len(_floats(r.get("coverage")))]
        if not len(cov) or not accs:
            continue
        with warnings.catch_warnings():   # a coverage with no finite accuracy stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(accs, axis=0)
        ax.plot(cov * 100, mean * 100, lw=1.5, ms=3,
                label=_text(name, 40), **_style(i, len(curves)))
    ax.set(xlim=(0, 100), xlabel="coverage: share of test samples kept, most certain first (%)",
           ylabel="accuracy on kept samples (%)")
    ax.set_title(_text(f"{title}: rejection curves"), fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, len(curves))
    return _save(fig, path, formats)


_GROUPS = (("flipped", "-", "tab:red"), ("clean", "--", "tab:blue"))


def _per_sample_band(runs: list, group: str):
    """Epochs, and the mean over seeds of one group's mean, 25 % and 75 % per epoch (seeds
    with the first seed's epochs); None where no seed has the group."""
    epochs = _floats(runs[0].get("epoch"))
    stats = {stat: [_floats((r.get(group) or {}).get(stat)) for r in runs
                    if len(_floats(r.get("epoch"))) == len(epochs)]
             for stat in ("mean", "q25", "q75")}
    if not len(epochs) or not all(len(v) == len(epochs) for vs in stats.values() for v in vs):
        return None
    with warnings.catch_warnings():   # an epoch without values (an empty group) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return (epochs, *(np.nanmean(stats[k], axis=0) for k in ("mean", "q25", "q75")))


def per_sample_curves(path, title: str, array: str, curves: dict, formats=("png",)) -> list[Path]:
    """A method's per-sample figure over epochs, one panel per method row: flipped (solid)
    against clean (dashed) training samples, the mean over seeds of each group's mean with
    the band between its quartiles (25-75 %). `curves` maps a method name to its per-seed
    series (the record's `noise_summary_epochs[array]`). At most `MAX_PANELS` panels."""
    shown = list(curves.items())[:MAX_PANELS]
    if not shown:
        raise ValueError("per_sample_curves needs at least one method")
    ncols = min(3, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig = _figure(4.2 * ncols, 3.2 * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for ax, (name, runs) in zip(axes.flat, shown):
        for group, line, color in _GROUPS:
            band = _per_sample_band(runs, group)
            if band is None:
                continue
            epochs, mean, lo, hi = band
            ax.plot(epochs, mean, color=color, ls=line, lw=1.5, label=group)
            ax.fill_between(epochs, lo, hi, color=color, alpha=0.2, lw=0)
        seeds = "1 seed" if len(runs) == 1 else f"{len(runs)} seeds"
        ax.set_title(f"{_text(name, 40)}\n({seeds})", fontsize=8)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel(_text(array, 30), fontsize=8)
    for ax in axes.flat[len(shown):]:
        ax.axis("off")
    cut = f" (first {MAX_PANELS} of {len(curves)} methods)" if len(curves) > MAX_PANELS else ""
    fig.suptitle(_text(f"{title}: {array} over epochs, flipped against clean training samples "
                       f"(mean; band: 25-75 %){cut}", _title_chars(fig)), fontsize=10)
    return _save(fig, path, formats)


def draw_dataset(out, dataset: str, columns, noise_series: dict, used: set,
                 floor: tuple | None = None, formats=("png",)) -> list[Path]:
    """Every plot of one dataset into `out`, each in every one of `formats`; returns the
    paths written.

    `columns` is ``[(protocol label, [(method name, [records of its seeds]), ...]), ...]``
    in display order; `noise_series` is `accuracy_vs_noise`'s input, drawn for the methods
    with two or more noise rates (clean counts as rate 0), with `floor` as its constant
    guess. `used` holds file stems already taken and grows.
    """
    def path(*parts):
        stem = "-".join(re.sub(r"[^A-Za-z0-9.=+-]+", "_", p).strip("_.") or "x" for p in parts)
        name, i = stem, 1
        while name in used:
            i += 1
            name = f"{stem}-{i}"
        used.add(name)
        return Path(out) / f"{name}.{formats[0]}"

    made = []
    for label, per_row in columns:
        title = f"{dataset} · {label}"
        panels = []
        for name, recs in per_row:
            mats = [m for m in (_square(r.confusion) for r in recs) if m is not None]
            mats = [m for m in mats if m.shape == mats[0].shape]
            if mats:
                panels.append((name, mats, recs[0].dataset.get("classes") or []))
        if panels:
            made += confusion_grid(path(dataset, label, "confusion"), title, panels, formats)
        for field, draw, kind in (("reliability", reliability_diagram, "reliability"),
                                  ("rejection_curve", rejection_curves, "rejection")):
            curves = {n: [getattr(r, field) for r in recs if isinstance(getattr(r, field), dict)]
                      for n, recs in per_row}
            curves = {n: c for n, c in curves.items() if c}
            if curves:
                made += draw(path(dataset, label, kind), title, curves, formats)
        arrays = dict.fromkeys(a for _, recs in per_row for r in recs
                               for a in (r.noise_summary_epochs or {}))
        for array in arrays:
            curves = {n: [r.noise_summary_epochs[array] for r in recs
                          if isinstance((r.noise_summary_epochs or {}).get(array), dict)]
                      for n, recs in per_row}
            curves = {n: c for n, c in curves.items() if c}
            if curves:
                made += per_sample_curves(path(dataset, label, array), title, array, curves,
                                          formats)
    lines = {n: pts for n, pts in noise_series.items() if len({p[0] for p in pts}) >= 2}
    if lines:
        made += accuracy_vs_noise(path(dataset, "accuracy_vs_noise"), dataset, lines, floor,
                                  formats)
    return made
