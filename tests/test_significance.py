"""Significance marks in the leaderboard's test-accuracy table (ferbench/significance.py):
result JSON and .npz files written as a run writes them, the leaderboard built, its marks read."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from test_leaderboard import CLASSES, protocol, record, save, table_blocks

from ferbench import significance as S
from ferbench.leaderboard import WINS, build_leaderboard
from ferbench.results import write_npz

N = 300
IDS = [f"face{i:03d}" for i in range(N)]
LABELS = np.arange(N) % len(CLASSES)


def right(acc: float, *salt, n: int = N) -> np.ndarray:
    """Exactly round(acc * n) of n faces right, which ones drawn from `salt`."""
    out = np.zeros(n, dtype=bool)
    rng = np.random.default_rng(zlib.crc32(repr(salt).encode()))
    out[rng.permutation(n)[:round(acc * n)]] = True
    return out


def probs(correct: np.ndarray) -> np.ndarray:
    """Test probabilities whose most probable class is the label exactly where `correct`."""
    p = np.full((N, len(CLASSES)), 0.1)
    p[np.arange(N), np.where(correct, LABELS, (LABELS + 1) % len(CLASSES))] = 0.8
    return p


def run(out, method: str, seed: int, correct: np.ndarray, *, ids=IDS, npz: bool = True,
        **rec):
    """One run's result JSON (its test_acc from `correct`) and the .npz beside it."""
    path = save(out, record(method=method, seed=seed, acc=float(np.mean(correct)), **rec))
    if npz:
        write_npz(path.with_suffix(".npz"), {"test_ids": list(ids), "test_probs": probs(correct),
                                             "test_labels": LABELS, "train_ids": ["t0"]})
    return path


def board(out):
    built = build_leaderboard(out, with_plots=False)
    return built["tables"]["synthfer"]["main"], built["markdown"].read_text()


def line(markdown: str, row: str) -> str:
    """The row's line in the leaderboard's first table (test accuracy)."""
    return next(ln for ln in table_blocks(markdown)[0] if ln.startswith(f"| {row} "))


# -- what a reader of the leaderboard sees ---------------------------------------------------

def test_a_clear_winner_daggers_the_cells_it_beats_and_the_footnote_says_how(tmp_path):
    for seed, (strong, close, weak) in enumerate([(0.85, 0.84, 0.70), (0.86, 0.85, 0.72),
                                                  (0.84, 0.84, 0.69)]):
        run(tmp_path, "strong", seed, right(strong, "strong", seed))
        run(tmp_path, "weak", seed, right(weak, "weak", seed))
        # `close` is `strong` with a few faces changed both ways: a better mean, not a win
        ok = right(strong, "strong", seed)
        c = ok.copy()
        c[np.flatnonzero(ok)[:6]] = False
        c[np.flatnonzero(~ok)[:6 - round((strong - close) * N)]] = True
        run(tmp_path, "close", seed, c)
    table, md = board(tmp_path)
    assert table.marks == {("weak", "clean"): "†"}
    assert line(md, "weak").rstrip(" |").endswith("(n=3)†")
    assert "†" not in line(md, "strong") and "**" in line(md, "strong")
    assert "†" not in line(md, "close")
    # the footnote sits right under the accuracy table, and only there
    lines = md.splitlines()
    end = lines.index(table_blocks(md)[0][-1])
    assert lines[end + 1] == "" and lines[end + 2] == WINS
    assert md.count("†") == 2 and md.count(WINS) == 1
    for words in ("paired hierarchical bootstrap", "10,000 resamples", "Holm", "p < 0.05",
                  "n = 1", "fewer than 2 seeds shared with the best",
                  "a tie for best marks nothing"):
        assert words in WINS


def test_the_winner_s_adjusted_p_is_below_the_level_and_a_near_miss_s_is_not():
    best = {s: (IDS, right(a, "best", s)) for s, a in enumerate([0.85, 0.86, 0.84])}
    weak = {s: (IDS, right(a, "weak", s)) for s, a in enumerate([0.70, 0.72, 0.69])}
    near = {s: (IDS, np.roll(best[s][1], 1) | best[s][1]) for s in best}   # better than best
    got = S.compare_column(best, {"weak": weak, "equal": best, "better": near})
    assert got["weak"].p < 0.001 and got["weak"].adjusted < S.LEVEL and got["weak"].significant
    assert got["equal"].p == 1.0 and not got["equal"].significant
    assert got["better"].p == 1.0 and got["better"].adjusted == 1.0
    assert got["weak"].adjusted == pytest.approx(min(1, 3 * got["weak"].p))


def test_a_tie_for_best_marks_nothing(tmp_path):
    for seed in range(3):
        run(tmp_path, "a", seed, right(0.85, "a", seed))
        run(tmp_path, "b", seed, right(0.85, "b", seed))   # the same mean at display precision
        run(tmp_path, "weak", seed, right(0.60, "weak", seed))
    table, md = board(tmp_path)
    assert table.best("clean") == {"a", "b"}
    assert table.marks == {} and "†" not in table.markdown()
    assert md.count("†") == 1   # the footnote's own


