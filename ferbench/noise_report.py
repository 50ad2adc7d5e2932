"""The leaderboard's account of each noisy protocol: realised rate and which classes were confused.

Read from the noise files the runs stored beside their results, so a reader sees
what the methods were trained on: generated noise spreads evenly over the other
classes; real noise (FER2013's labels against FERPlus's votes) does not.
"""

from __future__ import annotations

import json
from pathlib import Path

from tabulate import tabulate

from .tables import escape

SOURCES = {"generated": "generated uniformly at random over the other classes",
           "file": "read from a noise file", "reference": "real annotation disagreement"}


def read_noise_file(results_dir: Path, noise: dict) -> tuple[dict | None, str]:
    """The stored noise document of a result's `protocol.noise`, or None and why not."""
    rel = noise.get("file")
    if not isinstance(rel, str):
        return None, "the result names no noise file"
    path = Path(results_dir) / rel
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, f"noise file {rel} unreadable ({type(e).__name__})"
    return (doc, "") if isinstance(doc, dict) else (None, f"noise file {rel} is not an object")


def summarise(doc: dict) -> dict:
    """Rate, counts and the row-normalised transition (clean class → training label)."""
    classes, counts = doc.get("classes") or [], doc.get("transition") or []
    rows = {}
    for c, row in zip(classes, counts):
        total = sum(row)
        rows[c] = {"faces": total, "to": {d: (n / total if total else None)
                                          for d, n in zip(classes, row)}}
    out = {"source": doc.get("source"), "n_train": doc.get("n_train"),
           "n_flipped": doc.get("n_flipped"), "realised_rate": doc.get("realised_rate"),
           "classes": classes, "transition": rows}
    if isinstance(doc.get("match"), dict):
        out["match"] = doc["match"]
    return out


def markdown(label: str, s: dict) -> list[str]:
    """Lines for one protocol: a sentence, then the transition table in % of each clean class."""
    rate = s.get("realised_rate")
    what = SOURCES.get(s.get("source"), str(s.get("source")))
    lines = [f"#### {escape(label)}", "",
             f"{what}: {s.get('n_flipped')} of {s.get('n_train')} training labels differ from "
             f"the reference ({100 * rate:.2f} %)." if isinstance(rate, (int, float)) else what]
    trained = s.get("trained")
    if trained:
        lines[-1] += (f" The runs train on {trained['n_train']} of them, a validation share of "
                      f"{trained['val_fraction']:g} held out; {trained['n_flipped']} of those "
                      f"differ.")
    match = s.get("match")
    if match:
        lines[-1] += (f" Matched {match.get('matched')} of {match.get('faces')} faces; left out "
                      f"{match.get('ambiguous')} ambiguous (duplicates with conflicting labels) "
                      f"and {match.get('unmatched')} unmatched.")
    classes = s["classes"]
    if classes:
        body = [[escape(c), v["faces"]] + ["–" if v["to"][d] is None else f"{100 * v['to'][d]:.1f}"
                                           for d in classes]
                for c, v in s["transition"].items()]
        lines += ["", "Rows: reference class; columns: the training label given (% of the row).",
                  "", tabulate(body, headers=["reference", "n"] + [escape(c) for c in classes],
                               tablefmt="github", disable_numparse=True)]
    return lines + [""]
