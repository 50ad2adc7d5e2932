"""The leaderboard: markdown tables built only from stored result files (plots: plots.py).

Runs are averaged only when they share everything but the training seed (docs/design.md
section 4): columns are protocols (one per noise file), rows are methods, one row
per config of a method, named by the config keys in which the configs differ.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from . import exports, noise_report, plots, significance
from .errors import DataError
from .record import RunRecord
from .results import check_writable, read_results, write_bytes
from .runkey import protocol_identity, variant_config
from .tables import PCT, PCT_ANY, TEXT, Cell, Spec, Table, escape, metric_spec
from .tables import finite_number as _num

GROUPING = (
    "runs are averaged only when they share everything but the training seed: the group is "
    "(dataset, protocol id with its parameters, noise file hash, method name, config hash). "
    "Runs on different noise files never share a cell: a protocol run on several noise files "
    "gets one column per file, suffixed with # and the file's hash; one protocol on several "
    "test sets (other dataset options) gets one column per test set, named by the options. "
    "A method with several config hashes gets one row per config, named by the config keys "
    "in which they differ (method.\\* and engine.\\* first, then data.\\*); keys named seed "
    "never name a variant. Runs on the folds of one k-fold split (a dataset option `fold`, "
    "as CK+'s `-o folds=10 -o fold=0`..`9`) share one column, named with the folds it holds, "
    "and one row; a detail table gives each fold.")
CELLS = (
    "mean ± sample standard deviation (ddof=1) over training seeds, n = number of seeds with "
    "the value (in a k-fold column: over every fold × seed run, n counting them); "
    "accuracies, F1, AUROC, precision, recall, memorisation and ECE in %. Bold: "
    "best in its column (lowest for ECE, NLL, Brier, KL and memorisation), none if all tie; "
    "noise-detection precision and recall are never bold, as each is at its method's own "
    "operating point (column at).")
WINS = (
    "†: the column's best row (bold) is significantly better than this cell. Test: one-sided "
    "paired hierarchical bootstrap of the difference in mean test accuracy (the training seeds "
    "both rows ran, resampled with replacement and paired by seed, then the test faces within "
    "each drawn seed, the same faces for both rows; per-face correctness from the runs' .npz "
    f"files), {significance.RESAMPLES:,} resamples, Holm-adjusted p < {significance.LEVEL} "
    "over the column's comparisons. A cell with n = 1, or with fewer than "
    f"{significance.MIN_SEEDS} seeds shared with the best, is never tested; a tie for best "
    "marks nothing.")
SAME_IMAGES = " (tested on its training images)"


def _fold(r: RunRecord) -> int | None:
    """The fold of a k-fold split a run was tested on (dataset option `fold` >= 0), else None."""
    fold = ((r.config.get("data") or {}).get("options") or {}).get("fold")
    ok = isinstance(fold, int) and not isinstance(fold, bool) and fold >= 0
    return fold if ok else None


def _without_fold(config: dict) -> dict:
    """`config` without its dataset option `fold`: what the runs on every fold share."""
    data = config.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("options"), dict):
        return config
    options = {k: v for k, v in data["options"].items() if k != "fold"}
    return {**config, "data": {**data, "options": options}}


def _unit(r: RunRecord):
    """What one run is in its cell: its seed, or its seed on its fold."""
    fold = _fold(r)
    return r.key.seed if fold is None else f"{r.key.seed} of fold {fold}"


def display_name(method: str, stored: dict | None = None) -> str:
    """How tables and figures name a method: the name its result file recorded, else the
    installed method's `display_name`, else its registered name."""
    name = (stored or {}).get("display_name")
    if isinstance(name, str) and name.strip():
        return name
    from .plugins import registry

    provided = registry().methods.get(method)
    return getattr(provided.obj, "display_name", None) or method if provided else method


def _field(r: RunRecord, path):
    """A record's field (`path[0]`), then keys down its nested mappings; None where absent."""
    value = getattr(r, path[0], None)
    for part in path[1:]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _get(*path, text: bool = False):
    """A getter for a nested record field: a finite number (a string with `text`), else None."""
    def get(r):
        value = _field(r, path)
        return (value if isinstance(value, str) else None) if text else _num(value)
    return get


def _shown(*path):
    """A getter for a nested record field shown as text (a number too), else None."""
    def get(r):
        value = _field(r, path)
        return None if value is None or isinstance(value, (dict, list)) else str(value)
    return get