def test_a_cell_with_one_seed_is_never_marked(tmp_path):
    for seed in range(3):
        run(tmp_path, "strong", seed, right(0.90, "strong", seed))
    run(tmp_path, "single", 0, right(0.40, "single", 0))   # far worse, but n = 1
    run(tmp_path, "strong", 0, right(0.90, "strong", 0), proto=protocol("noise30", rate=30))
    run(tmp_path, "weak", 0, right(0.40, "weak", 0), proto=protocol("noise30", rate=30))
    run(tmp_path, "weak", 1, right(0.40, "weak", 1), proto=protocol("noise30", rate=30))
    table, md = board(tmp_path)
    assert table.cell("single", "clean").n == 1
    assert table.cell("strong", "noise30").n == 1 and table.cell("weak", "noise30").n == 2
    assert table.best("noise30") == {"strong"}   # best with n = 1: nothing in its column tested
    assert table.marks == {} and "†" not in table.markdown()
    assert "Not tested" not in md   # n = 1 is the footnote's rule, not a listed failure


def test_too_few_shared_seeds_missing_unreadable_or_mismatched_npz_are_listed_not_marked(
        tmp_path):
    for seed in range(3):
        run(tmp_path, "strong", seed, right(0.90, "strong", seed))
        for name in ("nonpz", "broken", "otherfaces"):
            path = run(tmp_path, name, seed, right(0.40, name, seed),
                       ids=[f"x{i}" for i in range(N)] if name == "otherfaces" else IDS,
                       npz=not (name == "nonpz" and seed == 2))
            if name == "broken" and seed == 1:
                path.with_suffix(".npz").write_bytes(b"not a zip")
        run(tmp_path, "fine", seed, right(0.40, "fine", seed))
    for seed in (7, 8):
        run(tmp_path, "elsewhere", seed, right(0.40, "elsewhere", seed))
    table, md = board(tmp_path)
    assert table.marks == {("fine", "clean"): "†"}   # the rest are not tested, and say why
    note = table.footnote
    assert "Not tested:" in note
    assert "clean: elsewhere (0 seeds shared with the best)" in note
    assert "clean: nonpz (nonpz, seed 2: no .npz beside its result)" in note
    assert "clean: broken (broken, seed 1: unreadable .npz" in note
    assert "clean: otherfaces (seed 0: the two runs were tested on different faces)" in note
    assert "fine" not in note
    assert note in md


def test_a_missing_npz_of_the_best_row_leaves_its_column_untested_without_a_crash(tmp_path):
    for seed in range(2):
        run(tmp_path, "strong", seed, right(0.90, "strong", seed), npz=False)
        run(tmp_path, "weak", seed, right(0.40, "weak", seed))
    table, md = board(tmp_path)
    assert table.marks == {}
    assert "clean: weak (strong, seed 0: no .npz beside its result)" in md


def test_an_npz_that_does_not_give_the_recorded_accuracy_is_not_tested(tmp_path):
    for seed in range(2):
        run(tmp_path, "strong", seed, right(0.90, "strong", seed))
        path = run(tmp_path, "weak", seed, right(0.40, "weak", seed), npz=False)
        write_npz(path.with_suffix(".npz"), {"test_ids": IDS, "test_labels": LABELS,
                                             "test_probs": probs(right(0.45, "weak", seed))})
    table, _ = board(tmp_path)
    assert table.marks == {}
    assert "weak, seed 0: its .npz does not give its recorded test accuracy" in table.footnote


def test_under_cross_a_face_counts_right_by_its_most_probable_shared_class(tmp_path):
    # test_probs cover the training classes; the scored classes leave "sad" out, which
    # holds most probability on every face: full argmax would score nothing right
    shared = ["neutral", "happy"]
    labels = np.arange(N) % 2
    for seed in range(2):
        for name, acc in (("strong", 0.9), ("weak", 0.4)):
            ok = right(acc, name, seed)
            p = np.zeros((N, 3))
            p[:, 2] = 0.6
            p[np.arange(N), np.where(ok, labels, 1 - labels)] = 0.3
            p[np.arange(N), np.where(ok, 1 - labels, labels)] = 0.1
            rec = record(method=name, seed=seed, acc=float(ok.mean()))
            rec["classes_scored"] = shared
            path = save(tmp_path, rec)
            write_npz(path.with_suffix(".npz"), {"test_ids": IDS, "test_probs": p,
                                                 "test_labels": labels})
    table, _ = board(tmp_path)
    assert table.marks == {("weak", "clean"): "†"}


