"""Protocol realnoise: a dataset trained on another labelling of its faces, its own as reference."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..protocols import Protocol, noise_document, to_run_labels, with_noisy_labels


class RealNoise(Protocol):
    """FERPlus trained on FER2013's original labels; the FERPlus majority is the reference.

    The noise is what FER2013's annotators got wrong by the judgement of FERPlus's ten:
    flips are the faces whose two labels disagree. Faces without a match, or whose
    FER2013 duplicates disagree, are left out of training; test is the usual FERPlus test.
    The other labelling comes from the adapter's `original_labels`, so a dataset whose
    adapter has none is refused.
    """

    family = "realnoise"
    reads = ("fer2013_root",)

    def apply(self, ds, params, open_target=None):
        # The match pulls in torch: imported when the protocol runs, not at plugin load.
        from .fer2013_match import STATUS

        original_labels = getattr(ds.adapter, "original_labels", None)
        if original_labels is None:
            raise ConfigError(f"protocol realnoise pairs FERPlus's votes with FER2013's "
                              f"original labels; it runs on --dataset ferplus, not {ds.name}")
        view = self._base_view(ds, params)
        match = original_labels(ds, params.get("fer2013_root"))
        match.require_same_faces()
        report = match.report(np.asarray(view.train.labels), view.classes)
        keep = np.flatnonzero(match.matched)
        train = view.train.subset(keep)
        clean = view.clean_train_labels[keep]
        noisy = to_run_labels(match.original[keep], view.classes)
        # Route-independent counts only: the same labels give the same noise hash either way.
        summary = {k: report[k] for k in ("faces", *STATUS)}
        doc = noise_document(view.id, train, view.classes, clean, noisy,
                             {"source": "reference", "reference": "FERPlus majority votes",
                              "noisy_labels": "FER2013 original labels", "match": summary,
                              "per_class": report["per_class"]})
        view.train, view.clean_train_labels = train, clean
        with_noisy_labels(view, "reference", noisy, doc)
        view.record["realnoise"] = {"route": match.route, "source": match.source, **summary,
                                    "reasons": report["reasons"],
                                    "disagreement_rate": report["disagreement_rate"]}
        return view