def _weights_shown(r) -> str | None:
    """Which weights a run started from: the checkpoint files it loaded, or `random`, marked
    where its preset expects pretrained ones (a pretrained recipe run from scratch is another
    experiment). Records from before the preset said so show nothing, as before."""
    if "weights_expected" not in r.method:
        return None
    entries = [w for w in r.weights if isinstance(w, dict)]
    if any(w.get("init") == "random" for w in entries):
        return "random (preset expects pretrained)" if r.method["weights_expected"] else "random"
    return ", ".join(sorted({Path(str(w["file"])).name for w in entries if w.get("file")})) \
        or None


# What a row's figures cost: the same method at another budget is another row, and the
# reader should not have to open result files to see why two rows differ.
RUN = [("preset", _shown("method", "preset"), TEXT),
       ("backbone", _shown("config", "method", "backbone"), TEXT),
       ("image size", _shown("config", "method", "image_size"), TEXT),
       ("epochs", _shown("config", "method", "epochs"), TEXT),
       ("batch", _shown("config", "method", "batch_size"), TEXT),
       ("training faces", _shown("dataset", "n_train"), TEXT),
       ("device", _shown("device", "type"), TEXT),
       ("precision", _shown("precision"), TEXT),
       ("weights", _weights_shown, TEXT),
       ("wall time (s)", _get("wall_time_s"), Spec(1, 0, 0))]


def _metric(header: str, key: str, scale: float = 100.0, decimals: int = 2) -> tuple:
    """A column of the stored metric `key`, best the way ferbench.metrics says it is."""
    return header, key, metric_spec(key, scale, decimals)


# Per-protocol tables: (column header, metrics key or getter, Spec).
CALIBRATION = [_metric("ECE (%)", "test_ece"), _metric("NLL", "test_nll", 1, 3),
               _metric("Brier", "test_brier", 1, 4),
               _metric("rejection AUC (%)", "test_rejection_auc")]
# Precision and recall are taken at each method's own operating point (column "at": its own
# decisions, or the top k), so one method's cannot be ranked against another's: never bold.
NOISE = [_metric("AUROC (%)", "train_noise_auroc"),
         ("precision (%)", "train_noise_precision", PCT_ANY),
         ("recall (%)", "train_noise_recall", PCT_ANY),
         ("at", _get("metrics", "train_noise_at", text=True), TEXT),
         _metric("memorised (%)", "train_memorised"),
         _metric("corrected (%)", "train_corrected")]
AMBIGUITY = [_metric("KL to votes", "test_kl", 1, 3)] + [
    _metric(f"acc, {b} ambiguity (%)", f"test_acc_{b}_ambiguity") for b in ("low", "mid", "high")]
ENSEMBLE = [_metric("member acc (%)", "test_member_acc_mean"),
            _metric("worst member (%)", "test_member_acc_min"),
            _metric("best member (%)", "test_member_acc_max"),
            _metric("ensemble gain (%)", "test_ensemble_gain"),
            _metric("disagreement (%)", "test_member_disagreement")]
PER_PROTOCOL = {
    "folds": ("Test accuracy per fold, final epoch (%)", None),
    "calibration": ("Calibration and rejection", CALIBRATION),
    "noise": ("Noise detection and memorisation (training set, flipped samples)", NOISE),
    "ambiguity": ("KL to vote distributions and accuracy by ambiguity tertile", AMBIGUITY),
    "ensemble": ("Ensemble members", ENSEMBLE),
    "per_sample": ("Method per-sample figures on the training set, final epoch: flipped "
                   "against clean samples", None),
    "method_figures": ("Method figures (extra results, prediction extras, built "
                       "distributions' KL to the ground truth)", None),
    "per_class": ("Per-class test accuracy, final epoch (%)", None)}
# A method's own figures: shown as they are, bold only where ferbench knows their direction.
FIGURE = Spec(1, 3, 0)


def _flatten(d, prefix="") -> dict:
    """Dotted keys -> JSON text of the leaves; keys named `seed` are left out (never a variant)."""
    if not isinstance(d, dict):
        return {prefix[:-1]: json.dumps(d, sort_keys=True, default=str)} if prefix else {}
    return {k: v for key, sub in d.items() if key != "seed"
            for k, v in _flatten(sub, f"{prefix}{key}.").items()}


def _differing(flats: list) -> list:
    return [k for k in sorted(set().union(*flats)) if len({f.get(k) for f in flats}) > 1]


