"""`ferbench data check`: what a user sees for a good dataset, and for every kind of bad one.

Good input prints the layout, the counts per split and class, the extras and the
audit. Bad input gives exit status 2 and exactly one line on stderr,
`ferbench: error: <file>[:<line>]: <problem>`, with no traceback, and leaves no
half-written cache entry or report behind.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_image
from PIL import Image

from ferbench.cli import cli
from ferbench.data import cache as cache_mod
from ferbench.labels import BASIC7

CONSOLE_SCRIPT = "import sys; from ferbench.cli import main; sys.exit(main())"
RAF_CODES = {"surprise": 1, "fear": 2, "disgust": 3, "happiness": 4, "sadness": 5, "anger": 6,
             "neutral": 7}


def ferbench(*args):
    """Run `ferbench ARGS...` in this process; stdout and stderr are kept apart."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def ferbench_process(*args, cwd=None):
    """Run `ferbench ARGS...` as a user does: a fresh process, its exit status and stderr.

    The command line is what the `ferbench` console script runs.
    """
    return subprocess.run([sys.executable, "-c", CONSOLE_SCRIPT, *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


def rows(output: str) -> dict[str, list[str]]:
    """The count table printed by `data check`: {"split": header, split name: counts}."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["split"])
    out = {"split": lines[start].split()[1:]}
    for line in lines[start + 2:]:  # after the header and its dashes
        cells = line.split()
        if not cells or not cells[-1].isdigit():
            break
        out[cells[0]] = [c for c in cells[1:] if c.isdigit()]
    return out


def tree(root: Path, counts: dict[str, dict[str, int]], seed: int = 0) -> Path:
    """An image-folder tree: counts[split][class folder] distinct random images."""
    for split, classes in counts.items():
        for folder, n in classes.items():
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                seed += 1
                write_image(root / split / folder / f"{folder}_{i}.png", seed=seed)
    return root


COUNTS = {"train": {"happy": 3, "sad": 2, "angry": 1}, "test": {"happy": 1, "sad": 1, "angry": 2}}


def raf_official(root: Path, labels=("happiness", "anger", "surprise", "neutral"),
                 test=("sadness", "fear")) -> Path:
    """RAF-DB's official layout: EmoLabel/list_patition_label.txt and Image/aligned/."""
    lines = []
    for split, names in (("train", labels), ("test", test)):
        for i, name in enumerate(names, 1):
            file = f"{split}_{i:05d}.jpg"
            lines.append(f"{file} {RAF_CODES[name]}\n")
            write_image(root / "Image" / "aligned" / file.replace(".jpg", "_aligned.jpg"),
                        seed=len(lines), mode="RGB")
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("".join(lines))
    return root


def fails(result, *fragments: str) -> str:
    """Exit status 2 and one `ferbench: error:` line holding every fragment; return the line."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("ferbench: error: "), line
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def no_half_written(cache: Path, report: Path) -> None:
    """Every cache entry is complete, no temporary folder is left, and no report exists."""
    for entry in (cache.iterdir() if cache.exists() else ()):
        assert not entry.name.startswith("."), f"temporary left in the cache: {entry.name}"
        assert {"images.npy", "hashes.npy", "meta.json"} <= {p.name for p in entry.iterdir()}
    assert not report.exists()
    assert not list(report.parent.glob(f".{report.name}*")), "temporary report left behind"


# --- good input ---------------------------------------------------------------------------


def test_check_imagefolder_prints_layout_counts_per_split_and_class(tmp_path):
    root = tree(tmp_path / "faces", COUNTS)
    result = ferbench("data", "check", "imagefolder", "--data-root", root)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.splitlines()[0] == f"imagefolder: layout splits at {root}"
    assert "roles: train=train, test=test" in out
    table = rows(out)
    # Columns in the canonical order: happiness, sadness, anger; then the total.
    assert table["split"] == ["happiness", "sadness", "anger", "total"]
    assert table["train"] == ["3", "2", "1", "6"]
    assert table["test"] == ["1", "1", "2", "4"]
    assert "audit: 0 images in 0 groups occur in more than one split" in out
    assert "0 near-blank images" in out
    assert result.stderr == ""


def test_check_synthfer_prints_extras_and_their_kind(tmp_path):
    result = ferbench("data", "check", "synthfer", "-o", "n_train=70", "-o", "n_test=30")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("synthfer: layout generated\n")
    table = rows(out)
    assert table["split"] == list(BASIC7) + ["total"]
    assert table["train"][-1] == "70" and sum(map(int, table["train"][:-1])) == 70
    assert table["test"][-1] == "30"
    assert "distribution (70, 7) (label-carrying)" in out
    assert "landmarks (70, 11, 2) (image-derived)" in out


def test_report_holds_the_printed_counts(tmp_path):
    root = tree(tmp_path / "faces", COUNTS)
    report = tmp_path / "report.json"
    result = ferbench("data", "check", "imagefolder", "--data-root", root, "--report", report)
    assert result.exit_code == 0, result.output
    assert f"report written to {report}" in result.stdout
    info = json.loads(report.read_text())
    assert info["dataset"] == "imagefolder" and info["layout"] == "splits"
    assert info["root"] == str(root)
    assert info["splits"]["train"] == {"total": 6, "classes": {"happiness": 3, "sadness": 2,
                                                               "anger": 1}}
    assert info["splits"]["test"] == {"total": 4, "classes": {"happiness": 1, "sadness": 1,
                                                              "anger": 2}}
    table = rows(result.stdout)
    for split in ("train", "test"):
        printed = dict(zip(table["split"], map(int, table[split])))
        saved = info["splits"][split]
        assert printed == {**saved["classes"], "total": saved["total"]}
    assert info["audit"]["cross_split_groups"] == 0
    assert set(info["fingerprints"]) == {"train", "test"}
    assert list(tmp_path.glob(".report.json*")) == []


def test_fer2013_folders_show_val_test_and_their_union(tmp_path):
    root = tmp_path / "fer2013"
    files = {"train/happy/Training_1.jpg": 1, "train/happy/Training_2.jpg": 2,
             "train/angry/Training_3.jpg": 3, "test/happy/PublicTest_4.jpg": 4,
             "test/angry/PrivateTest_5.jpg": 5, "test/angry/PrivateTest_6.jpg": 6}
    for rel, seed in files.items():
        write_image(root / rel, seed=seed)
    result = ferbench("data", "check", "fer2013", "--data-root", root, "--no-audit")
    assert result.exit_code == 0, result.output
    table = rows(result.stdout)
    header = table["split"]
    count = {s: dict(zip(header, map(int, table[s]))) for s in ("train", "val", "test", "test_all")}
    assert count["train"]["total"] == 3 and count["val"]["total"] == 1
    assert count["test"]["anger"] == 2
    assert count["test_all"] == {c: count["val"][c] + count["test"][c] for c in header}
    assert "test_all (val + test)" in result.stdout
    assert "audit" not in result.stdout


def test_audit_finds_leaks_conflicting_labels_and_blank_images(tmp_path):
    root = tree(tmp_path / "faces", COUNTS)
    # The same photo in train and test (same label): a leak.
    shutil.copy(root / "train/happy/happy_0.png", root / "test/happy/leaked.png")
    # The same photo twice in train with two labels: a conflict.
    shutil.copy(root / "train/sad/sad_0.png", root / "train/angry/relabelled.png")
    # A constant grey image: no face at all.
    Image.fromarray(np.full((48, 48), 128, np.uint8)).save(root / "train/sad/blank.png")
    report = tmp_path / "report.json"

    result = ferbench("data", "check", "imagefolder", "--data-root", root, "--report", report)
    assert result.exit_code == 0, result.output
    assert ("audit: 2 images in 1 groups occur in more than one split; 2 identical images in 1 "
            "groups carry conflicting labels; 1 near-blank images") in result.stdout
    details = json.loads(report.read_text())["audit_details"]
    [leak] = details["cross_split"]
    assert sorted(zip(leak["splits"], leak["ids"])) == [("test", "test/happy/leaked.png"),
                                                       ("train", "train/happy/happy_0.png")]
    [conflict] = details["conflicting"]
    assert sorted(zip(conflict["ids"], conflict["labels"])) == [
        ("train/angry/relabelled.png", "anger"), ("train/sad/sad_0.png", "sadness")]
    [blank] = details["near_blank"]
    assert blank["id"] == "train/sad/blank.png" and blank["split"] == "train"
    assert blank["std"] == 0.0


def test_second_check_reuses_the_decoded_cache(tmp_path, isolated_cache, monkeypatch):
    root = tree(tmp_path / "faces", COUNTS)
    first = ferbench("data", "check", "imagefolder", "--data-root", root)
    assert first.exit_code == 0, first.output
    metas = {p: p.stat().st_mtime_ns for p in isolated_cache.glob("*/meta.json")}
    assert len(metas) == 2  # train and test

    def no_decoding(*args, **kwargs):
        raise AssertionError("data check decoded the images again")

    monkeypatch.setattr(cache_mod, "_build", no_decoding)
    second = ferbench("data", "check", "imagefolder", "--data-root", root)
    assert second.exit_code == 0, second.output
    assert second.stdout == first.stdout
    assert {p: p.stat().st_mtime_ns for p in isolated_cache.glob("*/meta.json")} == metas


# --- bad input: exit 2, one line naming the file, nothing half-written ---------------------


def _corrupt(tmp_path):
    root = tree(tmp_path / "faces", COUNTS)
    (root / "train/happy/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return ["imagefolder", "--data-root", root], [str(root / "train/happy/broken.jpg"),
                                                  "corrupt"]


def _truncated(tmp_path):
    root = tree(tmp_path / "faces", COUNTS)
    whole = write_image(tmp_path / "whole.jpg", seed=500, size=96, mode="RGB").read_bytes()
    (root / "test/sad/cut.jpg").write_bytes(whole[: len(whole) // 2])  # a download cut short
    return ["imagefolder", "--data-root", root], [str(root / "test/sad/cut.jpg")]


def _missing_root(tmp_path):
    return ["imagefolder", "--data-root", tmp_path / "nowhere"], [
        f"{tmp_path / 'nowhere'}: data root does not exist"]


def _no_label_file(tmp_path):
    root = raf_official(tmp_path / "raf")
    (root / "EmoLabel" / "list_patition_label.txt").unlink()
    return ["rafdb", "--data-root", root], [
        f"{root}: no rafdb layout found", "EmoLabel/list_patition_label.txt", "split_files",
        "named_folders"]


def _no_label_file_forced_layout(tmp_path):
    root = raf_official(tmp_path / "raf")
    (root / "EmoLabel" / "list_patition_label.txt").unlink()
    return ["rafdb", "--data-root", root, "--layout", "official"], [
        f"{root / 'EmoLabel' / 'list_patition_label.txt'}: file not found"]


def _malformed_line(tmp_path):
    root = raf_official(tmp_path / "raf")
    labels = root / "EmoLabel" / "list_patition_label.txt"
    lines = labels.read_text().splitlines(keepends=True)
    lines[2] = "train_00003.jpg\n"  # the label is missing
    labels.write_text("".join(lines))
    return ["rafdb", "--data-root", root], [f"{labels}:3: malformed line", "train_00003.jpg"]


def _label_out_of_range(tmp_path):
    root = raf_official(tmp_path / "raf")
    labels = root / "EmoLabel" / "list_patition_label.txt"
    lines = labels.read_text().splitlines(keepends=True)
    lines[1] = "train_00002.jpg 9\n"
    labels.write_text("".join(lines))
    return ["rafdb", "--data-root", root], [f"{labels}:2: ", "9", "1-7"]


def _csv_label_out_of_range(tmp_path):
    root = tmp_path / "fer2013"
    root.mkdir()
    pixels = " ".join(["7"] * 48 * 48)
    (root / "fer2013.csv").write_text(
        "emotion,pixels,Usage\n"
        f"3,{pixels},Training\n"
        f"7,{pixels},Training\n"
        f"0,{pixels},PrivateTest\n")
    return ["fer2013", "--data-root", root], [f"{root / 'fer2013.csv'}:3: emotion '7'"]


def _unknown_class_folder(tmp_path):
    root = tree(tmp_path / "faces", {**COUNTS, "train": {"happy": 1, "bored": 1}})
    return ["imagefolder", "--data-root", root], [f"{root / 'train' / 'bored'}: ", "'bored'"]


def _listed_but_missing(tmp_path):
    root = raf_official(tmp_path / "raf")
    (root / "Image/aligned/train_00002_aligned.jpg").unlink()
    labels = root / "EmoLabel" / "list_patition_label.txt"
    return ["rafdb", "--data-root", root], [
        f"{labels}:2: ", "Image/aligned/train_00002_aligned.jpg", "missing"]


def _escaping_path(tmp_path):
    root = raf_official(tmp_path / "raf")
    labels = root / "EmoLabel" / "list_patition_label.txt"
    labels.write_text(labels.read_text() + "../../secret/train_9.jpg 1\n")
    return ["rafdb", "--data-root", root], [f"{labels}:7: ", "'../../secret/train_9.jpg'",
                                            "escapes the data root"]


def _absolute_path(tmp_path):
    root = raf_official(tmp_path / "raf")
    labels = root / "EmoLabel" / "list_patition_label.txt"
    labels.write_text("/etc/train_1.jpg 1\n" + labels.read_text())
    return ["rafdb", "--data-root", root], [f"{labels}:1: ", "/etc/train_1.jpg",
                                            "outside the data root"]


def _empty_split(tmp_path):
    root = tree(tmp_path / "faces", {"train": COUNTS["train"], "test": {"happy": 0}})
    return ["imagefolder", "--data-root", root], [f"{root}: ", "'test'", "empty"]


def _unknown_dataset(tmp_path):
    return ["ferplsu", "--data-root", tmp_path], ["'ferplsu'", "did you mean 'ferplus'?"]


def _unknown_layout(tmp_path):
    root = raf_official(tmp_path / "raf")
    return ["rafdb", "--data-root", root, "--layout", "oficial"], [
        "'oficial'", "did you mean 'official'?"]


def _ambiguous_layout(tmp_path):
    root = raf_official(tmp_path / "raf")
    emo = root / "EmoLabel"
    (emo / "train_label.txt").write_text("train_00001.jpg 4\n")
    (emo / "test_label.txt").write_text("test_00001.jpg 5\n")
    return ["rafdb", "--data-root", root], [f"{root}: ", "ambiguous", "official", "split_files",
                                            "--layout"]


def _malformed_option(tmp_path):
    return ["synthfer", "-o", "n_train"], ["'n_train'", "KEY=VALUE"]


def _unknown_option(tmp_path):
    return ["synthfer", "-o", "n_trian=5"], ["'n_trian'", "did you mean 'n_train'?"]


def _option_of_wrong_type(tmp_path):
    return ["synthfer", "-o", "n_train=many"], ["n_train='many'", "int"]


def _no_data_root(tmp_path):
    return ["imagefolder"], ["--data-root"]


BAD = [_corrupt, _truncated, _missing_root, _no_label_file, _no_label_file_forced_layout,
       _malformed_line, _label_out_of_range, _csv_label_out_of_range, _unknown_class_folder,
       _listed_but_missing, _escaping_path, _absolute_path, _empty_split, _unknown_dataset,
       _unknown_layout, _ambiguous_layout, _malformed_option, _unknown_option,
       _option_of_wrong_type, _no_data_root]


@pytest.mark.parametrize("case", BAD, ids=[c.__name__.strip("_") for c in BAD])
def test_bad_input_is_one_line_naming_the_problem(case, tmp_path, isolated_cache):
    args, fragments = case(tmp_path)
    report = tmp_path / "out" / "report.json"
    report.parent.mkdir()
    result = ferbench("data", "check", *args, "--report", report)
    fails(result, *fragments)
    no_half_written(isolated_cache, report)


def test_a_report_path_in_a_missing_folder_is_refused_before_the_check_runs(tmp_path):
    result = ferbench("data", "check", "synthfer", "--report", tmp_path / "nope" / "r.json")
    fails(result, f"{tmp_path / 'nope'}: report folder does not exist")
    assert "synthfer: layout" not in result.stdout  # refused before the report was printed


def test_unknown_dataset_in_a_real_process_exits_2_with_one_line(tmp_path):
    proc = ferbench_process("data", "check", "ferplsu", cwd=tmp_path)
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert line.startswith("ferbench: error: unknown dataset 'ferplsu'; did you mean "
                           "'ferplus'? (choices: ")
    assert "fer2013, ferplus, imagefolder" in line  # every dataset there is, sorted
    assert proc.stdout == ""


def test_corrupt_image_in_a_real_process_exits_2_and_leaves_a_clean_cache(tmp_path,
                                                                         isolated_cache):
    args, fragments = _corrupt(tmp_path)
    proc = ferbench_process("data", "check", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("ferbench: error: ") and all(f in line for f in fragments), line
    no_half_written(isolated_cache, tmp_path / "report.json")


@pytest.mark.parametrize("args, message", [
    (["data", "check"], "Missing argument 'DATASET'"),
    (["data", "check", "synthfer", "--no-such-flag"], "No such option '--no-such-flag'"),
    (["data", "check", "synthfer", "--image-size", "big"], "'big' is not a valid integer"),
])
def test_usage_errors_in_a_real_process_are_one_line_too(args, message, tmp_path):
    proc = ferbench_process(*args, cwd=tmp_path)
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert line.startswith("ferbench: error: ") and message in line, line
    assert "ferbench data check --help" in line


def test_report_into_a_missing_folder_is_one_line(tmp_path):
    root = tree(tmp_path / "faces", COUNTS)
    report = tmp_path / "no" / "such" / "folder" / "report.json"
    result = ferbench("data", "check", "imagefolder", "--data-root", root, "--no-audit",
                      "--report", report)
    fails(result, str(report.parent), "does not exist")
    assert not report.parent.exists()


def test_impossible_image_size_is_one_line(tmp_path):
    # Through the console entry point, so a fix by click's own validation (IntRange) counts.
    proc = ferbench_process("data", "check", "synthfer", "-o", "n_train=20", "-o", "n_test=10",
                            "--image-size", "0", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("ferbench: error: ") and "image-size" in line, line


def test_failed_report_write_leaves_nothing_behind(tmp_path):
    from ferbench.datacheck import write_report

    report = tmp_path / "report.json"
    with pytest.raises(TypeError):
        write_report({"not JSON": object()}, report)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- real archives (../shared/data): skipped where absent ----------------------------------

CKPLUS = {"anger": 43, "contempt": 17, "disgust": 56, "fear": 25, "happiness": 66,
          "neutral": 575, "sadness": 28, "surprise": 80}
FER2013_TRAIN = {"anger": 3995, "disgust": 436, "fear": 4097, "happiness": 7215,
                 "neutral": 4965, "sadness": 4830, "surprise": 3171}
FER2013_TEST_ALL = {"anger": 958, "disgust": 111, "fear": 1024, "happiness": 1774,
                    "neutral": 1233, "sadness": 1247, "surprise": 831}


def _table(output: str) -> dict[str, dict[str, int]]:
    t = rows(output)
    return {s: dict(zip(t["split"], map(int, v))) for s, v in t.items() if s != "split"}


@pytest.mark.realdata
def test_real_ckplus_counts_match_the_archive_readme(unpacked, tmp_path):
    root = unpacked("ckplus")
    report = tmp_path / "ckplus.json"
    result = ferbench("data", "check", "ckplus", "--data-root", root, "--report", report)
    assert result.exit_code == 0, result.output
    table = _table(result.stdout)
    assert table["all"] == {**CKPLUS, "total": 890}
    assert table["train"]["total"] + table["test"]["total"] == 890
    info = json.loads(report.read_text())
    assert info["splits"]["all"]["classes"] == CKPLUS
    assert info["extras"]["subject"]["kind"] == "image-derived"
    assert "audit" in info
    # Subject-disjoint splits: no subject is in both train and test.
    subjects = {s: {i.split("/")[-1].split("_")[0] for i in ids}
                for s, ids in (("train", _split_ids(root, info, "train")),
                               ("test", _split_ids(root, info, "test")))}
    assert not subjects["train"] & subjects["test"]


def _split_ids(root, info, split):
    from ferbench.datasets import open_dataset
    from ferbench.plugins import registry

    ds = open_dataset(registry().get("datasets", "ckplus"), root, None, info["options"])
    return ds.splits[split].ids


@pytest.mark.realdata
def test_real_fer2013_prints_train_and_test_all_counts(unpacked):
    root = unpacked("fer2013")
    result = ferbench("data", "check", "fer2013", "--data-root", root, "--no-audit")
    assert result.exit_code == 0, result.output
    table = _table(result.stdout)
    assert table["train"] == {**FER2013_TRAIN, "total": 28709}
    assert table["test_all"] == {**FER2013_TEST_ALL, "total": 7178}
    assert table["val"]["total"] == 3589 and table["test"]["total"] == 3589
    assert "layout folders" in result.stdout
