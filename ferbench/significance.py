"""Is a column's best row better than another row? A paired hierarchical bootstrap.

The difference in mean test accuracy between two rows varies with the training seed and
with the test faces, so both are resampled: the seeds both rows ran (paired by seed
value), with replacement, then the test faces within each drawn seed, with replacement,
the same faces for both rows. Only the per-face difference of correctness d in
{+1, 0, -1} matters, so a face resample of seed s is a multinomial draw over seed s's
counts of d = +1, 0, -1 (`resample_differences`), never a list of face indices.
The p-value is one-sided (that the best is better), Holm-adjusted over a column's
comparisons (`holm`); `compare_column` applies the rules of what is tested.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
LEVEL = 0.05
SEED = 20_250_101     # one fixed stream per comparison: the leaderboard is deterministic
MIN_SEEDS = 2         # seeds both rows must share for a comparison to be tested


@dataclass(frozen=True)
class Comparison:
    """The best row against one other row of a column: p-values, or why it was not tested."""
    p: float | None = None           # one-sided bootstrap p-value that the best is better
    adjusted: float | None = None    # Holm-adjusted over the column's tested comparisons
    reason: str = ""                 # why not tested ("" when tested)

    @property
    def tested(self) -> bool:
        return self.p is not None

    @property
    def significant(self) -> bool:
        return self.adjusted is not None and self.adjusted < LEVEL


def difference_counts(best, other) -> np.ndarray:
    """Faces where only the best is right (d = +1), both or neither are (0), only the other
    is (-1), from two per-face correctness arrays over the same faces in the same order."""
    best, other = np.asarray(best, dtype=bool), np.asarray(other, dtype=bool)
    plus, minus = np.count_nonzero(best & ~other), np.count_nonzero(~best & other)
    return np.array([plus, len(best) - plus - minus, minus], dtype=np.int64)


def resample_differences(counts, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """`resamples` bootstrap values of the mean over seeds of the accuracy difference.

    `counts` is [seeds, 3]: per shared seed, its faces with d = +1, 0, -1. Each resample
    draws as many seeds as there are, with replacement, then each drawn seed's faces with
    replacement: a multinomial draw of its face count over its d proportions.
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, 3)
    n = counts.sum(1)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(len(counts), size=(resamples, len(counts)))
    faces = rng.multinomial(n[drawn], counts[drawn] / n[drawn][..., None])  # [B, seeds, 3]
    wins = faces[..., 0] - faces[..., 2]
    if np.all(n == n[0]):   # one test set: a whole-number sum, so a zero difference is 0.0
        return wins.sum(1) / (n[0] * len(counts))
    return (wins / n[drawn]).mean(1)


def bootstrap_p(counts, resamples: int = RESAMPLES, seed: int = SEED) -> float:
    """One-sided p-value that the best is better: (1 + #{resampled difference <= 0}) /
    (resamples + 1). A difference within 1e-12 of 0 counts as 0 (the rounding of seeds with
    different face counts)."""
    diffs = resample_differences(counts, resamples, seed)
    return float((1 + np.count_nonzero(diffs <= 1e-12)) / (resamples + 1))


def holm(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values, in the given order: the i-th smallest of m is
    multiplied by m - i (i from 0), made monotone in that order and capped at 1."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, p[order] * (len(p) - np.arange(len(p))))
    out = np.empty_like(p)
    out[order] = np.maximum.accumulate(scaled)
    return out


def _paired(best: dict, other: dict) -> np.ndarray | str:
    """[seeds, 3] difference counts over the seeds both rows ran, or why there are none.
    Each dict maps a seed to (test ids, per-face correctness), or to why it has neither."""
    shared = sorted(set(best) & set(other), key=str)
    if len(shared) < MIN_SEEDS:
        return f"{len(shared)} seed{'s' * (len(shared) != 1)} shared with the best"
    counts = []
    for seed in shared:
        for faces in (best[seed], other[seed]):
            if isinstance(faces, str):
                return faces
        (ids_b, right_b), (ids_o, right_o) = best[seed], other[seed]
        ids_b, ids_o = np.asarray(ids_b), np.asarray(ids_o)
        if not np.array_equal(ids_b, ids_o):   # the same faces in another order are paired
            if len(ids_b) != len(ids_o) or len(np.unique(ids_b)) != len(ids_b) \
                    or not np.array_equal(np.sort(ids_b), np.sort(ids_o)):
                return f"seed {seed}: the two runs were tested on different faces"
            right_b = np.asarray(right_b)[np.argsort(ids_b, kind="stable")]
            right_o = np.asarray(right_o)[np.argsort(ids_o, kind="stable")]
        if not len(ids_b):
            return f"seed {seed}: no test faces"
        counts.append(difference_counts(right_b, right_o))
    return np.stack(counts)


def compare_column(best: dict, others: dict, resamples: int = RESAMPLES) -> dict:
    """Row -> Comparison of the column's best row against each other row.

    `best` and each value of `others` map a training seed to (test ids, per-face
    correctness) or to a sentence saying why that run's faces are unavailable. A
    comparison is tested only over at least MIN_SEEDS shared seeds whose runs of each
    seed have the same test ids; the tested ones are Holm-adjusted together.
    """
    out, tested = {}, {}
    for row, faces in others.items():
        counts = _paired(best, faces)
        if isinstance(counts, str):
            out[row] = Comparison(reason=counts)
        else:
            tested[row] = bootstrap_p(counts, resamples)
    for (row, p), adjusted in zip(tested.items(), holm(list(tested.values()))):
        out[row] = Comparison(p, float(adjusted))
    return {row: out[row] for row in others}
