"""How the counts of a dataset read from disk compare with the official ones its adapter declares.

An adapter may declare `official_counts`: {"source", "splits": {split: {"total",
"classes"?, "rows"?}}, "applies"?: {"layouts", "options"}, "rows_note"?}. A copy that
differs (a subset, another export) is a fact to report, never an error: `data check`
says per split whether it matches, and how it differs where it does not.
"""

from __future__ import annotations

import re


def compare_official(official: dict | None, layout: str, options: dict, counts: dict,
                     notes=()) -> dict | None:
    """The comparison of `counts` (split → {"total", "classes"}: `data check`'s splits and
    combined splits) with `official`; None where the adapter declares no official counts."""
    if not official:
        return None
    out = {"source": official["source"], "compared": True, "why_not": None,
           "matches": True, "splits": {}}
    why_not = _not_applicable(official.get("applies") or {}, layout, options)
    if why_not:
        return {**out, "compared": False, "why_not": why_not, "matches": None}
    for split, want in official["splits"].items():
        found = counts.get(split)
        entry = _compare_split(want, found)
        if "rows" in want:
            rows = _rows_read(official.get("rows_note"), split, notes)
            entry["rows"] = {"official": want["rows"], "found": rows,
                             "matches": None if rows is None else rows == want["rows"]}
        out["splits"][split] = entry
        out["matches"] &= entry["verdict"] == "matches" and \
            entry.get("rows", {}).get("matches") is not False
    return out


def describe_split(split: str, entry: dict) -> str:
    """One line for the console: `train: 28,709 (official 28,709): matches`, or how it differs."""
    want, found = entry["official"], entry["found"]
    if entry["verdict"] == "absent":
        text = f"{split}: absent (official {want:,})"
    elif entry["verdict"] == "matches":
        text = f"{split}: {found:,} (official {want:,}): matches"
    else:
        kind = {"subset": "a subset", "superset": "more than the official set",
                "differs": "a different copy"}[entry["verdict"]]
        text = f"{split}: {found:,} (official {want:,}, {found - want:+,}): {kind}"
        classes = {c: d for c, d in (entry.get("class_differences") or {}).items() if d}
        if classes:
            text += "; per class " + ", ".join(f"{c} {d:+,}" for c, d in classes.items())
    rows = entry.get("rows")
    if rows:
        found_rows = "not reported" if rows["found"] is None else f"{rows['found']:,}"
        text += (f"; rows {found_rows} (official {rows['official']:,})"
                 + (": match" if rows["matches"] else ": differ" if rows["matches"] is False
                    else ""))
    return text


def _compare_split(want: dict, found: dict | None) -> dict:
    if found is None:
        return {"official": want["total"], "found": None, "verdict": "absent",
                "class_differences": None}
    official_classes = want.get("classes")
    diffs = None
    if official_classes:
        names = list(official_classes) + [c for c in found["classes"]
                                          if c not in official_classes]
        diffs = {c: found["classes"].get(c, 0) - official_classes.get(c, 0) for c in names}
    steps = list(diffs.values()) if diffs else []
    steps.append(found["total"] - want["total"])
    if all(d == 0 for d in steps):
        verdict = "matches"
    elif all(d <= 0 for d in steps):
        verdict = "subset"
    elif all(d >= 0 for d in steps):
        verdict = "superset"
    else:
        verdict = "differs"
    return {"official": want["total"], "found": found["total"], "verdict": verdict,
            "class_differences": diffs}


def _not_applicable(applies: dict, layout: str, options: dict) -> str | None:
    """Why the official counts do not apply to this layout and these options, or None."""
    layouts = applies.get("layouts")
    if layouts and layout not in layouts:
        return f"the official counts are for layout {' or '.join(layouts)}, not {layout}"
    differ = {k: v for k, v in (applies.get("options") or {}).items() if options.get(k) != v}
    if differ:
        return ("the official counts are for "
                + ", ".join(f"{k}={v}" for k, v in differ.items())
                + " (given: " + ", ".join(f"{k}={options.get(k)}" for k in differ) + ")")
    return None


def _rows_read(pattern: str | None, split: str, notes) -> int | None:
    """The rows the adapter says it read for `split` (from its note), or None."""
    if not pattern:
        return None
    rx = re.compile(pattern.replace("{split}", re.escape(split)))
    for note in notes:
        m = rx.search(note)
        if m:
            return int(m.group("rows").replace(",", ""))
    return None
