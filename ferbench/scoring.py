"""Turns a finished run's outputs into the result record's figures, the same code for every method."""

from __future__ import annotations

import numpy as np

from . import metrics as M
from .labels import CLASSES
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
        member_acc = (res.test_members.argmax(2) == view.test_labels[:, None]).mean(0)
        m["test_member_acc_mean"] = float(member_acc.mean())
        m["test_ensemble_gain"] = float(cm["acc"] - member_acc.mean())
        votes = res.test_members.argmax(2)
        m["test_member_disagreement"] = float((votes != votes[:, :1]).any(1).mean())
    for k, v in res.test_extras.items():
        m[f"test_{k}"] = v
    out["per_class"] = {c: a for c, a in zip(classes, cm["per_class_acc"])}
    out["confusion"] = cm["confusion"]
    out["classes_scored"] = list(classes)
    out["reliability"] = M.reliability(probs, labels)
    out["rejection_curve"] = {"coverage": rej["coverage"], "accuracy": rej["accuracy"]}
    if view.noise is not None:
        out.update(_noise_figures(view, res))
        m.update(out.pop("noise_metrics"))
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
    summary = {}
    for name, stack in res.per_sample.items():
        last = np.asarray(stack[-1])
        if last.ndim == 1 and len(last) == len(flipped):
            summary[name] = M.summarise_by_flip(last, flipped)
    return {"noise_metrics": nm, "noise_detection": detection, "noise_summary": summary}
