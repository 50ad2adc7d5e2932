"""`ferbench run --extra NAME=PATH[:image|:label]`: a user's per-sample file reaches a method
as a dataset extra, is withheld under noise when it carries the label, is part of the run key,
and any fault in it is one line before anything trains."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner

import ferbench.plugins
from ferbench import hookimpl
from ferbench.cli import cli
from ferbench.methods.baseline import Baseline
from ferbench.planning import open_named
from ferbench.plugins import build_registry

DATA = {"n_train": 64, "n_test": 32}
TINY = ["-o", "n_train=64", "-o", "n_test=32", "--epochs", "1", "--batch-size", "16",
        "--device", "cpu", "--precision", "fp32", "--no-leaderboard"]

# What the probe saw, one entry per run in the order the runs trained.
SEEN: list[dict] = []


class ExtrasProbe(Baseline):
    """The baseline, keeping the extras of every training batch beside the batch's ids."""

    def build(self, ctx):
        val = None if ctx.val is None else (list(ctx.val.ids),
                                             {k: v.numpy() for k, v in ctx.val.extras.items()})
        SEEN.append({"train_ids": list(ctx.train.ids), "batches": [], "val": val})
        return super().build(ctx)

    def training_step(self, model, batch, ctx):
        ids = [SEEN[-1]["train_ids"][i] for i in batch["index"].tolist()]
        SEEN[-1]["batches"].append((ids, {k: v.cpu().numpy()
                                          for k, v in batch["extras"].items()}))
        return super().training_step(model, batch, ctx)


class ProbePlugin:
    @hookimpl
    def ferbench_register_methods(self, register):
        register("probe", ExtrasProbe)


@pytest.fixture
def probe(monkeypatch):
    monkeypatch.setenv("FERBENCH_LOAD_PLUGINS", "")
    monkeypatch.setattr(ferbench.plugins, "_REGISTRY",
                        build_registry(extra_plugins=[ProbePlugin()]))
    SEEN.clear()
    return SEEN


@pytest.fixture(scope="module")
def ids():
    """The tiny synthfer set's sample ids: {"train": [...], "test": [...]}."""
    ds = open_named("synthfer", None, None, DATA)
    return {s: list(ds.split(s).ids) for s in ("train", "test")}


def _run(args, out):
    return CliRunner().invoke(cli, ["run", *TINY, *args, "--out", str(out)],
                              catch_exceptions=False)


def _records(out):
    return [json.loads(p.read_text()) for p in sorted(out.rglob("seed*.json"))]