def _pairs(flat: dict, keys: list, most: int = 4) -> str:
    def short(v):   # JSON text; a string is shown without its quotes
        v = "unset" if v is None else json.loads(v) if isinstance(json.loads(v), str) else v
        return v if len(v) <= 24 else v[:23] + "…"
    parts = [f"{k}={short(flat.get(k))}" for k in keys[:most]]
    return ", ".join(parts + ["…"] * (len(keys) > most))


def _noise(p: dict) -> dict | None:
    return p["noise"] if isinstance(p.get("noise"), dict) else None


def _rate(p: dict) -> float | None:
    """Generated noise rate as a fraction (clean = 0), None for other protocols. The `noise`
    family's params.rate is in percent (noise30: 30.0); noise.rate is the realised fraction."""
    noise = _noise(p)
    if p.get("family") == "clean" and not noise:
        return 0.0
    if not noise or noise.get("source") != "generated":
        return None
    rate = _num((p.get("params") or {}).get("rate"))
    return _num(noise.get("rate")) if rate is None else rate / 100


def _col_order(p: dict, label: str):
    """clean, generated noise by rate, real noise (beside it), noise files, the rest (cross)."""
    rate = _rate(p)
    if rate is not None:
        return (0 if rate == 0 else 1, rate, label)
    source = (_noise(p) or {}).get("source")
    return ({"reference": 2, "file": 3}.get(source, 4), 0.0, label)


class _Board:
    """One dataset's records, assigned to columns (protocols) and rows (method variants)."""

    def __init__(self, records: list[RunRecord]):
        self.records, self.proto = records, {}
        self._col, self._row = {}, {}   # id(record) → its column, its row
        self.folds = {}   # a k-fold column → its folds
        self.columns, self.rows = self._columns(), self._rows()
        self.groups = defaultdict(list)
        for r in records:
            self.groups[self.col(r), self.row(r)].append(r)

    fold = staticmethod(_fold)

    def col(self, r: RunRecord) -> tuple:
        return self._col[id(r)]

    def row(self, r: RunRecord) -> tuple:
        return self._row[id(r)]

    def _columns(self) -> dict:
        by_id, data, folds, of_folds = defaultdict(list), {}, defaultdict(set), {}
        for r in self.records:
            # Accuracies on different test sets (other dataset options) never share a column,
            # but the folds of one k-fold split are one test set taken in turns.
            shared, fold = _without_fold(r.config), _fold(r)
            test_set = str((r.dataset.get("fingerprints") or {}).get("test", "")) \
                if fold is None else "folds " + json.dumps(shared.get("data"), sort_keys=True)
            col = self._col[id(r)] = (r.key.protocol, *protocol_identity(r.protocol), test_set)
            if fold is not None:
                folds[col].add(fold)
                of_folds[col] = ((shared.get("data") or {}).get("options") or {}).get("folds")
            if col not in self.proto:
                self.proto[col] = r.protocol
                data[col] = _flatten({"data": shared.get("data")})
                by_id[r.key.protocol].append(col)
        labels = {}
        for pid, keys in by_id.items():
            for key in keys:
                labels[key] = str(self.proto[key].get("label") or pid)
                if len({k[2] for k in keys}) > 1:
                    labels[key] += f" #{key[2][:6] or 'none'}"
                same = [_flatten(json.loads(k[1])) for k in keys if k[2] == key[2]]
                if len(set(map(json.dumps, same))) > 1:   # one noise file, other parameters
                    labels[key] += f" [{_pairs(_flatten(json.loads(key[1])), _differing(same))}]"
                tests = [k for k in keys if k[1:3] == key[1:3]]
                if len(tests) > 1:   # one protocol on several test sets
                    named = _pairs(data[key], _differing([data[k] for k in tests]))
                    labels[key] += f" [{named or 'test set ' + key[3][:6]}]"
                if folds[key]:
                    self.folds[key] = sorted(folds[key])
                    of = of_folds[key]
                    n = len(folds[key])
                    labels[key] += f" ({n} folds)" if n == of else f" ({n} of {of} folds)"
        # A one-split dataset: its "test" accuracy is a training figure.
        prints = [(self.col(r), r.dataset.get("fingerprints") or {}) for r in self.records]
        for key in {k for k, f in prints if f.get("train") and f["train"] == f.get("test")}:
            labels[key] += SAME_IMAGES
        return {k: labels[k] for k in sorted(labels, key=lambda k: _col_order(self.proto[k],
                                                                             labels[k]))}

    def _rows(self) -> dict:
        by_method = defaultdict(lambda: defaultdict(list))
        for r in self.records:
            by_method[r.key.method][r.key.config_hash].append(r)
        shown = {m: display_name(m, next(iter(h.values()))[0].method) for m, h in by_method.items()}
        if len(set(shown.values())) < len(shown):   # two methods share a display name
            shown = {m: m for m in shown}
        names = {}
        for method, hashes in by_method.items():
            # Hashes whose configs differ only in the protocol section and seed keys, and which
            # never hold one seed twice in a column, are one variant: runs sharing everything
            # but the training seed (robust to a config hash that covers protocol or seed).
            sig = {h: json.dumps(_flatten(_without_fold(variant_config(rs[0].config))),
                                 sort_keys=True) for h, rs in hashes.items()}
            for s in set(sig.values()):
                hs = sorted(h for h in hashes if sig[h] == s)
                runs = [c for h in hs for c in {(self.col(r), _unit(r)) for r in hashes[h]}]
                for h in hs:
                    for r in hashes[h]:
                        self._row[id(r)] = (method, hs[0] if len(runs) == len(set(runs)) else h)
            configs = {self.row(r): _without_fold(r.config) for rs in hashes.values() for r in rs}
            names.update(_variant_names(shown[method], configs))
        self.method_of = {name: row[0] for row, name in names.items()}
        return dict(sorted(names.items(), key=lambda kv: kv[1]))


