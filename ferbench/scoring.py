"""Turns a finished run's outputs into the result record's figures, one code for every method."""

from __future__ import annotations

import numpy as np

from . import metrics as M
from .errors import ConfigError
from .labels import CLASSES
from .method import distribution_problem
from .protocols import ProtocolView


def _scored(view: ProtocolView, probs: np.ndarray):
    """Probabilities renormalised over the scored classes, and labels indexed into them."""
    cols = list(view.scored_classes)
    if cols == list(range(probs.shape[1])):
        return probs, view.test_labels, view.classes
    sub = probs[:, cols]
    sub = sub / np.clip(sub.sum(1, keepdims=True), 1e-12, None)
    lut = {c: i for i, c in enumerate(cols)}
    labels = np.asarray([lut[int(y)] for y in view.test_labels])
    return sub, labels, tuple(view.classes[c] for c in cols)


def test_distributions(view: ProtocolView, classes) -> np.ndarray | None:
    """Human vote or ground-truth distributions of the test set over `classes`, if it has them."""
    extras = view.test.extras
    if "votes" in extras:
        return M.votes_to_distribution(extras["votes"], [CLASSES.index(c) for c in classes])
    if "distribution" in extras:
        dist = np.asarray(extras["distribution"], dtype=np.float64)
        if dist.shape[1] == len(view.test.classes):
            cols = [view.test.classes.index(c) for c in classes if c in view.test.classes]
            if len(cols) == len(classes):
                return dist[:, cols]
    return None


def score_run(view: ProtocolView, res) -> dict:
    """Every figure of a run: final-epoch metrics, curves, per-class accuracy, noise figures."""
    probs, labels, classes = _scored(view, res.test_probs)
    cm = M.classification_metrics(probs, labels)
    out = {"metrics": {}, "curves": {}}
    m = out["metrics"]
    for key in ("acc", "mean_class_acc", "macro_f1", "ece", "nll", "brier"):
        m[f"test_{key}"] = cm[key]
    dist = test_distributions(view, classes)
    if dist is not None:
        m["test_kl"] = M.kl_to_distribution(dist, probs)
        amb = M.accuracy_by_ambiguity(probs, labels, dist)
        for level in ("low", "mid", "high"):
            m[f"test_acc_{level}_ambiguity"] = amb[f"{level}_acc"]
        out["curves"]["ambiguity"] = amb
    rej = M.rejection_curve(probs, labels, res.test_uncertainty)
    m["test_rejection_auc"] = rej["rejection_auc"]
    m["params"] = res.params
    m["flops_per_image"] = res.flops_per_image
    m["train_images_per_s"] = res.images_per_s
    if res.test_members is not None:
        # Members are scored as the ensemble is: under cross, over the shared classes only.
        members = res.test_members
        cols = list(view.scored_classes)
        if cols != list(range(members.shape[2])):
            members = members[:, :, cols]
        member_acc = (members.argmax(2) == labels[:, None]).mean(0)
        m["test_member_acc_mean"] = float(member_acc.mean())
        m["test_member_acc_min"] = float(member_acc.min())
        m["test_member_acc_max"] = float(member_acc.max())
        m["test_ensemble_gain"] = float(cm["acc"] - member_acc.mean())
        votes = members.argmax(2)
        m["test_member_disagreement"] = float((votes != votes[:, :1]).any(1).mean())
        out["members"] = {"acc": [float(a) for a in member_acc]}
    for k, v in res.test_extras.items():
        # A method's extra named like a harness figure would silently replace it in the
        # leaderboard (an extra "acc" would become test_acc).
        if f"test_{k}" in m or f"test_{k}" in M.HIGHER_IS_BETTER:
            raise ConfigError(f"prediction extra {k!r} is stored as test_{k}, a figure the "
                              f"harness computes itself: give it another name")
        m[f"test_{k}"] = v
    out["prediction_extras"] = sorted(res.test_extras)
    out["per_class"] = {c: a for c, a in zip(classes, cm["per_class_acc"])}
    out["confusion"] = cm["confusion"]
    out["classes_scored"] = list(classes)
    out["reliability"] = M.reliability(probs, labels)
    out["rejection_curve"] = {"coverage": rej["coverage"], "accuracy": rej["accuracy"]}
    if view.noise is not None:
        out.update(_noise_figures(view, res))
        m.update(out.pop("noise_metrics"))
    out["distributions"] = _distribution_figures(view, res)
    for name, fig in out["distributions"].items():
        m[f"train_{name}_kl"] = fig["kl"][-1] if fig["kl"] else None
    return out