def write_csv(path, ids, values, header=("id", "valence", "arousal")):
    """One row per id under a header row: the form `--extra` reads."""
    rows = [",".join(header)] + [",".join([i, *(str(v) for v in row)])
                                 for i, row in zip(ids, values)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _values(n, width=2, seed=0):
    return np.round(np.random.default_rng(seed).normal(size=(n, width)), 4).astype(np.float32)


# --- a method reads it ----------------------------------------------------------------------

def test_a_method_receives_an_image_derived_extra_under_clean_and_under_noise(probe, ids,
                                                                          tmp_path):
    values = _values(64)
    by_id = dict(zip(ids["train"], values))
    order = np.random.default_rng(1).permutation(64)  # rows in any order: keyed by id
    path = write_csv(tmp_path / "va.csv", [ids["train"][i] for i in order], values[order])

    res = _run(["--method", "probe", "--protocol", "clean", "--protocol", "noise30",
                "--extra", f"va={path}", "protocol.val_fraction=0.25"], tmp_path / "results")
    assert res.exit_code == 0, res.output

    assert len(probe) == 2  # clean, then noise30
    for run in probe:
        seen = set()
        for batch_ids, extras in run["batches"]:
            assert np.array_equal(extras["va"], np.stack([by_id[i] for i in batch_ids]))
            seen.update(batch_ids)
        assert run["batches"] and seen <= set(run["train_ids"])
        val_ids, val_extras = run["val"]  # the validation hold-out carries it too
        assert np.array_equal(val_extras["va"], np.stack([by_id[i] for i in val_ids]))
    want = {"va": {"file": "va.csv", "kind": "image", "width": 2,
                   "hash": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}}
    for rec in _records(tmp_path / "results"):
        assert rec["protocol"]["record"]["extras"] == want


def test_a_label_carrying_extra_is_withheld_under_noise_unless_allowed(probe, ids, tmp_path):
    votes = np.random.default_rng(0).integers(0, 10, size=(64, 8)).astype(np.float32)
    path = tmp_path / "annotations.npz"
    np.savez(path, ids=np.array(ids["train"][::-1]), values=votes[::-1])

    res = _run(["--method", "probe", "--protocol", "clean", "--protocol", "noise30",
                "--extra", f"human={path}:label"], tmp_path / "results")
    assert res.exit_code == 0, res.output
    clean, noisy = probe
    by_id = dict(zip(ids["train"], votes))
    for batch_ids, extras in clean["batches"]:
        assert np.array_equal(extras["human"], np.stack([by_id[i] for i in batch_ids]))
    for _, extras in noisy["batches"]:
        # Withheld like the dataset's own label-carrying `distribution`; image-derived stay.
        assert "human" not in extras and "distribution" not in extras and "landmarks" in extras
    records = {r["key"]["protocol"]: r for r in _records(tmp_path / "results")}
    assert records["noise30"]["protocol"]["record"]["label_extras_withheld"] is True
    assert records["noise30"]["protocol"]["record"]["extras"]["human"]["kind"] == "label"

    probe.clear()
    res = _run(["--method", "probe", "--protocol", "noise30", "--extra", f"human={path}:label",
                "protocol.allow_label_extras=true"], tmp_path / "allowed")
    assert res.exit_code == 0, res.output
    [allowed] = probe
    assert all("human" in extras for _, extras in allowed["batches"])
    [rec] = _records(tmp_path / "allowed")
    assert rec["protocol"]["record"]["label_extras_withheld"] is False


def test_run_help_names_the_option_and_its_default_kind():
    res = CliRunner().invoke(cli, ["run", "--help"])
    assert "--extra NAME=PATH[:image|:label]" in res.output
    assert ":image (the default)" in " ".join(res.output.split())


# --- the run key ----------------------------------------------------------------------------

def test_the_files_content_and_kind_are_part_of_the_run_key(ids, tmp_path, monkeypatch):
    monkeypatch.setenv("FERBENCH_LOAD_PLUGINS", "")
    out = tmp_path / "results"
    values = _values(64)
    first = write_csv(tmp_path / "va.csv", ids["train"], values)

    def config_hash(*extra):
        res = _run(["--method", "baseline", *extra], out)
        assert res.exit_code == 0, res.output
        return {r["key"]["config_hash"] for r in _records(out)}

    none = config_hash()
    with_file = config_hash("--extra", f"va={first}") - none
    assert len(with_file) == 1  # a new run, not the stored one without the extra
    values[0, 0] += 1
    changed = config_hash("--extra", f"va={write_csv(tmp_path / 'va2.csv', ids['train'], values)}")
    assert len(changed - none - with_file) == 1
    as_label = config_hash("--extra", f"va={first}:label")
    assert len(as_label - none - with_file - changed) == 1

    # The same bytes under another name and folder are the same run.
    (tmp_path / "elsewhere").mkdir()
    copy = tmp_path / "elsewhere" / "copy.csv"
    copy.write_bytes(first.read_bytes())
    res = _run(["--method", "baseline", "--extra", f"va={copy}"], out)
    assert res.exit_code == 0 and "stored result, skipped" in res.output, res.output


# --- a bad file is one line, exit status 2, and nothing written ------------------------------

def _csv_with(ids, edit):
    """The valid CSV's lines (header first), changed by `edit(lines)`."""
    lines = ["id,valence,arousal"] + [f"{i},0.5,-0.25" for i in ids["train"]]
    edit(lines)
    return "\n".join(lines) + "\n"


def _set(lines, number, text):
    lines[number - 1] = text


CSV_CASES = {
    # name: (edit of the lines, what the one line must say)
    "a sample without a row": (lambda L, ids: L.pop(6),
                               lambda ids: ["1 of 64 training samples have no values",
                                            ids["train"][5]]),
    "a sample twice": (lambda L, ids: L.append(L[3]),
                       lambda ids: [":66:", "appears again (first on line 4)"]),
    "an unknown id": (lambda L, ids: _set(L, 10, "nobody.png,0,0"),
                      lambda ids: [":10:", "'nobody.png' is not a training sample"]),
    "a test sample": (lambda L, ids: _set(L, 10, f"{ids['test'][3]},0,0"),
                      lambda ids: [":10:", "is a test sample, not a training one"]),
    "a row of the wrong width": (lambda L, ids: _set(L, 7, L[6] + ",1"),
                                 lambda ids: [":7:", "4 columns where the header names 3"]),
    "a NaN": (lambda L, ids: _set(L, 8, L[7].replace("-0.25", "nan")),
              lambda ids: [":8:", "column 'arousal' holds 'nan', not a finite number"]),
    "an infinity": (lambda L, ids: _set(L, 8, L[7].replace("0.5", "1e39")),
                    lambda ids: [":8:", "column 'valence' holds '1e39', not a finite number"]),
    "a word": (lambda L, ids: _set(L, 9, L[8].replace("0.5", "high")),
               lambda ids: [":9:", "column 'valence' holds 'high', not a number"]),
    "no header row": (lambda L, ids: L.pop(0),
                      lambda ids: [":1:", "not a header"]),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_a_bad_csv_is_one_line_naming_the_file_and_the_first_bad_line(case, ids, tmp_path,
                                                                      monkeypatch):
    edit, says = CSV_CASES[case]
    path = tmp_path / "va.csv"
    path.write_text(_csv_with(ids, lambda lines: edit(lines, ids)))
    _refused(["--extra", f"va={path}"], tmp_path, [str(path), *says(ids)], monkeypatch)


def _npz(ids, n=64, edit=None):
    arrays = {"ids": np.array(ids["train"][:n]), "values": np.zeros((n, 2), np.float32)}
    if edit:
        edit(arrays)
    return arrays


NPZ_CASES = {
    "a sample without values": (lambda ids: _npz(ids, n=63),
                                lambda ids: ["1 of 64 training samples have no values",
                                             ids["train"][63]]),
    "a sample twice": (lambda ids: _npz(ids, edit=lambda a: a["ids"].__setitem__(9, a["ids"][2])),
                       lambda ids: [f"id {ids['train'][2]!r} appears again (rows 2 and 9"]),
    "a test sample": (lambda ids: _npz(ids, edit=lambda a: a["ids"].__setitem__(4,
                                                                                ids["test"][0])),
                      lambda ids: [repr(ids["test"][0]), "is a test sample"]),
    "a NaN": (lambda ids: _npz(ids, edit=lambda a: a["values"].__setitem__((7, 1), np.nan)),
              lambda ids: [f"id {ids['train'][7]!r} has a value that is not finite"]),
    "no values array": (lambda ids: {"ids": np.array(ids["train"])},
                        lambda ids: ["no array values"]),
    "values of another length": (lambda ids: {"ids": np.array(ids["train"]),
                                              "values": np.zeros(63)},
                                 lambda ids: ["values has shape (63,) for 64 ids"]),
}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_a_bad_npz_is_one_line_naming_the_file_and_the_first_bad_id(case, ids, tmp_path,
                                                                    monkeypatch):
    make, says = NPZ_CASES[case]
    path = tmp_path / "va.npz"
    np.savez(path, **make(ids))
    _refused(["--extra", f"va={path}"], tmp_path, [str(path), *says(ids)], monkeypatch)


def test_an_npy_file_is_refused_for_want_of_ids(tmp_path, monkeypatch):
    path = tmp_path / "va.npy"
    np.save(path, np.zeros((64, 2)))
    _refused(["--extra", f"va={path}"], tmp_path, [str(path), "holds no sample ids", "np.savez"],
             monkeypatch)


@pytest.mark.parametrize("given, says", [
    ("va={csv}:labels", ["unknown kind 'labels'", ":label", ":image"]),
    ("va={folder}/absent.csv", ["absent.csv: per-sample extra file does not exist"]),
    ("va={folder}", ["is a folder, not a per-sample extra file"]),
    ("distribution={csv}:label", ["synthfer has an extra of that name already", "va.csv"]),
    ("landmarks={csv}", ["synthfer has an extra of that name already"]),
    ("va", ["expected NAME=PATH"]),
    ("2va={csv}", ["the name '2va' must be letters, digits and _"]),
])
def test_a_bad_extra_option_is_one_line(given, says, ids, tmp_path, monkeypatch):
    csv_path = write_csv(tmp_path / "va.csv", ids["train"], _values(64))
    _refused(["--extra", given.format(csv=csv_path, folder=tmp_path)], tmp_path, says,
             monkeypatch)


def test_one_name_twice_is_refused(ids, tmp_path, monkeypatch):
    path = write_csv(tmp_path / "va.csv", ids["train"], _values(64))
    _refused(["--extra", f"va={path}", "--extra", f"va={path}:label"], tmp_path,
             ["--extra va: the name is given twice"], monkeypatch)


def _refused(args, tmp_path, says, monkeypatch):
    monkeypatch.setenv("FERBENCH_LOAD_PLUGINS", "")
    out = tmp_path / "results"
    res = CliRunner().invoke(cli, ["run", "--method", "baseline", *TINY, *args,
                                   "--out", str(out)])
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    [line] = res.stderr.splitlines()
    assert line.startswith("ferbench: error: ") and "Traceback" not in res.output, line
    for text in says:
        assert text in line, (text, line)
    assert not out.exists(), "a refused run left a results folder"