def _variant_names(method: str, configs: dict) -> dict:
    """Row -> `method (key=value, ...)` over the keys in which the variants' configs differ
    (all but the protocol section), method.* and engine.* first."""
    if len(configs) == 1:
        return {row: method for row in configs}
    flat = {row: _flatten(variant_config(c)) for row, c in configs.items()}
    keys = sorted(_differing(list(flat.values())),
                  key=lambda k: (not k.startswith(("method.", "engine.")), k))
    names = {row: f"{method} ({_pairs(f, keys) or 'config ' + row[1]})" for row, f in flat.items()}
    if len(set(names.values())) < len(names):   # keys were cut short: add the config hash
        names = {row: f"{n[:-1]}, config {row[1]})" for row, n in names.items()}
    return names


def _grid(b: _Board, title: str, get, spec: Spec = PCT) -> Table | None:
    """Rows = methods, columns = protocols, one metric."""
    cells = {}
    for (col, row), recs in b.groups.items():
        values = [v for v in map(get, recs) if v is not None]
        if values:
            cells[b.rows[row], b.columns[col]] = Cell(values)
    return _table(title, list(b.rows.values()), list(b.columns.values()), cells,
                  dict.fromkeys(b.columns.values(), spec))


def _per_protocol(b: _Board, cols, title: str, metrics) -> Table | None:
    """Rows = methods, columns = metrics, over the runs in `cols` (one protocol, or all)."""
    cells = {}
    for row, name in b.rows.items():
        recs = [r for col in cols for r in b.groups.get((col, row), [])]
        for header, get, _ in metrics:
            get = _get("metrics", get) if isinstance(get, str) else get
            values = [v for v in map(get, recs) if v is not None]
            if values:
                cells[name, header] = Cell(values)
    return _table(title, list(b.rows.values()), [m[0] for m in metrics], cells,
                  {m[0]: m[2] for m in metrics})


def _table(title, rows, columns, cells, specs) -> Table | None:
    """A table without empty rows and columns; None when it has no cell at all."""
    rows = [r for r in rows if any((r, c) in cells for c in columns)]
    columns = [c for c in columns if any((r, c) in cells for r in rows)]
    return Table(title, rows, columns, cells, {c: specs[c] for c in columns}) if cells else None


