"""Leaderboard tables and plots, from synthetic records written as docs/results.md describes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ferbench import plots
from ferbench.leaderboard import build_leaderboard, escape
from ferbench.results import write_json
from ferbench.runkey import RunKey, config_hash

CLASSES = ["neutral", "happy", "sad"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def protocol(pid: str = "clean", rate: float | None = None, noise_hash: str | None = None,
             source: str = "generated", label: str | None = None, **params) -> dict:
    """A record's `protocol` section as protocols.py builds it: clean, generated noise (`rate`
    in percent, as in noise30), a noise file (`noise_hash`), or anything else (cross)."""
    if pid == "clean":
        return {"id": pid, "family": "clean", "params": params, "label": label or pid,
                "noise": None}
    if rate is None and noise_hash is None:
        return {"id": pid, "family": pid.split("-")[0], "params": params, "label": label or pid,
                "noise": None}
    noise = {"hash": noise_hash or f"{int(rate or 0):02d}" + "0" * 14, "file": "noise.json",
             "rate": (rate or 5) / 100, "n_flipped": 3, "n_train": 60, "source": source}
    if source == "generated":
        params = {"rate": float(rate), "noise_seed": 0, **params}
    family = "noise" if source == "generated" else "noise_file"
    return {"id": pid, "family": family, "params": params, "label": label or pid, "noise": noise}


def record(dataset="synthfer", proto=None, method="baseline", seed=0, method_cfg=None,
           engine_cfg=None, acc=0.8, metrics=None, oracle_acc=None, per_class=None) -> dict:
    """A minimal valid schema-1 record; the metrics follow from `acc` unless given."""
    proto = proto or protocol()
    cfg = {"method": {"lr": 0.01, **(method_cfg or {})},
           "engine": {"epochs": 2, **(engine_cfg or {})}, "data": {"image_size": 32}}
    chash = config_hash(cfg)
    cfg["protocol"] = {"id": proto["id"], **proto["params"]}
    m = {"test_acc": acc, "test_mean_class_acc": acc - 0.01, "test_macro_f1": acc - 0.02,
         "test_ece": 0.05, "test_nll": 0.6, "test_brier": 0.3, "test_rejection_auc": acc + 0.05,
         "params": 11_000_000, "flops_per_image": 1.8e9}
    if proto["noise"]:
        m.update(train_memorised=0.4, train_corrected=0.5, train_noise_auroc=0.9,
                 train_noise_precision=0.7, train_noise_recall=0.6, train_noise_at="top_k")
    m.update(metrics or {})
    return {
        "schema": 1,
        "key": {"dataset": dataset, "protocol": proto["id"], "method": method, "seed": seed,
                "config_hash": chash},
        "protocol": proto,
        "method": {"name": method, "plugin": "ferbench", "version": "0.1.0", "preset": "quick",
                   "preset_source": "ferbench"},
        "config": cfg,
        "dataset": {"name": dataset, "layout": "synthfer", "classes": CLASSES,
                    "fingerprints": {"train": "a", "test": "b"}, "n_train": 60, "n_test": 30,
                    "notes": ""},
        "versions": {"ferbench": "0.1.0", "torch": "2.4", "timm": "1.0", "python": "3.11",
                     "plugin": None},
        "device": {"type": "cpu", "name": "cpu", "threads": 4},
        "precision": "fp32",
        "wall_time_s": 1.0,
        "history": [{"epoch": 0, "phase": "main", "loss": 1.0, "lr": 0.01, "images_per_s": 100.0}],
        "metrics": m,
        "oracle": None if oracle_acc is None else {"test_acc": oracle_acc, "epoch": 1},
        "selected": None,
        "per_class": per_class or {c: acc for c in CLASSES},
        "confusion": [[8, 1, 1], [2, 7, 1], [0, 3, 7]],
        "reliability": {"confidence": [0.1 * (i + 0.5) if i < 10 else None for i in range(15)],
                        "accuracy": [0.1 * i if i < 10 else None for i in range(15)],
                        "count": [3 if i < 10 else 0 for i in range(15)]},
        "rejection_curve": {"coverage": [0.25, 0.5, 0.75, 1.0],
                            "accuracy": [acc + 0.15, acc + 0.1, acc + 0.05, acc]},
        "noise_summary": {},
        "method_results": {},
    }


def save(out: Path, rec: dict) -> Path:
    path = RunKey(**rec["key"]).result_path(out)
    write_json(path, rec)
    return path


def pipes(line: str) -> int:
    """Cell separators: pipes not escaped by an odd run of backslashes."""
    count, slashes = 0, 0
    for ch in line:
        if ch == "|" and slashes % 2 == 0:
            count += 1
        slashes = slashes + 1 if ch == "\\" else 0
    return count


def table_blocks(markdown: str) -> list[list[str]]:
    blocks, cur = [], []
    for line in markdown.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            blocks, cur = blocks + [cur], []
    return blocks + ([cur] if cur else [])


def test_mean_std_over_seeds_and_n(tmp_path):
    for seed, acc in enumerate([0.80, 0.82, 0.85]):
        save(tmp_path, record(seed=seed, acc=acc))
    save(tmp_path, record(method="other", acc=0.7))
    out = build_leaderboard(tmp_path, with_plots=False)
    cell = out["tables"]["synthfer"]["main"].cell("Baseline", "clean")
    assert cell.n == 3
    assert cell.mean == pytest.approx(np.mean([0.80, 0.82, 0.85]))
    assert cell.std == pytest.approx(np.std([0.80, 0.82, 0.85], ddof=1))
    text = Path(out["markdown"]).read_text()
    assert "82.33 ± 2.52 (n=3)" in text
    assert "70.00 (n=1)" in text and "70.00 ±" not in text
    assert out["n_read"] == 4 and out["skipped"] == []
    assert "Read 4 result files" in text and "everything but the training seed" in text


def test_missing_metric_is_not_counted(tmp_path):
    save(tmp_path, record(seed=0, acc=0.8))
    save(tmp_path, record(seed=1, acc=0.9, metrics={"test_ece": None}))
    t = build_leaderboard(tmp_path, with_plots=False)["tables"]["synthfer"]
    assert t["main"].cell("Baseline", "clean").n == 2
    assert t["calibration"]["clean"].cell("Baseline", "ECE (%)").n == 1


def test_variants_get_rows_named_by_differing_keys(tmp_path):
    for seed in range(2):
        save(tmp_path, record(seed=seed, acc=0.8 + seed / 100, method_cfg={"lr": 0.1}))
        # engine.seed differs too, but a seed never names a variant
        save(tmp_path, record(seed=seed, acc=0.7, method_cfg={"lr": 0.01},
                              engine_cfg={"seed": 5}))
    main = build_leaderboard(tmp_path, with_plots=False)["tables"]["synthfer"]["main"]
    assert sorted(main.rows) == ["Baseline (method.lr=0.01)", "Baseline (method.lr=0.1)"]
    assert main.cell("Baseline (method.lr=0.1)", "clean").mean == pytest.approx(0.805)
    assert main.cell("Baseline (method.lr=0.01)", "clean").n == 2


def test_config_hash_that_only_tracks_the_protocol_is_one_row(tmp_path):
    rec_a, rec_b = record(acc=0.8), record(proto=protocol("noise30", rate=30), acc=0.6)
    rec_b["key"]["config_hash"] = "f" * 10     # as if the hash covered the protocol section
    save(tmp_path, rec_a), save(tmp_path, rec_b)
    main = build_leaderboard(tmp_path, with_plots=False)["tables"]["synthfer"]["main"]
    assert main.rows == ["Baseline"]
    assert main.columns == ["clean", "noise30"]


def test_columns_ordered_and_noise_files_never_share_a_cell(tmp_path):
    noisefile = dict(noise_hash="abcdef0123456789", source="file")
    save(tmp_path, record(proto=protocol("cross-ckplus", label="cross→ckplus"), acc=0.5))
    save(tmp_path, record(proto=protocol("noise30", rate=30), acc=0.6))
    save(tmp_path, record(proto=protocol("noise10", rate=10), acc=0.75))
    # one noise file read from two places: one column (the hash names the file)
    save(tmp_path, record(proto=protocol("noisefile:n01", path="/a/n01.txt", **noisefile)))
    save(tmp_path, record(proto=protocol("noisefile:n01", path="/b/n01.txt", **noisefile), seed=1))
    save(tmp_path, record(acc=0.8))
    # two noise files for noise20 (other noise seeds): two columns, never averaged
    for seed, (h, acc) in enumerate([("aaaaaa1111111111", 0.65), ("bbbbbb2222222222", 0.55)]):
        save(tmp_path, record(proto=protocol("noise20", rate=20, noise_hash=h), acc=acc, seed=seed))
    main = build_leaderboard(tmp_path, with_plots=False)["tables"]["synthfer"]["main"]
    assert main.columns == ["clean", "noise10", "noise20 #aaaaaa", "noise20 #bbbbbb", "noise30",
                            "noisefile:n01", "cross→ckplus"]
    assert main.cell("Baseline", "noise20 #aaaaaa").values == [0.65]
    assert main.cell("Baseline", "noise20 #bbbbbb").values == [0.55]
    assert main.cell("Baseline", "noisefile:n01").n == 2


def test_bold_marks_best_highest_accuracy_and_lowest_ece(tmp_path):
    save(tmp_path, record(method="good", acc=0.9, metrics={"test_ece": 0.20}))
    save(tmp_path, record(method="calibrated", acc=0.6, metrics={"test_ece": 0.01}))
    t = build_leaderboard(tmp_path, with_plots=False)["tables"]["synthfer"]
    assert t["main"].best("clean") == {"good"}
    assert t["calibration"]["clean"].best("ECE (%)") == {"calibrated"}
    assert t["calibration"]["clean"].best("NLL") == set()     # every row ties: nothing bold
    md = t["main"].markdown()
    assert "**90.00 (n=1)**" in md and "**60.00" not in md
    assert "**1.00 (n=1)**" in t["calibration"]["clean"].markdown()


def test_escaping_keeps_tables_intact(tmp_path):
    weird = "a|b*c_d `x` <y>\nz"
    save(tmp_path, record(method=weird, acc=0.9))
    save(tmp_path, record(method="plain", acc=0.8, proto=protocol("clean", label="cl|ean\n_x_")))
    out = build_leaderboard(tmp_path, with_plots=False)
    md = Path(out["markdown"]).read_text()
    assert escape(weird) == r"a\|b\*c\_d \`x\` \<y\> z"
    assert escape(weird) in md
    blocks = table_blocks(md)
    assert blocks
    for block in blocks:
        assert len({pipes(line) for line in block}) == 1, block
        assert len(block) == 4      # header, rule, two methods


def test_oracle_in_its_own_table(tmp_path):
    save(tmp_path, record(acc=0.80, oracle_acc=0.86))
    save(tmp_path, record(method="nooracle", acc=0.7))
    t = build_leaderboard(tmp_path, with_plots=False)["tables"]["synthfer"]
    assert t["main"].cell("Baseline", "clean").values == [0.80]
    assert t["oracle"].cell("Baseline", "clean").values == [0.86]
    assert t["oracle"].rows == ["Baseline"]
    assert "oracle" in t["oracle"].title.lower() and "oracle" not in t["main"].title.lower()
    assert t["selected"] is None


def test_noise_tables_only_for_noise_protocols(tmp_path):
    save(tmp_path, record(acc=0.8))
    save(tmp_path, record(proto=protocol("noise30", rate=30), acc=0.6))
    save(tmp_path, record(proto=protocol("noise30", rate=30), acc=0.62, seed=1,
                          metrics={"train_noise_auroc": 0.8}))
    t = build_leaderboard(tmp_path, with_plots=False)["tables"]["synthfer"]
    assert list(t["noise"]) == ["noise30"]
    noise = t["noise"]["noise30"]
    assert noise.cell("Baseline", "AUROC (%)").mean == pytest.approx(0.85)
    assert noise.text("Baseline", "at") == "top\\_k"
    assert set(t["calibration"]) == {"clean", "noise30"}
    assert t["ambiguity"] == {}   # no votes in these records


def test_the_noise_table_names_each_row_s_headline_score_and_shows_its_floors(tmp_path):
    """A method returning several noise scores (LDLVA: 1 − λ, then 1 − p(y) and a kNN vote)
    has its headline named, and the AUROC of each further score in a column of its own."""
    noisy = protocol("noise30", rate=30)
    ldl = record(proto=noisy, method="ldlva",
                 metrics={"train_noise_auroc": 0.7, "train_noise_auroc_1-p(y)": 0.8,
                          "train_noise_auroc_knn-disagree": 0.6})
    ldl["noise_detection"] = {"1-lambda": {}, "1-p(y)": {}, "knn-disagree": {}}
    save(tmp_path, ldl)
    base = record(proto=noisy)
    base["noise_detection"] = {"score": {}}
    save(tmp_path, base)
    noise = build_leaderboard(tmp_path, with_plots=False)["tables"]["synthfer"]["noise"]["noise30"]
    assert noise.text("LDLVA", "score") == "1-lambda"
    assert noise.text("Baseline", "score") == "score"
    assert noise.cell("LDLVA", "AUROC (%)").mean == pytest.approx(0.7)
    assert noise.cell("LDLVA", "AUROC of 1-p(y) (%)").mean == pytest.approx(0.8)
    assert noise.cell("LDLVA", "AUROC of knn-disagree (%)").mean == pytest.approx(0.6)
    assert noise.cell("Baseline", "AUROC of 1-p(y) (%)") is None


def test_per_class_ambiguity_and_size_tables(tmp_path):
    save(tmp_path, record(per_class={"neutral": 0.9, "happy": 0.5, "sad": None},
                          metrics={"test_kl": 0.4, "test_acc_low_ambiguity": 0.9}))
    t = build_leaderboard(tmp_path, with_plots=False)["tables"]["synthfer"]
    pc = t["per_class"]["clean"]
    assert pc.columns == ["neutral", "happy"]
    assert pc.cell("Baseline", "happy").mean == 0.5
    assert t["ambiguity"]["clean"].columns == ["KL to votes", "acc, low ambiguity (%)"]
    assert t["size"].text("Baseline", "params") == "11.00 M"
    assert t["size"].text("Baseline", "FLOPs / image") == "1.80 G"


def test_unreadable_and_duplicate_files_skipped_and_listed(tmp_path):
    first = save(tmp_path, record())
    bad = tmp_path / "synthfer" / "clean" / "broken" / "abc" / "seed0.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    other = tmp_path / "synthfer" / "clean" / "future" / "abc" / "seed0.json"
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps({"schema": 2}))
    copy = tmp_path / "copy" / "seed0.json"      # the same run again, elsewhere
    write_json(copy, record())
    out = build_leaderboard(tmp_path, with_plots=False)
    assert out["n_read"] == 1
    skipped = {p for p, _ in out["skipped"]}
    assert skipped - {str(first), str(copy)} == {str(bad), str(other)}
    assert len(skipped & {str(first), str(copy)}) == 1     # one of the two copies is read
    md = Path(out["markdown"]).read_text()
    assert "## Skipped files" in md and "broken" in md and "future" in md and "duplicate" in md


def test_the_command_warns_on_stderr_for_each_skipped_file(tmp_path):
    from click.testing import CliRunner

    from ferbench.cli import cli

    save(tmp_path, record())
    bad = tmp_path / "synthfer" / "clean" / "broken" / "abc" / "seed1.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    res = CliRunner().invoke(cli, ["leaderboard", str(tmp_path)])
    assert res.exit_code == 0, res.output
    [warning] = res.stderr.splitlines()
    assert warning.startswith(f"ferbench: warning: {bad}: skipped, not a readable result")
    assert warning.count(str(bad)) == 1       # the path once, then the reason


def test_output_dir_and_pngs(tmp_path):
    results, out_dir = tmp_path / "results", tmp_path / "board"
    for seed in range(2):
        for method, clean, noisy in [("baseline", 0.8 + seed / 50, 0.6), ("other", 0.7, 0.65)]:
            save(results, record(method=method, seed=seed, acc=clean))
            save(results, record(proto=protocol("noise30", rate=30), method=method, seed=seed,
                                 acc=noisy))
    out = build_leaderboard(results, out_dir)
    assert Path(out["markdown"]) == out_dir / "leaderboard.md"
    assert not (results / "leaderboard.md").exists()
    names = {p.name for p in out["plots"]}
    assert "synthfer-accuracy_vs_noise.png" in names
    for kind in ("confusion", "reliability", "rejection"):
        assert f"synthfer-clean-{kind}.png" in names and f"synthfer-noise30-{kind}.png" in names
    for p in out["plots"]:
        assert p.parent == out_dir and p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 1000
    assert "(synthfer-clean-confusion.png)" in Path(out["markdown"]).read_text()
    assert not list(out_dir.glob(".*.tmp"))


def test_confusion_grid_caps_panels_and_survives_odd_names(tmp_path):
    panels = [(f"m$ethod {i}\nx", [[[5, 1], [2, 4]]], ["a", "b"])
              for i in range(plots.MAX_PANELS + 2)]
    (path,) = plots.confusion_grid(tmp_path / "grid.png", "ds · clean", panels)
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_out_dir_defaults_to_results_dir(tmp_path):
    save(tmp_path, record())
    out = build_leaderboard(tmp_path, with_plots=False)
    assert Path(out["markdown"]) == tmp_path / "leaderboard.md"


def test_empty_results_dir(tmp_path):
    out = build_leaderboard(tmp_path)
    assert out["tables"] == {} and out["plots"] == []
    assert "No results found" in Path(out["markdown"]).read_text()


def noise_doc(classes, transition, source, **extra) -> dict:
    """A stored noise file as protocols.noise_document writes it."""
    n = int(np.sum(transition))
    flipped = n - int(np.trace(np.asarray(transition)))
    return {"protocol": "x", "classes": classes, "n_train": n, "n_flipped": flipped,
            "realised_rate": round(flipped / n, 6), "source": source,
            "transition": transition, "flips": [], **extra}


def realnoise_record(tmp_path, seed=0, acc=0.7, root="/data/fer2013") -> dict:
    rec = record(proto=protocol("realnoise", noise_hash="feedfacefeedface", source="reference",
                                fer2013_root=root), acc=acc, seed=seed)
    rec["protocol"]["family"] = "realnoise"
    rec["protocol"]["noise"]["file"] = "synthfer/noise/realnoise-feedfacefeedface.json"
    return rec


def test_real_noise_column_sits_beside_generated_noise_whatever_the_fer2013_copy(tmp_path):
    save(tmp_path, record(proto=protocol("noise30", rate=30), acc=0.6))
    save(tmp_path, record(proto=protocol("noisefile:n01", noise_hash="ab" * 8, source="file",
                                         path="/a/n01.txt")))
    save(tmp_path, record(acc=0.8))
    # the same noisy labels found through two FER2013 copies: one column, two seeds
    save(tmp_path, realnoise_record(tmp_path, seed=0, acc=0.70, root="/a/fer2013"))
    save(tmp_path, realnoise_record(tmp_path, seed=1, acc=0.72, root="/b/fer2013.csv"))
    main = build_leaderboard(tmp_path, with_plots=False)["tables"]["synthfer"]["main"]
    assert main.columns == ["clean", "noise30", "realnoise", "noisefile:n01"]
    assert main.cell("Baseline", "realnoise").values == [0.70, 0.72]


def test_leaderboard_shows_each_noisy_protocols_rate_and_confusions(tmp_path):
    # rows: reference class; columns: the label trained on (neutral→sad is the real confusion)
    write_json(tmp_path / "synthfer/noise/realnoise-feedfacefeedface.json",
               noise_doc(CLASSES, [[6, 0, 4], [0, 10, 0], [1, 0, 9]], "reference",
                         match={"faces": 32, "matched": 30, "ambiguous": 2, "unmatched": 0}))
    save(tmp_path, realnoise_record(tmp_path))
    noisy = protocol("noise30", rate=30)   # its noise file was never stored: said, not guessed
    save(tmp_path, record(proto=noisy, acc=0.6))
    out = build_leaderboard(tmp_path, with_plots=False)
    summary = out["tables"]["synthfer"]["label_noise"]
    assert summary["realnoise"]["realised_rate"] == pytest.approx(5 / 30, abs=1e-6)
    assert summary["realnoise"]["transition"]["neutral"]["to"]["sad"] == pytest.approx(0.4)
    assert summary["realnoise"]["transition"]["happy"]["faces"] == 10
    assert "unreadable" in summary["noise30"]["unavailable"]
    text = Path(out["markdown"]).read_text()
    section = text.split("### Training labels under each noisy protocol", 1)[1]
    assert "real annotation disagreement: 5 of 30 training labels differ" in section
    assert "(16.67 %)" in section and "Matched 30 of 32 faces; left out 2 ambiguous" in section
    neutral_row = next(line for line in section.splitlines() if line.startswith("| neutral"))
    assert [c.strip() for c in neutral_row.strip("|").split("|")] == \
        ["neutral", "10", "60.0", "0.0", "40.0"]
    # the section follows noise detection and precedes the per-class tables
    assert text.index("Noise detection and memorisation") < text.index("Training labels under") \
        < text.index("Per-class test accuracy")


@pytest.mark.parametrize("make", ["missing", "file"])
def test_a_leaderboard_of_a_folder_that_is_not_there_is_refused(tmp_path, make):
    from click.testing import CliRunner

    from ferbench.cli import cli

    target = tmp_path / "results"
    if make == "file":
        target.write_text("not a folder\n")
    res = CliRunner().invoke(cli, ["leaderboard", str(target)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.stderr.strip().startswith(f"ferbench: error: {target}:")
    assert (target.exists(), target.is_file()) == (make == "file", make == "file")


def test_a_column_trained_and_tested_on_the_same_images_says_so(tmp_path):
    same = record(acc=0.9)
    same["dataset"]["fingerprints"] = {"train": "a", "test": "a"}
    save(tmp_path, same)
    t = build_leaderboard(tmp_path, with_plots=False)["tables"]["synthfer"]
    assert t["main"].columns == ["clean (tested on its training images)"]


def test_a_reader_sees_what_budget_each_row_trained_with(tmp_path):
    """Two methods at other budgets: the leaderboard says so beside the accuracy table."""
    for seed, wall in ((0, 60.0), (1, 80.0)):
        r = record(seed=seed, method_cfg={"backbone": "ferbench_resnet_tiny", "image_size": 48,
                                          "epochs": 10, "batch_size": 64})
        r["wall_time_s"] = wall
        save(tmp_path, r)
    man = record(method="man", method_cfg={"backbone": "ferbench_resnet_tiny",
                                           "image_size": 48, "epochs": 4, "batch_size": 64})
    man["dataset"]["n_train"] = 54
    save(tmp_path, man)
    board = build_leaderboard(tmp_path, with_plots=False)
    runs = board["tables"]["synthfer"]["runs"]
    assert runs.text("Baseline", "epochs") == "10" and runs.text("MAN", "epochs") == "4"
    assert runs.text("Baseline", "training faces") == "60"
    assert runs.text("MAN", "training faces") == "54"
    assert runs.text("Baseline", "wall time (s)") == "70 ± 14 (n=2)"
    md = board["markdown"].read_text()
    assert md.index("### Test accuracy, final epoch") < md.index("### What each row ran")
    assert "| Baseline | quick    | ferbench\\_resnet\\_tiny | 48" in md


def test_each_column_says_what_a_constant_guess_of_its_commonest_class_scores(tmp_path):
    save(tmp_path, record())  # confusion rows 10/10/10: any class, a third
    skewed = record(proto=protocol("cross-ckplus", label="cross→ckplus"), acc=0.7)
    skewed["confusion"] = [[60, 2, 3], [5, 20, 0], [4, 1, 5]]  # 65 of 100 neutral
    skewed["classes_scored"] = ["neutral", "happy", "sad"]
    save(tmp_path, skewed)
    board = build_leaderboard(tmp_path, with_plots=False)
    assert board["tables"]["synthfer"]["majority"] == {
        "clean": ("neutral", pytest.approx(1 / 3)), "cross→ckplus": ("neutral", 0.65)}
    assert ("A constant guess of the most frequent test class scores: clean: neutral, 33.33 %; "
            "cross→ckplus: neutral, 65.00 %.") in board["markdown"].read_text()


def test_one_protocol_on_two_test_sets_is_two_columns_and_two_rows_named_by_the_option(tmp_path):
    """AffectNet with classes=7 and classes=8 tests on other faces: never one column, no bold."""
    for classes, acc in ((7, 0.8), (8, 0.6)):
        r = record(acc=acc)
        r["config"]["data"] = {"image_size": 32, "options": {"classes": classes}}
        r["key"]["config_hash"] = f"{classes}" * 10
        r["dataset"]["fingerprints"]["test"] = f"test-{classes}"
        save(tmp_path, r)
    main = build_leaderboard(tmp_path, with_plots=False)["tables"]["synthfer"]["main"]
    assert main.columns == ["clean [data.options.classes=7]", "clean [data.options.classes=8]"]
    assert main.rows == ["Baseline (data.options.classes=7)", "Baseline (data.options.classes=8)"]
    assert main.cell("Baseline (data.options.classes=8)", "clean [data.options.classes=7]") is None
    assert main.best("clean [data.options.classes=7]") == set()


def test_a_rebuilt_leaderboard_removes_the_plots_it_no_longer_shows(tmp_path):
    results, out = tmp_path / "results", tmp_path / "board"
    first = save(results, record(dataset="alpha"))
    old = build_leaderboard(results, out)["plots"]
    assert old and all(p.exists() for p in old)
    mine = out / "notes.png"  # a file the leaderboard never wrote stays
    mine.write_bytes(PNG_MAGIC)
    first.unlink()
    save(results, record(dataset="beta"))
    new = build_leaderboard(results, out)["plots"]
    assert new and all(p.exists() for p in new)
    assert not any(p.exists() for p in old if p not in new)
    assert mine.exists()


def test_a_method_s_own_figures_get_tables_a_plot_and_its_random_start_a_mark(tmp_path):
    proto = protocol("noise30", rate=30)
    for seed in (0, 1):
        rec = record(proto=proto, seed=seed, method="ldl",
                     metrics={"test_branch_similarity": 0.4, "train_targets_kl": 0.2 + seed})
        rec["method"]["weights_expected"] = True
        rec["weights"] = [{"backbone": "resnet18", "file": None, "init": "random"}]
        rec["method_results"] = {"centres": {"moved": 3}, "seeds": [1, 2]}
        rec["prediction_extras"] = ["branch_similarity"]
        rec["distributions"] = {"targets": {"epoch": [0, 1], "kl": [1.0, 0.2 + seed]}}
        rec["noise_summary_epochs"] = {"lam": {
            "epoch": [0, 1], "flipped": {"mean": [0.9, 0.4], "q25": [0.8, 0.3],
                                         "q50": [0.9, 0.4], "q75": [1.0, 0.5]},
            "clean": {"mean": [0.9, 0.8], "q25": [0.8, 0.7], "q50": [0.9, 0.8],
                      "q75": [1.0, 0.9]}, "n_flipped": 3, "n_clean": 57}}
        save(tmp_path, rec)
    save(tmp_path, record(proto=proto, method="baseline"))
    board = build_leaderboard(tmp_path)
    t = board["tables"]["synthfer"]
    figures = t["method_figures"]["noise30"]
    assert figures.cell("ldl", "test_branch_similarity").mean == 0.4
    assert figures.cell("ldl", "targets: KL to the ground truth").mean == pytest.approx(0.7)
    assert figures.cell("ldl", "centres.moved").mean == 3
    per_sample = t["per_sample"]["noise30"]
    assert per_sample.cell("ldl", "lam: flipped mean").mean == 0.4
    assert per_sample.cell("ldl", "lam: clean median").mean == 0.8
    assert t["runs"].cell("ldl", "weights").values[0] == "random (preset expects pretrained)"
    assert t["runs"].cell("Baseline", "weights") is None  # nothing expected: nothing said
    assert any(p.name == "synthfer-noise30-lam.png" for p in board["plots"])
    text = board["markdown"].read_text()
    assert "Method per-sample figures on the training set" in text and "Method figures" in text


def test_records_without_the_later_fields_give_the_leaderboard_they_always_gave(tmp_path):
    """A result written before per-epoch summaries, built distributions, members and
    prediction extras existed: no new table, column or plot; empty new fields change nothing."""
    old, empty = tmp_path / "old", tmp_path / "empty"
    for seed in (0, 1):
        for proto in (protocol(), protocol("noise30", rate=30)):
            rec = record(proto=proto, seed=seed, metrics={"test_member_acc_mean": 0.7,
                                                          "test_ensemble_gain": 0.05})
            rec["weights"] = [{"backbone": "resnet18", "file": None, "init": "random"}]
            rec["method_results"] = {}
            save(old / "results", rec)
            save(empty / "results", {**rec, "noise_summary_epochs": {}, "distributions": {},
                                     "members": None, "prediction_extras": [],
                                     "training_subset": None})
    a = build_leaderboard(old / "results", old / "board")
    b = build_leaderboard(empty / "results", empty / "board")
    text = a["markdown"].read_text()
    assert text == b["markdown"].read_text().replace(escape(empty), escape(old))
    assert [p.name for p in a["plots"]] == [p.name for p in b["plots"]]
    assert "Method figures" not in text and "per-sample figures" not in text
    assert "weights" not in a["tables"]["synthfer"]["runs"].columns
    ensemble = a["tables"]["synthfer"]["ensemble"]["clean"]
    assert ensemble.columns == ["member acc (%)", "ensemble gain (%)"]


def test_the_weights_column_says_where_each_row_started(tmp_path):
    def run(method, expected, weights):
        rec = record(method=method)
        rec["method"]["weights_expected"] = expected
        rec["weights"] = weights
        save(tmp_path, rec)

    random = [{"backbone": "resnet18", "file": None, "init": "random"}]
    run("scratch", False, random)
    run("pretrained", True, [{"backbone": "resnet18", "file": "/ckpt/ms1m/resnet18.pth"},
                             {"module": "text tower", "file": "/ckpt/clip.pt",
                              "init": "checkpoint"}])
    run("fallback", True, random + [{"module": "text tower", "file": "/ckpt/clip.pt",
                                     "init": "checkpoint"}])
    runs = build_leaderboard(tmp_path, with_plots=False)["tables"]["synthfer"]["runs"]
    assert runs.text("scratch", "weights") == "random"
    assert runs.text("pretrained", "weights") == "clip.pt, resnet18.pth"
    assert runs.text("fallback", "weights") == "random (preset expects pretrained)"


def test_method_figures_are_bold_only_where_their_direction_is_known(tmp_path):
    proto = protocol("noise30", rate=30)
    for method, sim, kl, moved in (("a", 0.4, 0.2, 3), ("b", 0.6, 0.5, 5)):
        rec = record(proto=proto, method=method,
                     metrics={"test_similarity": sim, "train_targets_kl": kl})
        rec["prediction_extras"] = ["similarity"]
        rec["distributions"] = {"targets": {"epoch": [0], "kl": [kl]}}
        rec["method_results"] = {"moved": moved, "v1.2": {"gain": 0.5}, "flag": True,
                                 "names": ["x"], "note": "text"}
        save(tmp_path, rec)
    figures = build_leaderboard(tmp_path, with_plots=False)["tables"]["synthfer"][
        "method_figures"]["noise30"]
    assert figures.columns == ["test_similarity", "targets: KL to the ground truth", "moved",
                               "v1.2.gain"]
    assert figures.cell("b", "v1.2.gain").mean == 0.5
    assert figures.best("targets: KL to the ground truth") == {"a"}  # lower is better
    assert figures.best("test_similarity") == set() and figures.best("moved") == set()


def test_the_per_sample_plot_has_a_panel_per_row_and_survives_empty_epochs(tmp_path):
    proto = protocol("noise30", rate=30)
    for method in ("man", "ldl"):
        rec = record(proto=proto, method=method)
        rec["noise_summary_epochs"] = {"in_noisy": {
            "epoch": [0, 1, 2], "n_flipped": 3, "n_clean": 57,
            "flipped": {"mean": [None, 0.8, 0.9], "q25": [None, 0.7, 0.8],
                        "q50": [None, 0.8, 0.9], "q75": [None, 0.9, 1.0]},
            "clean": {"mean": [None, 0.1, 0.05], "q25": [None, 0.0, 0.0],
                      "q50": [None, 0.1, 0.0], "q75": [None, 0.2, 0.1]}}}
        save(tmp_path, rec)
    board = build_leaderboard(tmp_path)
    [png] = [p for p in board["plots"] if p.name == "synthfer-noise30-in_noisy.png"]
    assert png.read_bytes()[:8] == PNG_MAGIC
    table = board["tables"]["synthfer"]["per_sample"]["noise30"]
    assert table.cell("MAN", "in_noisy: flipped median").mean == 0.9
    assert table.cell("ldl", "in_noisy: clean mean").mean == 0.05


def test_the_ensemble_table_shows_the_worst_and_best_member(tmp_path):
    save(tmp_path, record(method="esr", metrics={
        "test_member_acc_mean": 0.7, "test_member_acc_min": 0.6, "test_member_acc_max": 0.8,
        "test_ensemble_gain": 0.05, "test_member_disagreement": 0.3}))
    ensemble = build_leaderboard(tmp_path, with_plots=False)["tables"]["synthfer"]["ensemble"]
    table = ensemble["clean"]
    assert table.columns == ["member acc (%)", "worst member (%)", "best member (%)",
                             "ensemble gain (%)", "disagreement (%)"]
    assert table.text("ESR", "worst member (%)") == "60.00 (n=1)"


def test_later_fields_of_the_wrong_type_read_as_empty(tmp_path):
    rec = record(proto=protocol("noise30", rate=30))
    rec.update(noise_summary_epochs=["lam"], distributions="targets", members=[0.5],
               prediction_extras={"x": 1}, weights=None, method="baseline")
    save(tmp_path, rec)
    board = build_leaderboard(tmp_path)
    assert board["n_read"] == 1 and board["skipped"] == []
    assert board["tables"]["synthfer"]["main"].cell("Baseline", "noise30").mean == 0.8
