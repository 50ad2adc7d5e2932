"""`ferbench run` end to end: the files a run leaves, skipping and --force, evaluating a
checkpoint, and what the user sees for every bad input (one line, exit status 2)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from click.testing import CliRunner
from conftest import write_image

from ferbench.cli import cli

# fp32 named: `auto` picks bf16 on CPUs with AMX or AVX512-BF16, and the record says which.
TINY = ["-o", "n_train=64", "-o", "n_test=32", "--epochs", "1", "--batch-size", "16",
        "--device", "cpu", "--precision", "fp32"]
NOISE30 = ["run", "--method", "baseline", "--protocol", "noise30", *TINY]


def _run(args, out):
    return CliRunner().invoke(cli, [*args, "--out", str(out)], catch_exceptions=False)


def _results(out):
    return sorted(out.rglob("seed*.json")) if out.exists() else []


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """One tiny synthfer noise30 baseline run: (results folder, result file, CLI output)."""
    base = tmp_path_factory.mktemp("stored")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FERBENCH_CACHE", str(base / "cache"))
        res = _run(NOISE30, base / "results")
    assert res.exit_code == 0, res.output
    (path,) = _results(base / "results")
    return base / "results", path, res


# --- a run and its files -------------------------------------------------------------------

RECORD_KEYS = {"schema", "key", "protocol", "method", "config", "dataset", "versions", "device",
               "precision", "wall_time_s", "history", "metrics", "oracle", "selected",
               "per_class", "confusion", "reliability", "rejection_curve", "noise_summary",
               "method_results"}
METRICS = {"test_acc", "test_mean_class_acc", "test_macro_f1", "test_ece", "test_nll",
           "test_brier", "test_kl", "test_rejection_auc", "params", "flops_per_image",
           "train_memorised", "train_corrected", "train_noise_auroc", "train_noise_precision",
           "train_noise_recall", "train_noise_at"}


def test_a_run_writes_a_result_with_the_documented_schema(stored):
    out, path, res = stored
    rec = json.loads(path.read_text())
    assert RECORD_KEYS <= set(rec)
    assert rec["schema"] == 1
    key = rec["key"]
    assert set(key) == {"dataset", "protocol", "method", "seed", "config_hash"}
    assert (key["dataset"], key["protocol"], key["method"], key["seed"]) == \
        ("synthfer", "noise30", "baseline", 0)
    assert path == out / "synthfer" / "noise30" / "baseline" / key["config_hash"] / "seed0.json"
    assert {"id", "family", "params", "label", "noise"} <= set(rec["protocol"])
    assert rec["protocol"]["family"] == "noise" and rec["protocol"]["params"]["rate"] == 30
    assert set(rec["protocol"]["noise"]) == {"hash", "file", "rate", "n_flipped", "n_train",
                                             "source"}
    assert {"name", "plugin", "version", "preset", "preset_source"} <= set(rec["method"])
    assert rec["method"]["preset"] == "quick" and rec["method"]["preset_source"] in (
        "code", "paper-text", "ferbench")
    assert {"method", "engine", "data", "protocol"} <= set(rec["config"])
    assert rec["config"]["method"]["epochs"] == 1 and rec["config"]["method"]["batch_size"] == 16
    ds = rec["dataset"]
    assert {"name", "layout", "classes", "fingerprints", "n_train", "n_test", "notes"} <= set(ds)
    assert (ds["n_train"], ds["n_test"], len(ds["classes"])) == (64, 32, 7)
    assert {"train", "test"} <= set(ds["fingerprints"])
    assert {"ferbench", "torch", "timm", "python", "plugin"} <= set(rec["versions"])
    assert {"type", "name", "threads"} <= set(rec["device"]) and rec["precision"] == "fp32"
    assert len(rec["history"]) == 1
    assert {"epoch", "phase", "loss", "lr", "images_per_s", "test_acc"} <= set(rec["history"][0])
    assert METRICS <= set(rec["metrics"])
    assert 0 <= rec["metrics"]["test_acc"] <= 1
    assert set(rec["oracle"]) == {"test_acc", "epoch"} and rec["selected"] is None
    assert set(rec["per_class"]) == set(ds["classes"])
    assert np.array(rec["confusion"]).shape == (7, 7) and np.sum(rec["confusion"]) == 32
    assert {"confidence", "accuracy", "count"} <= set(rec["reliability"])
    assert len(rec["reliability"]["count"]) == 15 and sum(rec["reliability"]["count"]) == 32
    assert {"coverage", "accuracy"} <= set(rec["rejection_curve"])
    assert "test acc" in res.output and "leaderboard:" in res.output


def test_a_run_writes_per_sample_arrays_weights_noise_file_and_leaderboard(stored):
    out, path, _ = stored
    rec = json.loads(path.read_text())
    arrays = np.load(path.with_suffix(".npz"))
    probs = arrays["test_probs"]
    assert probs.shape == (32, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs >= 0).all()
    assert arrays["test_ids"].shape == (32,) and arrays["train_ids"].shape == (64,)
    assert arrays["test_uncertainty"].shape == (32,) and arrays["test_labels"].shape == (32,)
    assert arrays["train_noise_scores_loss"].shape == (64,)
    assert np.isclose((probs.argmax(1) == arrays["test_labels"]).mean(),
                      rec["metrics"]["test_acc"])
    # the trained weights, loadable without unpickling code, with the run's key
    weights = torch.load(path.parent / "seed0.weights.pt", weights_only=True)
    assert weights["ferbench"]["config_hash"] == rec["key"]["config_hash"]
    assert all(torch.is_tensor(v) for v in weights["state_dict"].values())
    # the noise file, named after the protocol and its hash
    noise = rec["protocol"]["noise"]
    (noise_file,) = (out / "synthfer" / "noise").glob("*.json")
    assert noise_file == out / noise["file"]
    assert noise_file.name == f"noise30-{noise['hash']}.json"
    doc = json.loads(noise_file.read_text())
    assert doc["n_flipped"] == noise["n_flipped"] == round(0.3 * 64) and doc["n_train"] == 64
    assert noise["source"] == "generated" and noise["rate"] == pytest.approx(19 / 64)
    # the leaderboard, and nothing half-written left behind
    assert "Baseline" in (out / "leaderboard.md").read_text()
    left = [p.name for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".run"
            or p.name.endswith(".tmp")]
    assert left == [] and not list(out.rglob("seed0.run"))


def test_a_stored_run_is_skipped_and_force_reruns_it(stored, tmp_path):
    out = tmp_path / "results"
    shutil.copytree(stored[0], out)
    (path,) = _results(out)
    before = path.read_bytes()
    res = _run([*NOISE30, "--no-leaderboard"], out)
    assert res.exit_code == 0 and "stored result, skipped" in res.output
    assert path.read_bytes() == before
    res = _run([*NOISE30, "--no-leaderboard", "--force"], out)
    assert res.exit_code == 0 and "stored result, skipped" not in res.output
    assert _results(out) == [path]
    assert path.read_bytes() != before  # a new wall time at the least
    assert json.loads(path.read_text())["key"] == json.loads(before)["key"]


def test_epochs_0_with_weights_evaluates_the_checkpoint(stored, tmp_path):
    _, path, _ = stored
    rec = json.loads(path.read_text())
    weights = path.parent / "seed0.weights.pt"
    out = tmp_path / "eval"
    res = _run([*NOISE30, "--epochs", "0", "--weights", str(weights), "--no-leaderboard"], out)
    assert res.exit_code == 0, res.output
    (evaluated,) = _results(out)
    ev = json.loads(evaluated.read_text())
    assert ev["history"] == [] and ev["config"]["method"]["epochs"] == 0
    assert ev["key"]["config_hash"] != rec["key"]["config_hash"]
    assert ev["metrics"]["test_acc"] == rec["metrics"]["test_acc"]
    assert np.allclose(np.load(evaluated.with_suffix(".npz"))["test_probs"],
                       np.load(path.with_suffix(".npz"))["test_probs"], atol=1e-5)
    (info,) = ev["weights"]
    assert info["whole_model"] and info["source_run"]["config_hash"] == rec["key"]["config_hash"]


# --- bad input: one line, exit status 2, no result ------------------------------------------

def _refused(args, out, message):
    res = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("ferbench: error:")]
    assert len(errors) == 1, res.stderr
    assert res.stderr.rstrip("\n").splitlines()[-1] == errors[0]
    assert message in errors[0], errors[0]
    assert _results(out) == []
    return errors[0]


@pytest.mark.parametrize("args,message", [
    (["--method", "baselin"], "unknown method 'baselin'; did you mean 'baseline'?"),
    (["--protocol", "nosie30"], "unknown protocol 'nosie30'; did you mean 'noise30'?"),
    (["--dataset", "synthfr"], "unknown dataset 'synthfr'; did you mean 'synthfer'?"),
    (["--protocol", "cross"], "protocol cross needs a target dataset"),
    (["--protocol", "noise100"], "noise rate 100 is outside [0, 100)"),
    (["lr"], "malformed override 'lr': expected KEY=VALUE"),
    (["lr=[1,"], "cannot apply overrides"),
    (["lrr=0.1"], "did you mean 'lr'?"),
    (["-o", "n_train"], "malformed option 'n_train'"),
    (["-o", "n_trian=5"], "unknown option of dataset synthfer 'n_trian'"),
    (["--seeds", "0,x"], "--seeds '0,x'"),
    (["--seeds", ""], "--seeds '': expected distinct integers"),
    (["--seeds", "0,0"], "--seeds '0,0': expected distinct integers"),
    (["optimizer=SGD"], "optimizer='SGD': must be one of adamw, sgd, adam"),
    (["scheduler=Cosine"], "scheduler='Cosine': must be one of onecycle, cosine, step, none"),
    (["batch_size=0"], "batch_size=0: must be >= 1"),
    (["lr=-1"], "lr=-1.0: must be >= 0.0"),
    (["lr=nan"], "lr=nan: must be a finite number"),          # slips past every >= bound
    (["weight_decay=inf"], "weight_decay=inf: must be a finite number"),
    (["momentum=-inf"], "momentum=-inf: must be a finite number"),
    (["label_smoothing=2"], "label_smoothing=2.0: must be in [0.0, 1.0]"),
    (["views=[]"], "views=[]: a method trains on at least one augmentation view"),
    (["views=[[weak,{pad:abc}]]"], "augmentation view weak: pad='abc' must be a number"),
    (["views=[[weak,{padd:0.1}]]"], "parameter of augmentation view weak 'padd'; did you mean 'pad'?"),
    (["engine.select=best"], "engine.select='best': must be final or val"),
    (["engine.threads=-2"], "engine.threads=-2: must be >= 0"),
    (["views=[[weak,{erase:2}]]"], "augmentation view weak: erase=2 must be in [0.0, 1.0]"),
    (["views=[[strong,{ops:2.5}]]"], "augmentation view strong: ops=2.5 must be a whole number"),
    (["--epochs", "0"], "epochs=0 trains nothing, so it evaluates the model it starts from"),
    (["--target", "synthfer"], "--target is read only by protocol cross; add --protocol cross"),
    (["--fer2013-root", "x"], "--fer2013-root is read only by protocol realnoise"),
    (["--label-order", "raf"], "--label-order: dataset synthfer has no numbered class folders "
                               "(the option is for rafdb)"),
    (["--seeds", "-1"], "--seeds '-1': expected distinct integers >= 0"),
    (["--protocol", "noise"], "protocol noise needs a value: --protocol noise30"),
    (["--protocol", "noise-5"], "noise rate -5 is outside [0, 100)"),
    (["--protocol", "noise_file"], "protocol noise_file needs a value: --protocol noise_file=PATH"),
    (["lr=abc"], "method.lr=abc (Value 'abc' of type 'str' could not be converted to Float)"),
    (["tta_flip=maybe"], "method.tta_flip=maybe (Value 'maybe' is not a valid bool"),
    (["--backbone", "resnet81"], "unknown backbone 'resnet81'; did you mean 'resnet18'?"),
    (["--weights", "/"], "/: is a folder, not a weights file"),
    (["--data-root", "/"], "dataset synthfer is not read from disk: drop --data-root /"),
    (["--protocol", "cross", "--target", "ckplus"], "dataset ckplus needs --target-root"),
    (["engine.select=val"], "engine.select=val picks the epoch by validation accuracy, but "
                            "synthfer under clean has no validation split"),
])
def test_bad_input_is_one_error_line_and_exit_status_2(tmp_path, args, message):
    _refused(["run", "--method", "baseline", *TINY, *args], tmp_path / "out", message)


def test_an_unknown_preset_exits_with_status_2(tmp_path):
    res = CliRunner().invoke(cli, ["run", "--preset", "turbo", *TINY, "--out", str(tmp_path)])
    assert res.exit_code == 2 and "turbo" in res.stderr and "Traceback" not in res.output
    assert _results(tmp_path) == []


def test_a_preset_only_the_baseline_has_runs_it(tmp_path):
    res = CliRunner().invoke(cli, ["run", "--method", "baseline", "--preset", "fast", *TINY,
                                   "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    [rec] = [json.loads(p.read_text()) for p in _results(tmp_path)]
    assert rec["method"]["preset"] == "fast"
    assert rec["config"]["method"]["backbone"] == "ferbench_resnet_base"


def test_dataset_options_and_the_noise_seed_given_as_overrides_shape_the_run(tmp_path):
    """`data.options.n_train=48` works like `-o n_train=48`: the run trains on 48 faces."""
    args = ["run", "--method", "baseline", "--protocol", "noise30", "--epochs", "1",
            "--batch-size", "16", "--device", "cpu", "-o", "n_test=32", "-o", "n_train=64"]
    res = _run([*args, "data.options.n_train=48", "protocol.noise_seed=3"], tmp_path / "a")
    assert res.exit_code == 0, res.output
    [rec] = [json.loads(p.read_text()) for p in _results(tmp_path / "a")]
    assert rec["dataset"]["n_train"] == 48
    assert rec["protocol"]["params"]["noise_seed"] == 3
    same = _run([*args[:-1], "n_train=48", "--noise-seed", "3"], tmp_path / "b")
    assert same.exit_code == 0, same.output
    [flags] = [json.loads(p.read_text()) for p in _results(tmp_path / "b")]
    # the same run either way: same config, same noisy labels, same result key
    assert (flags["config"], flags["protocol"], flags["key"]) == \
        (rec["config"], rec["protocol"], rec["key"])


def test_two_noise_files_of_one_name_are_two_runs(tmp_path):
    """Same file name, other labels: the second is a run of its own, not the first's result."""
    paths = []
    for folder, label in (("a", "happiness"), ("b", "sadness")):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "mynoise.txt")
        paths[-1].write_text("".join(f"{i:06d} {label}\n" for i in range(64)))
    args = ["run", "--method", "baseline", *TINY, *[f"--protocol=noise_file={p}" for p in paths]]
    res = _run(args, tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert "skipped" not in res.output
    records = [json.loads(p.read_text()) for p in _results(tmp_path / "out")]
    assert len(records) == 2
    assert records[0]["key"]["config_hash"] != records[1]["key"]["config_hash"]


def test_an_unreadable_stored_result_is_run_again(stored, tmp_path):
    out = tmp_path / "results"
    shutil.copytree(stored[0], out)
    (path,) = _results(out)
    path.write_text(path.read_text()[:300])
    res = _run(NOISE30, out)
    assert res.exit_code == 0, res.output
    assert "the stored result is unreadable, running it again" in " ".join(res.output.split())
    assert json.loads(path.read_text())["metrics"]["test_acc"] == \
        json.loads(stored[1].read_text())["metrics"]["test_acc"]


def test_a_noise_file_with_an_unknown_name_is_refused(tmp_path):
    noise = tmp_path / "mynoise.txt"
    noise.write_text("000000 happiness\nnot_a_sample.png sadness\n")
    line = _refused(["run", "--method", "baseline", *TINY, "--protocol",
                     f"noise_file={noise}"], tmp_path / "out",
                    "unknown image name not_a_sample.png")
    assert f"{noise}:2:" in line


def test_a_noise_file_that_is_not_text_is_refused(tmp_path):
    noise = tmp_path / "mynoise.txt"
    noise.write_bytes(b"\xff\xfe\x00bad\n")
    line = _refused(["run", "--method", "baseline", *TINY, "--protocol",
                     f"noise_file={noise}"], tmp_path / "out", "not a UTF-8 text file")
    assert str(noise) in line


def _weights(tmp_path, kind):
    path = tmp_path / "w.pt"
    if kind == "text":
        path.write_text("not weights\n")
    elif kind == "resnet18":
        torch.save(timm.create_model("resnet18", num_classes=7).state_dict(), path)
    return path


@pytest.mark.parametrize("kind,message", [
    ("missing", "weights file does not exist"),
    ("text", "not a loadable checkpoint"),
    ("resnet18", "does not fit the architecture"),
])
def test_unusable_weights_are_refused(tmp_path, kind, message):
    path = _weights(tmp_path, kind)
    line = _refused(["run", "--method", "baseline", *TINY, "--weights", str(path)],
                    tmp_path / "out", message)
    assert str(path) in line


def test_a_results_folder_that_cannot_be_written_is_refused(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    _refused(["run", "--method", "baseline", *TINY], blocker / "results",
             "results directory is not writable")


def test_a_file_in_the_way_of_a_run_folder_is_refused_before_training(tmp_path):
    out = tmp_path / "results"
    (out / "synthfer").mkdir(parents=True)
    (out / "synthfer" / "clean").write_text("in the way\n")
    line = _refused(["run", "--method", "baseline", *TINY], out,
                    "results directory is not writable")
    assert "synthfer/clean/baseline" in line


def test_a_method_reading_a_view_its_config_does_not_name_is_refused(tmp_path, monkeypatch):
    from ferbench.methods.baseline import Baseline

    def reads_strong(self, model, batch, ctx):
        return model(batch["views"]["strong"]).logsumexp(1).mean()

    monkeypatch.setattr(Baseline, "training_step", reads_strong)
    _refused(["run", "--method", "baseline", *TINY, "views=[weak]"], tmp_path / "out",
             "the method reads the augmentation view 'strong', but its config names only weak: "
             "add it to `views`")


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ferbench.cli", "run", "--protocol", "nosie30",
                           *TINY, "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "ferbench: error: unknown protocol 'nosie30'; did you mean 'noise30'? (choices: clean, "
        "cross, noise, noise10, noise20, noise30, noise_file, realnoise)"]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_validation_selected_run_reaches_the_leaderboard_with_its_selected_epoch(tmp_path):
    from ferbench.leaderboard import build_leaderboard

    res = _run(["run", "--method", "baseline", "--protocol", "noise30", *TINY, "--epochs", "2",
                "protocol.val_fraction=0.25", "engine.select=val"], tmp_path)
    assert res.exit_code == 0, res.output
    [rec] = [json.loads(p.read_text()) for p in _results(tmp_path)]
    assert set(rec["selected"]) == {"epoch", "val_acc", "test_acc"}
    table = build_leaderboard(tmp_path, with_plots=False)["tables"]["synthfer"]["selected"]
    [column] = table.columns
    assert table.cell("Baseline", column).values == [rec["selected"]["test_acc"]]
    md = (tmp_path / "leaderboard.md").read_text()
    assert "Validation-selected test accuracy" in md
    # the noise file covers all 64 training faces; the run trained on the 48 left after the
    # validation share, and the leaderboard says both
    noise = rec["protocol"]["noise"]
    assert noise["n_train"] == 48
    assert (f"The runs train on 48 of them, a validation share of 0.25 held out; "
            f"{noise['n_flipped']} of those differ.") in md


def test_a_run_that_fails_before_storing_leaves_no_empty_folders(tmp_path, monkeypatch):
    from ferbench.methods.baseline import Baseline

    def broken(self, model, batch, ctx):
        raise RuntimeError("a broken training step")

    monkeypatch.setattr(Baseline, "training_step", broken)
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["run", "--method", "baseline", *TINY, "--out", str(out)])
    assert res.exit_code == 1
    # a bug is one line naming where it surfaced (here the method's own step), not a traceback
    [line] = res.stderr.splitlines()[-1:]
    assert re.fullmatch(r"ferbench: internal error in test_run_cli \(test_run_cli\.py:\d+, "
                        r"broken\): "
                        r"RuntimeError: a broken training step \(run with --debug for the "
                        r"traceback\)", line), line
    assert "Traceback" not in res.stderr
    assert [p for p in out.rglob("*")] == []


def test_a_dataset_option_is_one_run_however_its_number_is_spelled(tmp_path):
    args = ["run", "--method", "baseline", *TINY]
    assert _run([*args, "-o", "n_train=064"], tmp_path).exit_code == 0
    again = _run([*args, "-o", "n_train=64"], tmp_path)
    assert again.exit_code == 0 and "stored result, skipped" in again.output
    assert len(_results(tmp_path)) == 1


def test_a_data_folder_is_one_run_however_it_is_spelled(tmp_path, monkeypatch):
    """`--data-root data` and `--data-root /abs/data` hash (and skip) as one run."""
    from ferbench.runner import RunRequest

    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    spellings = ["data", "./data/", str(tmp_path / "data"), f"{tmp_path}/x/../data"]
    roots = {RunRequest(dataset="imagefolder", data_root=s, target_root=s).data_root
             for s in spellings}
    assert roots == {str((tmp_path / "data").resolve())}


# --- cross-dataset: the target's faces against the source's ------------------------------

def _faces(root, split, classes, first_seed, n=3):
    for c in classes:
        for i in range(n):
            write_image(root / split / c / f"{c}{i}.png", first_seed + 10 * i + len(c), size=24)


CROSS = ["run", "--method", "baseline", "--dataset", "imagefolder", "--protocol", "cross",
         "--target", "imagefolder", "--epochs", "1", "--batch-size", "4", "--device", "cpu",
         "--preset", "quick"]


def test_a_cross_target_holding_the_source_faces_is_refused_whatever_its_name(tmp_path):
    """A copy of the source's own test faces in another folder is the source, not a target."""
    src = tmp_path / "src"
    _faces(src, "train", ["happy", "sad"], 0)
    _faces(src, "test", ["happy", "sad"], 1000)
    copy = tmp_path / "copy"
    shutil.copytree(src / "test", copy / "test")
    _faces(copy, "train", ["happy", "sad"], 2000)
    line = _refused([*CROSS, "--data-root", str(src), "--target-root", str(copy)],
                    tmp_path / "out", "protocol cross: 6 of 6 imagefolder test faces are also "
                                      "imagefolder faces (6 test): the same faces")
    assert "within-dataset" in line


def test_a_cross_target_sharing_a_few_source_faces_runs_and_records_them(tmp_path):
    src = tmp_path / "src"
    _faces(src, "train", ["happy", "sad"], 0)
    _faces(src, "test", ["happy", "sad"], 1000)
    target = tmp_path / "target"
    _faces(target, "test", ["happy", "sad"], 3000)
    shutil.copy(src / "train" / "sad" / "sad0.png", target / "test" / "sad" / "copied.png")
    res = CliRunner().invoke(cli, [*CROSS, "--data-root", str(src), "--target-root",
                                   str(target), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "warning: 1 of 7 imagefolder test faces are also imagefolder faces (1 train)" \
        in res.output
    [rec] = [json.loads(p.read_text()) for p in _results(tmp_path / "out")]
    assert rec["protocol"]["record"]["cross"]["faces_shared"] == {
        "test_faces": 7, "shared": 1, "per_source_split": {"train": 1, "test": 0}}


def test_a_run_another_process_is_training_is_skipped_not_trained_twice(tmp_path, monkeypatch):
    import fcntl
    import os

    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    assert _run(NOISE30, out).exit_code == 0
    [path] = _results(out)
    stored = path.read_bytes()
    lock = path.with_suffix(".lock")
    assert not lock.exists()  # a finished run leaves no lock behind
    fd = os.open(lock, os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as another process training this key holds it
    try:
        res = _run([*NOISE30, "--force"], out)
        assert res.exit_code == 0, res.output
        assert "another ferbench process is running it, skipped" in res.output
        assert "test acc" not in res.output and path.read_bytes() == stored
    finally:
        os.close(fd)
    res = _run([*NOISE30, "--force"], out)  # the lock released, as when that process ends
    assert res.exit_code == 0 and "test acc" in res.output, res.output
    assert not lock.exists()


def test_an_interrupted_run_says_how_to_continue_it(tmp_path, monkeypatch):
    import ferbench.runner

    def interrupted(req):
        raise KeyboardInterrupt

    monkeypatch.setattr(ferbench.runner, "run", interrupted)
    res = CliRunner().invoke(cli, ["run", *TINY, "--out", str(tmp_path)])
    assert res.exit_code == 130
    assert res.stderr.splitlines() == ["ferbench: interrupted (the same command with --resume "
                                       "continues from the last finished epoch)"]



def test_an_interrupted_sweep_says_the_same_command_finishes_it(tmp_path, monkeypatch):
    import ferbench.sweep

    def interrupted(*args, **kwargs):   # Ctrl-C while the sweep plans or decodes
        raise KeyboardInterrupt

    monkeypatch.setattr(ferbench.sweep, "run_sweep", interrupted)
    res = CliRunner().invoke(cli, ["run", *TINY, "--jobs", "2", "--out", str(tmp_path)])
    assert res.exit_code == 130
    assert res.stderr.splitlines() == ["ferbench: interrupted (the same command finishes what "
                                       "is missing, interrupted runs from their last finished "
                                       "epoch)"]


def test_a_grid_run_given_resume_or_overrides_says_where_they_go(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("datasets: {synthfer: {}}\nmethods: [baseline]\n")
    res = CliRunner().invoke(cli, ["run", "--grid", str(grid), "--resume"])
    assert res.exit_code == 2 and "run it again without --resume" in res.stderr
    res = CliRunner().invoke(cli, ["run", "--grid", str(grid), "lr=0.1"])
    assert res.exit_code == 2 and "'lr=0.1': KEY=VALUE settings belong in the grid file" \
        in res.stderr
    res = CliRunner().invoke(cli, ["run", "--grid", str(grid), "--method", "man"])
    assert res.exit_code == 2 and "--method belong in it" in res.stderr

def test_a_run_on_a_cpu_other_processes_keep_busy_trains_on_the_free_cores(tmp_path,
                                                                          monkeypatch):
    from ferbench import device

    monkeypatch.setattr(device, "busy_cores", lambda: 1.8)  # a neighbour trains on 2 cores
    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path / "cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    res = _run(["run", "--method", "baseline", *TINY], tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert "the CPU is shared (1.8 of" in res.output and "training with 1 thread" in res.output
    (path,) = _results(tmp_path / "out")
    assert json.loads(path.read_text())["device"]["threads"] == 1
    assert torch.get_num_threads() == 2  # the choice ends with the run
    torch.set_num_threads(before)


def test_threads_follow_only_what_other_processes_use(monkeypatch):
    from ferbench import device

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    cpu = torch.device("cpu")
    for busy, expected in ((0.1, None), (0.4, None), (0.9, (1, 0.9)), (1.7, (1, 1.7)),
                           (5.0, (1, 5.0))):
        monkeypatch.setattr(device, "busy_cores", lambda busy=busy: busy)
        assert device.shared_cpu_threads(cpu) == expected
    assert device.shared_cpu_threads(torch.device("meta")) is None
    torch.set_num_threads(before)