def _tables(b: _Board) -> dict:
    metric = lambda key: _get("metrics", key)  # noqa: E731
    acc = metric_spec("test_acc")  # oracle, selected and per-class figures are accuracies too
    t = {"main": _mark_wins(b, _grid(b, "Test accuracy, final epoch (%)", metric("test_acc"),
                                     acc)),
         "majority": _majority(b),
         "runs": _per_protocol(b, list(b.columns), "What each row ran (over all its runs; "
                                                   "a/b: runs differ)", RUN),
         "oracle": _grid(b, "Oracle: best test-epoch accuracy (%), chosen on the test set; not "
                            "comparable with the final-epoch table", _get("oracle", "test_acc"),
                         acc),
         "selected": _grid(b, "Validation-selected test accuracy (%)",
                           _get("selected", "test_acc"), acc),
         "mean_class_acc": _grid(b, "Mean-class accuracy, final epoch (%)",
                                 metric("test_mean_class_acc"),
                                 metric_spec("test_mean_class_acc")),
         "macro_f1": _grid(b, "Macro-F1, final epoch (%)", metric("test_macro_f1"),
                           metric_spec("test_macro_f1"))}
    for name, (heading, metrics) in PER_PROTOCOL.items():
        t[name] = {}
        for col, label in b.columns.items():
            if (name == "noise" and not _noise(b.proto[col])) \
                    or (name == "folds" and col not in b.folds):
                continue
            if name == "folds":
                metrics = [(f"fold {k}", _on_fold(k), acc) for k in b.folds[col]]
            elif name == "per_class":
                recs = [r for r in b.records if b.col(r) == col]
                classes = dict.fromkeys(str(c) for r in recs for c in
                                        [*(r.dataset.get("classes") or []), *r.per_class])
                metrics = [(c, _get("per_class", c), acc) for c in classes]
            elif name == "per_sample":
                metrics = _per_sample_columns([r for r in b.records if b.col(r) == col])
            elif name == "method_figures":
                metrics = _figure_columns([r for r in b.records if b.col(r) == col])
            elif name == "noise":
                metrics = _noise_columns([r for r in b.records if b.col(r) == col])
            if metrics and (table := _per_protocol(b, [col], f"{heading}: {label}", metrics)):
                t[name][label] = table
    size = [("params", "params", metric_spec("params", kind="size")),
            ("FLOPs / image", "flops_per_image", metric_spec("flops_per_image", kind="size"))]
    t["size"] = _per_protocol(b, list(b.columns), "Model size (parameters, FLOPs per image)", size)
    return t


def _mark_wins(b: _Board, t: Table | None) -> Table | None:
    """`t` (test accuracy) with a dagger on each cell its column's best row beats
    significantly (significance.py) and a footnote saying how, and naming the comparisons
    that could not be tested."""
    if t is None:
        return None
    rows = {name: row for row, name in b.rows.items()}
    cols = {label: col for col, label in b.columns.items()}

    def seeds(label, name):   # the runs of the cell: seed -> their faces, or why none
        return {_unit(r): _faces(r, name) for r in b.groups[cols[label], rows[name]]
                if _num(r.metrics.get("test_acc")) is not None}

    untested = []
    for label in t.columns:
        best = t.best(label)
        top = next(iter(best), None)
        if len(best) != 1 or t.cell(top, label).n < significance.MIN_SEEDS:
            continue
        others = {name: seeds(label, name) for name in t.rows if name != top
                  and t.cell(name, label) and t.cell(name, label).n >= significance.MIN_SEEDS}
        for name, c in significance.compare_column(seeds(label, top), others).items():
            if c.significant:
                t.marks[name, label] = "†"
            elif not c.tested:
                untested.append(f"{escape(label)}: {escape(name)} ({escape(c.reason)})")
    t.footnote = WINS + (f" Not tested: {'; '.join(untested)}." if untested else "")
    return t


def _faces(r: RunRecord, name: str):
    """A run's test ids and per-face correctness (test_probs' most probable class among the
    scored ones against test_labels), from the .npz beside its result; else why not."""
    run = f"{name}, seed {r.key.seed}"
    try:
        with np.load(Path(r.path).with_suffix(".npz"), allow_pickle=False) as z:
            ids, probs, labels = z["test_ids"], z["test_probs"], z["test_labels"]
    except FileNotFoundError:
        return f"{run}: no .npz beside its result"
    except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile) as e:
        return f"{run}: unreadable .npz ({type(e).__name__})"
    if probs.ndim != 2 or not len(probs) == len(labels) == len(ids):
        return f"{run}: .npz arrays of unequal length"
    classes, scored = list(r.dataset.get("classes") or []), list(r.classes_scored or [])
    cols = [classes.index(c) for c in scored if c in classes]   # under cross, the shared ones
    if not cols or len(cols) != len(scored) or len(classes) != probs.shape[1]:
        cols = list(range(probs.shape[1]))
    cols = np.asarray(cols)
    correct = cols[probs[:, cols].argmax(1)] == labels
    if len(ids) and abs(correct.mean() - r.metrics["test_acc"]) > 0.5 / len(ids):
        return f"{run}: its .npz does not give its recorded test accuracy"
    return ids, correct