def train_distributions(view: ProtocolView) -> np.ndarray | None:
    """Ground-truth distributions of the training set over the run's classes (votes or
    synthfer's), held by the harness even where they are withheld from the method."""
    extras = view.train.extras
    if "votes" in extras:
        return M.votes_to_distribution(extras["votes"],
                                       [CLASSES.index(c) for c in view.classes])
    if "distribution" in extras:
        dist = np.asarray(extras["distribution"], dtype=np.float64)
        cols = [view.train.classes.index(c) for c in view.classes if c in view.train.classes]
        if dist.ndim == 2 and dist.shape[1] == len(view.train.classes) \
                and len(cols) == len(view.classes):
            return dist[:, cols]
    return None


def _check_distribution(name: str, arr, n: int, k: int, epoch: int) -> bool:
    """Whether one epoch of the per-sample distribution `name` was built (an epoch that is all
    NaN was not); a ConfigError naming the array where it is not one distribution over the
    K classes per training sample."""
    why = distribution_problem(arr, n, k)
    if why is not None:
        raise ConfigError(f"method array {name!r} is not a distribution: {why} at epoch "
                          f"{epoch} (PerSample(..., distribution=True) needs [N_train, K] = "
                          f"[{n}, {k}], each row non-negative and summing to 1)")
    return not np.isnan(arr).all()


def _distribution_figures(view: ProtocolView, res) -> dict:
    """Per epoch, KL from the ground truth to each per-sample distribution a method built
    (and under noise for flipped and clean samples apart); None for an epoch not built."""
    names = sorted(getattr(res, "distributions", set()) or set())
    n, k = len(view.train), len(view.classes)
    built = {name: [_check_distribution(name, arr, n, k, epoch) for epoch, arr in
                    enumerate(np.asarray(a, dtype=np.float64)
                              for a in res.per_sample.get(name, []))]
             for name in names}
    truth = train_distributions(view) if names else None
    if truth is None:
        return {}
    groups = {"kl": np.ones(n, bool)}
    if view.noise is not None:
        groups.update(kl_flipped=view.noise.flipped, kl_clean=~view.noise.flipped)
    out = {}
    for name in names:
        series = {"epoch": list(range(len(built[name]))), **{g: [] for g in groups}}
        for arr, ok in zip(res.per_sample.get(name, []), built[name]):
            arr = np.asarray(arr, dtype=np.float64)
            for group, mask in groups.items():
                series[group].append(M.kl_to_distribution(truth[mask], arr[mask])
                                     if ok and mask.any() else None)
        out[name] = series
    return out


def _noise_figures(view: ProtocolView, res) -> dict:
    flipped = view.noise.flipped
    nm: dict = {}
    if res.train_probs is not None:
        mem = M.memorisation(res.train_probs, view.train_labels, view.clean_train_labels, flipped)
        nm["train_memorised"], nm["train_corrected"] = mem["memorised"], mem["corrected"]
    detection = {}
    for i, (name, scores) in enumerate(res.noise_scores.items()):
        d = M.noise_detection(scores, flipped, res.noise_decisions if i == 0 else None)
        detection[name] = d
        if i == 0:
            nm["train_noise_auroc"] = d["auroc"]
            nm["train_noise_precision"], nm["train_noise_recall"] = d["precision"], d["recall"]
            nm["train_noise_at"] = d["at"]
        else:
            nm[f"train_noise_auroc_{name}"] = d["auroc"]
    summary, epochs = {}, {}
    for name, stack in res.per_sample.items():
        last = np.asarray(stack[-1])
        if last.ndim == 1 and len(last) == len(flipped):
            summary[name] = M.summarise_by_flip(last, flipped)
            epochs[name] = _by_epoch(stack, flipped)
    return {"noise_metrics": nm, "noise_detection": detection, "noise_summary": summary,
            "noise_summary_epochs": epochs}


def _by_epoch(stack, flipped) -> dict:
    """Mean and quartiles of every epoch of a 1-D per-sample array, flipped against clean."""
    stats = ("mean", "q25", "q50", "q75")
    series = {"epoch": list(range(len(stack))),
              **{group: {stat: [] for stat in stats} for group in ("flipped", "clean")},
              "n_flipped": int(flipped.sum()), "n_clean": int((~flipped).sum())}
    for arr in stack:
        arr = np.asarray(arr, dtype=np.float64)
        fits = arr.shape == flipped.shape
        one = M.quartiles_by_flip(arr, flipped) if fits else None
        for group in ("flipped", "clean"):
            for stat in stats:
                series[group][stat].append(one[group][stat] if one else None)
    return series
