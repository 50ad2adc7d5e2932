"""`protocol.dedup_test=true`: test images whose pixels also occur in another split are left out."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from ferbench.cli import cli
from ferbench.labels import BASIC7

from conftest import write_image


def _tree(root):
    for k, cls in enumerate(BASIC7):
        for i in range(3):
            write_image(root / "train" / cls / f"{i}.png", seed=100 * k + i, size=24)
        for i in range(2):
            write_image(root / "test" / cls / f"{i}.png", seed=1000 + 100 * k + i, size=24)
    # A leak: one training face copied into the test split under another class.
    shutil.copy(root / "train" / "happiness" / "0.png", root / "test" / "anger" / "leak.png")
    return root


def _run(root, out, *extra):
    args = ["run", "--method", "baseline", "--dataset", "imagefolder", "--data-root", str(root),
            "--protocol", "clean", "--epochs", "1", "--batch-size", "8", "--image-size", "24",
            "--device", "cpu", "--out", str(out), "--no-leaderboard", *extra]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(next(out.rglob("seed0.json")).read_text())


def test_dedup_removes_leaked_test_images_and_records_it(tmp_path):
    root = _tree(tmp_path / "faces")
    plain = _run(root, tmp_path / "plain")
    dedup = _run(root, tmp_path / "dedup", "protocol.dedup_test=true")
    assert plain["dataset"]["n_test"] == 15
    assert dedup["dataset"]["n_test"] == 14
    assert dedup["protocol"]["record"]["dedup_test_removed"] == 1
    assert dedup["key"]["protocol"] == "clean+dedup"
    assert dedup["key"]["config_hash"] != plain["key"]["config_hash"]
