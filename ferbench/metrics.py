"""Scores computed from a run's predictions: accuracy, calibration, KL, rejection, noise.

Pure functions on numpy arrays. `probs` are [N, K] class probabilities over the run's
classes and `labels` are [N] ints in 0..K-1 (the run's order, not canonical indices).
Keys are lowercase snake_case without a split; the caller prefixes it (`test_acc`).
A value that is undefined on the given data (no flips, one class only) is None, never
NaN, so result files stay strict JSON. `HIGHER_IS_BETTER` says which way each stored
key is better; scipy and scikit-learn are imported inside the functions that use them,
so the leaderboard reads the directions without loading them (about 0.7 s).
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-12
VOTE_COLUMNS = 8  # FERPlus votes: 8 emotions in canonical order, then unknown and NF

# Which way each key of a result's `metrics` is better, beside the code that computes it
# (lm-evaluation-harness keeps `higher_is_better` with each metric the same way): True
# higher, False lower, None neither. Whoever ranks results (the leaderboard's bold) reads
# it here. None is for figures that are not scores: costs of the model, a speed that is
# the machine's as much as the method's, a diversity that is neither good nor bad, and
# the text naming where precision and recall were taken.
HIGHER_IS_BETTER: dict[str, bool | None] = {
    "test_acc": True, "test_mean_class_acc": True, "test_macro_f1": True,
    "test_ece": False, "test_nll": False, "test_brier": False,
    "test_kl": False,
    "test_acc_low_ambiguity": True, "test_acc_mid_ambiguity": True,
    "test_acc_high_ambiguity": True,
    "test_rejection_auc": True,  # mean accuracy over coverages, not AURC's risk
    "params": None, "flops_per_image": None, "train_images_per_s": None,
    "train_memorised": False, "train_corrected": True,
    "train_noise_auroc": True, "train_noise_precision": True, "train_noise_recall": True,
    "train_noise_at": None,
    "test_member_acc_mean": True, "test_ensemble_gain": True,
    "test_member_disagreement": None,
    "test_member_acc_min": True, "test_member_acc_max": True,
}
# `train_noise_auroc_<score>`: the AUROC of a method's further noise scores.
# `train_<array>_kl`: KL from the ground truth to a method's per-sample distributions.
_PREFIXES = {"train_noise_auroc_": True}
_SUFFIXES = {"_kl": False}


def higher_is_better(key: str) -> bool | None:
    """Whether a higher value of the stored metric `key` is better (None: neither, or a key
    a method adds whose direction ferbench does not know)."""
    if key in HIGHER_IS_BETTER:
        return HIGHER_IS_BETTER[key]
    found = next((v for prefix, v in _PREFIXES.items() if key.startswith(prefix)), None)
    if found is None and key.startswith("train_"):
        found = next((v for suffix, v in _SUFFIXES.items() if key.endswith(suffix)), None)
    return found


def _check(probs, labels):
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2 or labels.ndim != 1 or len(probs) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"need probs [N, K] and labels [N] with N > 0, got {probs.shape} and {labels.shape}")
    if not np.isfinite(probs).all():
        raise ValueError("probs contain NaN or infinity")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must lie in 0..{probs.shape[1] - 1}")
    return probs, labels.astype(np.int64)


def _finite(name, values, n):
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contain NaN or infinity")
    return values


def _share(num, den):
    return None if den == 0 else float(num / den)


def _top_hits(key, hits, n):
    """Expected number of hits among the n smallest keys when ties are ordered at random."""
    # Ties are shared out by their mean instead of broken by sample order: quantised
    # scores (ensemble votes, a constant score) would otherwise rank by dataset order.
    order = np.argsort(key, kind="stable")
    _, start, count = np.unique(key[order], return_index=True, return_counts=True)
    cum = np.concatenate([[0.0], np.cumsum(hits[order], dtype=np.float64)])
    n = np.asarray(n, dtype=np.int64)
    g = np.searchsorted(start, n - 1, side="right") - 1  # the tie group holding the n-th item
    s, c = start[g], count[g]
    return cum[s] + (n - s) * (cum[s + c] - cum[s]) / c


def reliability(probs, labels, n_bins: int = 15) -> dict:
    """Per-bin confidence, accuracy and count over equal-width bins of the max probability."""
    probs, labels = _check(probs, labels)
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bins are (lo, hi] as in Guo et al. 2017 ("On Calibration of Modern Neural Networks").
    idx = np.searchsorted(edges[1:-1], conf, side="left")
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    return {
        "edges": edges.tolist(),
        "confidence": [_share(a, c) for a, c in zip(conf_sum, count)],
        "accuracy": [_share(a, c) for a, c in zip(acc_sum, count)],
        "count": count.tolist(),
    }


def ece_from_bins(rel: dict) -> float | None:
    """Expected calibration error from `reliability`'s bins (a stored record's too, where
    empty bins hold null): the count-weighted mean gap between accuracy and confidence;
    None where no bin counts a sample."""
    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    bins = [(a, f, c) for a, f, c in zip(rel.get("accuracy") or [], rel.get("confidence") or [],
                                         rel.get("count") or [])
            if number(c) and c > 0 and number(a) and number(f)]
    n = sum(c for _, _, c in bins)
    return float(sum(c / n * abs(a - f) for a, f, c in bins)) if n else None


def classification_metrics(probs, labels, n_bins: int = 15) -> dict:
    """Accuracy, mean-class accuracy, macro-F1, confusion, ECE, NLL, Brier, per-class accuracy.

    `mean_class_acc` and `macro_f1` average over the classes present in `labels` only: a
    class absent from the test set has no recall, and giving it F1 = 0 would punish a
    method for the split. Predictions of an absent class still count against precision.
    `per_class_acc` is None for absent classes. ECE uses `n_bins` equal-width bins.
    """
    from sklearn.metrics import confusion_matrix, f1_score

    probs, labels = _check(probs, labels)
    n, k = probs.shape
    preds = probs.argmax(axis=1)
    cm = confusion_matrix(labels, preds, labels=np.arange(k))
    support = cm.sum(axis=1)
    present = np.flatnonzero(support)
    per_class = [_share(cm[i, i], support[i]) for i in range(k)]
    ece = ece_from_bins(reliability(probs, labels, n_bins))
    onehot = np.eye(k)[labels]
    return {
        "acc": float(np.mean(preds == labels)),
        "mean_class_acc": float(np.mean(np.diag(cm)[present] / support[present])),
        "macro_f1": float(
            f1_score(labels, preds, labels=present, average="macro", zero_division=0)),
        "confusion": cm.tolist(),
        "ece": float(ece),
        "nll": float(np.mean(-np.log(np.clip(probs[np.arange(n), labels], EPS, None)))),
        "brier": float(np.mean(np.sum((probs - onehot) ** 2, axis=1))),
        "per_class_acc": per_class,
    }


def votes_to_distribution(votes, class_columns) -> np.ndarray:
    """FERPlus vote rows → normalised distributions over the run's classes (NaN rows if none).

    `votes` is [N, 10] (neutral, happiness, surprise, sadness, anger, disgust, fear,
    contempt, unknown, NF) or [N, 8]; unknown and NF are dropped. `class_columns` are the
    canonical indices (0..7) of the run's classes, in the run's order. A face with no vote
    for any of those classes gets a NaN row, which the KL and ambiguity metrics skip.
    """
    votes = np.asarray(votes, dtype=np.float64)
    cols = np.asarray(class_columns, dtype=np.int64)
    if votes.ndim != 2 or votes.shape[1] not in (VOTE_COLUMNS, VOTE_COLUMNS + 2):
        raise ValueError(f"votes must be [N, 10] or [N, 8], got {votes.shape}")
    if cols.ndim != 1 or len(cols) == 0 or cols.min() < 0 or cols.max() >= VOTE_COLUMNS:
        raise ValueError(f"class_columns must be canonical indices in 0..7, got {list(cols)}")
    sel = votes[:, cols]
    total = sel.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, sel / total, np.nan)


def _distributions(target, k):
    """Row-normalised target and the mask of rows that carry mass."""
    target = np.asarray(target, dtype=np.float64)
    if target.ndim != 2 or target.shape[1] != k:
        raise ValueError(f"distributions must be [N, {k}], got {target.shape}")
    total = target.sum(axis=1)
    valid = np.isfinite(total) & (total > 0)
    if (target[valid] < 0).any():
        raise ValueError("distributions must be non-negative")
    out = np.zeros_like(target)
    out[valid] = target[valid] / total[valid, None]
    return out, valid


def kl_to_distribution(target, probs) -> float | None:
    """Mean KL(target ‖ probs) over rows whose target has mass; None if no row has any.

    Target rows (counts are fine) are normalised first; NaN or all-zero rows are skipped.
    Probabilities are clipped at 1e-12 so a zero prediction gives a large, finite term.
    """
    from scipy.special import rel_entr

    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != len(target):
        raise ValueError(f"probs must be [N, K] matching target, got {probs.shape}")
    t, valid = _distributions(target, probs.shape[1])
    if not valid.any():
        return None
    kl = rel_entr(t[valid], np.clip(probs[valid], EPS, None)).sum(axis=1)
    return float(kl.mean())


def accuracy_by_ambiguity(probs, labels, distributions) -> dict:
    """Accuracy and count in low / mid / high tertiles of the vote-distribution entropy.

    Entropy (nats) of each normalised row; rows without mass are skipped. Thresholds are
    np.quantile at 1/3 and 2/3: low is H <= q1, mid q1 < H <= q2, high H > q2, so ties
    (many faces have unanimous votes, H = 0) all go to the lower tertile.
    """
    from scipy.stats import entropy

    probs, labels = _check(probs, labels)
    d, valid = _distributions(distributions, probs.shape[1])
    out = {"thresholds": None}
    if not valid.any():
        return out | {f"{t}_{m}": (None if m == "acc" else 0) for t in ("low", "mid", "high")
                      for m in ("acc", "count")}
    h = entropy(d[valid], axis=1)
    correct = (probs.argmax(axis=1) == labels)[valid]
    q1, q2 = np.quantile(h, [1 / 3, 2 / 3])
    out["thresholds"] = [float(q1), float(q2)]
    for name, mask in (("low", h <= q1), ("mid", (h > q1) & (h <= q2)), ("high", h > q2)):
        out[f"{name}_acc"] = _share(correct[mask].sum(), mask.sum())
        out[f"{name}_count"] = int(mask.sum())
    return out


def rejection_curve(probs, labels, uncertainty=None, points: int = 20) -> dict:
    """Accuracy on the most certain share of samples at coverages 1/points .. 1.

    Samples are ordered by `uncertainty` (default 1 - max probability), ties shared out by
    their mean accuracy. Coverage c keeps the round(c·N) most certain samples (at least 1).
    `rejection_auc` is the mean accuracy over the `points` coverages, a Riemann sum of the
    accuracy-coverage curve: higher is better (the AURC of Geifman et al. integrates the
    risk 1 - accuracy instead, lower is better).
    """
    probs, labels = _check(probs, labels)
    n = len(labels)
    u = 1.0 - probs.max(axis=1) if uncertainty is None else _finite("uncertainty", uncertainty, n)
    coverage = np.arange(1, points + 1) / points
    kept = np.maximum(1, np.rint(coverage * n).astype(np.int64))
    acc = _top_hits(u, probs.argmax(axis=1) == labels, kept) / kept
    return {"coverage": coverage.tolist(), "accuracy": acc.tolist(), "count": kept.tolist(),
            "rejection_auc": float(acc.mean())}


def memorisation(preds, noisy_labels, clean_labels, flipped) -> dict:
    """Share of flipped training samples predicted as their noisy label and as their clean one.

    `preds` are predicted classes [N] or probabilities [N, K] (arg-max taken). With no
    flipped sample both shares are None.
    """
    preds = np.asarray(preds)
    if preds.ndim == 2:
        preds = preds.argmax(axis=1)
    noisy, clean = np.asarray(noisy_labels), np.asarray(clean_labels)
    flipped = np.asarray(flipped, dtype=bool)
    if not (preds.shape == noisy.shape == clean.shape == flipped.shape) or preds.ndim != 1:
        raise ValueError("preds, noisy_labels, clean_labels and flipped must all be [N]")
    if (noisy[flipped] == clean[flipped]).any():
        raise ValueError("a flipped sample has its noisy label equal to its clean label")
    m = int(flipped.sum())
    return {
        "memorised": _share(np.sum(preds[flipped] == noisy[flipped]), m),
        "corrected": _share(np.sum(preds[flipped] == clean[flipped]), m),
        "n_flipped": m,
    }


def noise_detection(scores, flipped, decisions=None) -> dict:
    """AUROC of noise scores against the true flips, and precision / recall of a flagged set.

    Higher score = label more likely wrong. The flagged set is the method's own `decisions`
    (`at` = "decision") or else the k highest scores, k = number of flips (`at` = "top_k";
    tied scores at the cut share its hits by their mean). `k` is the size of the flagged
    set. AUROC is None when only one of flipped / clean is present;
    precision is None for an empty flagged set, recall None with no flips.
    """
    from sklearn.metrics import precision_score, recall_score, roc_auc_score

    flipped = np.asarray(flipped, dtype=bool)
    if flipped.ndim != 1:
        raise ValueError(f"flipped must be [N], got {flipped.shape}")
    scores = _finite("scores", scores, len(flipped))
    n_flipped = int(flipped.sum())
    auroc = float(roc_auc_score(flipped, scores)) if 0 < n_flipped < len(flipped) else None
    if decisions is not None:
        decisions = np.asarray(decisions, dtype=bool)
        if decisions.shape != flipped.shape:
            raise ValueError(f"decisions must have shape {flipped.shape}, got {decisions.shape}")
        p = precision_score(flipped, decisions, zero_division=np.nan)
        r = recall_score(flipped, decisions, zero_division=np.nan)
        at, k = "decision", int(decisions.sum())
        precision, recall = (None if np.isnan(v) else float(v) for v in (p, r))
    else:
        at, k = "top_k", n_flipped
        # sklearn has no precision-at-k for binary relevance with tie averaging.
        hits = float(_top_hits(-scores, flipped, k)) if k else 0.0
        precision, recall = _share(hits, k), _share(hits, n_flipped)
    return {"auroc": auroc, "precision": precision, "recall": recall, "at": at, "k": k,
            "n_flipped": n_flipped}


def summarise_by_flip(values, flipped) -> dict:
    """Mean of a per-sample array over flipped and over clean samples (None if a group is empty)."""
    values = np.asarray(values, dtype=np.float64)
    flipped = np.asarray(flipped, dtype=bool)
    if values.ndim != 1 or values.shape != flipped.shape:
        raise ValueError(
            f"values and flipped must both be [N], got {values.shape} and {flipped.shape}")
    nf, nc = int(flipped.sum()), int((~flipped).sum())
    return {"flipped_mean": _share(values[flipped].sum(), nf),
            "clean_mean": _share(values[~flipped].sum(), nc),
            "n_flipped": nf, "n_clean": nc}


def shared_class_predictions(probs, train_classes, test_classes):
    """Probabilities over the classes both spaces share, renormalised, for cross-dataset scoring.

    Returns (probs [N, S], shared class names in `train_classes` order, test_to_shared):
    `test_to_shared[j]` is the shared index of `test_classes[j]`, or -1 for a test class
    the model cannot predict (its samples are not scored). A row with no mass on the
    shared classes becomes uniform.
    """
    probs = np.asarray(probs, dtype=np.float64)
    train, test = list(train_classes), list(test_classes)
    if probs.ndim != 2 or probs.shape[1] != len(train):
        raise ValueError(f"probs must be [N, {len(train)}], got {probs.shape}")
    shared = tuple(c for c in train if c in test)
    if not shared:
        raise ValueError(f"no shared classes between {train} and {test}")
    sub = probs[:, [train.index(c) for c in shared]]
    total = sub.sum(axis=1, keepdims=True)
    sub = np.divide(sub, total, out=np.full_like(sub, 1.0 / len(shared)), where=total > 0)
    test_to_shared = np.array([shared.index(c) if c in shared else -1 for c in test],
                              dtype=np.int64)
    return sub, shared, test_to_shared


def quartiles_by_flip(values, flipped) -> dict:
    """Mean and quartiles of a per-sample array over flipped and over clean samples: one
    epoch of a method's per-sample figure.

    A value that is not finite is left out (NaN marks a sample without a value that epoch:
    MAN's subsets before its first division); a group without any value gets None.
    """
    values = np.asarray(values, dtype=np.float64)
    flipped = np.asarray(flipped, dtype=bool)
    if values.ndim != 1 or values.shape != flipped.shape:
        raise ValueError(
            f"values and flipped must both be [N], got {values.shape} and {flipped.shape}")
    out = {}
    for group, mask in (("flipped", flipped), ("clean", ~flipped)):
        v = values[mask & np.isfinite(values)]
        q = np.quantile(v, [0.25, 0.5, 0.75]).tolist() if len(v) else [None] * 3
        out[group] = {"mean": float(v.mean()) if len(v) else None,
                      "q25": q[0], "q50": q[1], "q75": q[2]}
    return out