def _noise_columns(recs) -> list:
    """NOISE, with the name of the score each row's headline figures come from (a method's
    first `noise_scores`) and the AUROC of each further score a method returns (the floors
    beside its headline: `1-p(y)`, a kNN vote)."""
    others = dict.fromkeys(k[len("train_noise_auroc_"):] for r in recs for k in r.metrics
                           if k.startswith("train_noise_auroc_"))
    headline = ("score", lambda r: next(iter(r.noise_detection or {}), None), TEXT)
    return ([NOISE[0], headline, *NOISE[1:]]
            + [(f"AUROC of {n} (%)", f"train_noise_auroc_{n}",
                metric_spec("train_noise_auroc")) for n in others])


def _per_sample_columns(recs) -> list:
    """Per method array summarised by epoch: its final-epoch mean and median over flipped
    and over clean training samples."""
    names = dict.fromkeys(n for r in recs for n in (r.noise_summary_epochs or {}))
    return [(f"{n}: {group} {stat}", _last("noise_summary_epochs", n, group, key), FIGURE)
            for n in names for group in ("flipped", "clean")
            for stat, key in (("mean", "mean"), ("median", "q50"))]


def _on_fold(fold: int):
    """A getter for the test accuracy of a run on `fold`, else None."""
    return lambda r: _num(r.metrics.get("test_acc")) if _fold(r) == fold else None


def _last(*path):
    """A getter for the final value of a per-epoch series in a record, else None."""
    def get(r):
        series = _field(r, path)
        return _num(series[-1]) if isinstance(series, list) and series else None
    return get


def _figure_columns(recs) -> list:
    """Numbers a method adds: its prediction extras (`test_<name>`), the KL of the
    distributions it built (`train_<name>_kl`) and its `extra_results` (dotted keys)."""
    extras = dict.fromkeys(f"test_{k}" for r in recs for k in r.prediction_extras
                           if isinstance(k, str))
    built = dict.fromkeys(str(n) for r in recs for n in r.distributions)
    results = dict.fromkeys(k for r in recs for k in _numbers(r.method_results))
    return ([(key, key, metric_spec(key, 1, 3)) for key in extras]
            + [(f"{n}: KL to the ground truth", f"train_{n}_kl", metric_spec(f"train_{n}_kl", 1, 3))
               for n in built]
            + [(key, _result(key), FIGURE) for key in results if key not in extras])


def _result(key: str):
    """A getter for one number of a record's `method_results`, by its dotted key."""
    return lambda r: _numbers(r.method_results).get(key)


def _numbers(d, prefix="") -> dict:
    """Dotted keys → finite numbers of a nested mapping (lists and text left out)."""
    out = {}
    for k, v in (d.items() if isinstance(d, dict) else []):
        if isinstance(v, dict):
            out.update(_numbers(v, f"{prefix}{k}."))
        elif _num(v) is not None:
            out[f"{prefix}{k}"] = _num(v)
    return out


def _majority(b: _Board) -> dict:
    """Per column, the most frequent scored test class and its share: what a constant guess
    scores, the floor to read an accuracy against (CK+ as a cross target is two-thirds
    neutral)."""
    out = {}
    for col, label in b.columns.items():
        test_sets = {}   # one run per test set: per fold in a k-fold column, pooled
        for r in (r for r in b.records if b.col(r) == col):
            counts = np.asarray(r.confusion or [], dtype=float).sum(axis=1)
            names = r.classes_scored or r.dataset.get("classes") or []
            if len(counts) and counts.sum() and len(names) == len(counts):
                test_sets.setdefault(_fold(r), (tuple(map(str, names)), counts))
        if test_sets and len({names for names, _ in test_sets.values()}) == 1:
            names = next(iter(test_sets.values()))[0]
            counts = np.sum([c for _, c in test_sets.values()], axis=0)
            top = int(counts.argmax())
            out[label] = (names[top], float(counts[top] / counts.sum()))
    return out


def _noise_series(b: _Board) -> dict:
    """Per row, (rate, mean, std, n) of test_acc on clean and generated-noise columns."""
    series = defaultdict(list)
    for (col, row), recs in b.groups.items():
        values = [v for v in map(_get("metrics", "test_acc"), recs) if v is not None]
        if _rate(b.proto[col]) is not None and values:
            cell = Cell(values)
            series[b.rows[row]].append((_rate(b.proto[col]), cell.mean, cell.std, cell.n))
    return {n: series[n] for n in b.rows.values() if n in series}