def test_the_same_results_give_the_same_leaderboard(tmp_path):
    for seed in range(3):
        run(tmp_path, "strong", seed, right(0.80 + seed / 100, "strong", seed))
        run(tmp_path, "mid", seed, right(0.76 + seed / 50, "mid", seed))
        run(tmp_path, "weak", seed, right(0.70, "weak", seed))
    first = build_leaderboard(tmp_path, tmp_path / "a", with_plots=False)
    second = build_leaderboard(tmp_path, tmp_path / "b", with_plots=False)
    assert first["markdown"].read_text() == second["markdown"].read_text()
    assert first["tables"]["synthfer"]["main"].marks \
        == second["tables"]["synthfer"]["main"].marks != {}
    counts = [[30, 250, 20], [25, 260, 15], [40, 240, 20]]
    assert S.bootstrap_p(counts) == S.bootstrap_p(counts)
    assert S.bootstrap_p(counts) != S.bootstrap_p(counts, seed=S.SEED + 1)   # the seed is used


# -- the statistics --------------------------------------------------------------------------

def test_holm_on_known_numbers():
    assert S.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert S.holm([0.04, 0.01]) == pytest.approx([0.04, 0.02])
    assert S.holm([0.5, 0.9, 0.001]) == pytest.approx([1.0, 1.0, 0.003])   # capped at 1
    assert S.holm([0.02]) == pytest.approx([0.02]) and len(S.holm([])) == 0
    p = np.random.default_rng(0).random(12)
    adjusted = S.holm(p)
    assert np.all(adjusted >= p) and np.all(np.diff(adjusted[np.argsort(p)]) >= 0)


def test_the_p_value_counts_resampled_differences_at_or_below_zero():
    assert S.bootstrap_p([[0, 100, 0], [0, 100, 0]], resamples=99) == 1.0   # identical
    assert S.bootstrap_p([[50, 50, 0], [60, 40, 0]], resamples=99) == pytest.approx(1 / 100)
    counts = [[30, 250, 20], [5, 270, 25], [40, 240, 20]]
    diffs = S.resample_differences(counts, 999)
    assert S.bootstrap_p(counts, 999) == pytest.approx((1 + np.sum(diffs <= 0)) / 1000)


def naive(best: list, other: list, resamples: int, rng) -> np.ndarray:
    """The hierarchical bootstrap done literally: draw seeds, then face indices per seed."""
    k, n = len(best), len(best[0])
    out = np.empty(resamples)
    for b in range(resamples):
        seeds = rng.integers(k, size=k)
        faces = rng.integers(n, size=(k, n))
        out[b] = np.mean([best[s][i].mean() - other[s][i].mean()
                          for s, i in zip(seeds, faces)])
    return out


def test_the_multinomial_shortcut_matches_a_bootstrap_over_face_indices():
    n, accs = 60, [(0.85, 0.55), (0.70, 0.72), (0.80, 0.60)]   # seeds disagree on the gap
    best = [right(a, "b", s, n=n) for s, (a, _) in enumerate(accs)]
    other = [right(o, "o", s, n=n) for s, (_, o) in enumerate(accs)]
    counts = [S.difference_counts(b, o) for b, o in zip(best, other)]
    fast = S.resample_differences(counts, 20_000)
    slow = naive(best, other, 20_000, np.random.default_rng(1))
    step = 1 / (len(accs) * n)   # the lattice the differences live on
    assert fast.mean() == pytest.approx(slow.mean(), abs=0.05 * slow.std())
    assert fast.std() == pytest.approx(slow.std(), rel=0.05)
    for q in (0.025, 0.1, 0.25, 0.5, 0.75, 0.9, 0.975):
        assert np.quantile(fast, q) == pytest.approx(np.quantile(slow, q),
                                                     abs=0.1 * slow.std() + step)
    assert np.mean(fast <= 0) == pytest.approx(np.mean(slow <= 0), abs=0.01)
    # resampling faces alone (seeds pooled) is another, narrower distribution: the check
    # above would catch a shortcut that forgot the seeds
    pooled = np.stack(counts).sum(0, keepdims=True)
    assert S.resample_differences(pooled, 20_000).std() < 0.8 * slow.std()


def test_fewer_than_two_shared_seeds_is_not_tested():
    a = {0: (IDS, right(0.9, "a", 0)), 1: (IDS, right(0.9, "a", 1))}
    b = {1: (IDS, right(0.1, "b", 1)), 2: (IDS, right(0.1, "b", 2))}
    got = S.compare_column(a, {"b": b})["b"]
    assert not got.tested and not got.significant and got.p is None
    assert got.reason == "1 seed shared with the best"
    # the same faces in another order are paired face by face
    order = np.random.default_rng(0).permutation(N)
    c = {s: (np.asarray(IDS)[order], right(0.1, "b", s)[order]) for s in (0, 1)}
    d = {s: (IDS, right(0.1, "b", s)) for s in (0, 1)}
    assert S.compare_column(a, {"c": c})["c"] == S.compare_column(a, {"d": d})["d"]