def _noise_floor(b: _Board, majority: dict) -> tuple | None:
    """The constant guess under the accuracy-vs-noise plot: that of its clean column, else
    of its first generated-noise column (their test set is the same)."""
    cols = sorted((c for c in b.columns if _rate(b.proto[c]) is not None),
                  key=lambda c: _rate(b.proto[c]))
    return next((majority[b.columns[c]] for c in cols if b.columns[c] in majority), None)


def _label_noise(b: _Board, results_dir: Path) -> dict:
    """Per noisy column, what its noise file says: rate and transition (see noise_report)."""
    out = {}
    for col, label in b.columns.items():
        noise = _noise(b.proto[col])
        if noise:
            doc, why = noise_report.read_noise_file(results_dir, noise)
            out[label] = noise_report.summarise(doc) if doc else {"unavailable": why}
            held = (b.proto[col].get("record") or {}).get("val_fraction")
            if doc and held:  # the file covers the whole training split; runs train on less
                out[label]["trained"] = {"val_fraction": held, "n_train": noise.get("n_train"),
                                         "n_flipped": noise.get("n_flipped")}
    return out


def _load(results_dir: Path):
    """Usable records (one per run) and (path, reason) for every result file left out."""
    skipped: list = []
    found = read_results(results_dir, errors=skipped)
    skipped = [(str(p), why) for p, why in skipped]
    kept, seen = [], {}
    for data in found:
        try:
            r = RunRecord.from_json(data, data["_path"])
        except DataError as e:
            skipped.append((data["_path"], e.problem))
            continue
        ident = json.dumps([r.key.as_dict(), r.protocol.get("params"), _noise(r.protocol)],
                           sort_keys=True, default=str)
        if ident in seen:
            skipped.append((r.path, f"duplicate of run {seen[ident]}"))
        else:
            seen[ident] = r.path
            kept.append(r)
    return kept, skipped


def _section(dataset: str, tables: dict, pngs: list, out: Path) -> list:
    lines = [f"## {escape(dataset)}", ""]
    for name, t in tables.items():
        if name == "majority":
            same = defaultdict(list)  # columns on one test set are named together
            for label, (c, share) in t.items():
                same[c, f"{100 * share:.2f}"].append(escape(label))
            if same:
                lines += ["A constant guess of the most frequent test class scores: "
                          + "; ".join(f"{', '.join(labels)}: {escape(c)}, {pct} %"
                                      for (c, pct), labels in same.items()) + ".", ""]
        elif name == "label_noise":
            if t:
                lines += ["### Training labels under each noisy protocol", ""]
            for label, summary in t.items():
                lines += (noise_report.markdown(label, summary) if "unavailable" not in summary
                          else [f"#### {escape(label)}", "", escape(summary["unavailable"]), ""])
        elif isinstance(t, Table):
            lines += [f"### {escape(t.title)}", "", t.markdown(), ""]
            lines += [t.footnote, ""] if t.footnote else []
        elif t:
            lines += [f"### {escape(PER_PROTOCOL[name][0])}", ""]
            for label, table in t.items():
                lines += [f"#### {escape(label)}", "", table.markdown(), ""]
    if pngs:
        lines += ["### Plots", ""] + _figure_links(pngs, out)
    return lines


def _plots_of(md: Path) -> set:
    """The figures an earlier leaderboard.md in this folder links to, with their siblings
    in the other figure formats."""
    try:
        text = md.read_text()
    except (OSError, UnicodeDecodeError):
        return set()
    kinds = "|".join(exports.FIGURE_FORMATS)
    found = (md.parent / link for link in re.findall(rf"\]\(([^()\s]+\.(?:{kinds}))\)", text))
    return {p.resolve().with_suffix(f".{k}") for p in found
            if p.resolve().parent == md.parent.resolve() for k in exports.FIGURE_FORMATS}


def _figure_links(made: list, out: Path) -> list:
    """Markdown for each figure: the image itself in a format markdown shows (PNG, else
    SVG), and links to its other formats."""
    stems = defaultdict(list)
    for p in made:
        stems[p.with_suffix("")].append(p)
    lines = []
    for stem, paths in stems.items():
        shown = next((p for p in paths if p.suffix in (".png", ".svg")), None)
        rel = lambda p: p.relative_to(out).as_posix()  # noqa: E731
        others = [f"[{p.suffix[1:].upper()}]({rel(p)})" for p in paths if p is not shown]
        if shown is not None:
            lines += [f"![{escape(stem.name)}]({rel(shown)})"
                      + (f" ({', '.join(others)})" if others else ""), ""]
        else:
            lines += [f"- {escape(stem.name)}: {', '.join(others)}"]
    return lines + ([""] if lines and lines[-1] else [])


def build_leaderboard(results_dir, out_dir=None, *, with_plots: bool = True,
                      formats=("md",), figure_formats=("png",)) -> dict:
    """Write the leaderboard into `out_dir` (default: `results_dir`): `leaderboard.md`,
    `.csv`, `.jsonl` and `.tex` as `formats` asks (exports.py), the runs index `runs.csv`
    (and `runs.jsonl` with jsonl) always, and its figures in each of `figure_formats`.

    Returns ``{"markdown": path or None, "files": [paths], "plots": [paths], "tables":
    {dataset: {name: ...}}, "n_read": int, "skipped": [(path, reason)]}``. Per dataset,
    main, runs, oracle, selected, mean_class_acc, macro_f1 and size are a Table (None where
    no run has the figure), main with its significance marks (`marks`, `footnote`:
    significance.py);
    folds, calibration, noise, ambiguity, ensemble, per_sample, method_figures and per_class
    map a protocol label to a Table;
    label_noise maps a noisy protocol's label to its noise file's summary (noise_report);
    majority maps a protocol's label to (its most frequent test class, that class's share).
    Cells hold raw values (fractions), so the arithmetic can be checked.
    """
    results_dir = Path(results_dir)
    records, skipped = _load(results_dir)  # refuses a missing folder before anything is written
    out = check_writable(out_dir if out_dir is not None else results_dir)
    by_dataset = defaultdict(list)
    for r in records:
        by_dataset[r.key.dataset].append(r)
    note = f" ({len(skipped)} skipped, listed at the end)" if skipped else ""
    lines = ["# ferbench leaderboard", "",
             f"Read {len(records)} result files from {escape(results_dir)}{note}.", "",
             f"Grouping: {GROUPING}", "", f"Cells: {CELLS}", ""]
    tables, boards, pngs, used = {}, {}, [], set()
    for dataset in sorted(by_dataset):
        b = boards[dataset] = _Board(by_dataset[dataset])
        t = _tables(b)
        at = list(t).index("noise") + 1  # the labels' account right after their detection table
        items = list(t.items())
        tables[dataset] = dict(items[:at] + [("label_noise", _label_noise(b, results_dir))]
                               + items[at:])
        columns = [(label, [(name, b.groups[col, row]) for row, name in b.rows.items()
                            if (col, row) in b.groups]) for col, label in b.columns.items()]
        made = plots.draw_dataset(out, dataset, columns, _noise_series(b), used,
                                  _noise_floor(b, t["majority"]), figure_formats) \
            if with_plots else []
        pngs += made
        lines += _section(dataset, tables[dataset], made, out)
    if not records:
        lines += ["No results found.", ""]
    if skipped:
        lines += ["## Skipped files", ""]
        lines += [f"- {escape(p)}: {escape(why)}" for p, why in skipped] + [""]
    files = _write_exports(out, tables, boards, formats)
    md = None
    if "md" in formats:
        md = out / "leaderboard.md"
        stale = _plots_of(md) - {p.resolve() for p in pngs}
        write_bytes(md, "\n".join(lines).encode())
        for p in stale:  # the previous leaderboard's figures that this one did not redraw
            p.unlink(missing_ok=True)
        files.insert(0, md)
    return {"markdown": md, "files": files, "plots": pngs, "tables": tables,
            "n_read": len(records), "skipped": skipped}


def _write_exports(out: Path, tables: dict, boards: dict, formats) -> list:
    """The flat and LaTeX forms of the tables, and the runs index; the paths written."""
    method_of = {d: b.method_of for d, b in boards.items()}
    written = []
    runs = exports.run_rows(boards, out)
    exports.write_csv(out / "runs.csv", runs, exports.RUN_FIELDS)
    written.append(out / "runs.csv")
    if "jsonl" in formats:
        exports.write_jsonl(out / "runs.jsonl", runs)
        written.append(out / "runs.jsonl")
    cells = exports.cell_rows(tables, method_of) if {"csv", "jsonl"} & set(formats) else []
    if "csv" in formats:
        exports.write_csv(out / "leaderboard.csv", cells, exports.CELL_FIELDS)
        written.append(out / "leaderboard.csv")
    if "jsonl" in formats:
        exports.write_jsonl(out / "leaderboard.jsonl", cells)
        written.append(out / "leaderboard.jsonl")
    if "latex" in formats:
        write_bytes(out / "leaderboard.tex", exports.latex_document(tables).encode())
        written.append(out / "leaderboard.tex")
    return written
