"""What a user sees for a bad key of `ldlva` or `ldl-alsg`: one line naming it and what it
must be, exit status 2, nothing written; and what `ferbench list` says the keys take."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ferbench.cli import cli
from ldl_fixtures import isolated_cache, one_thread  # noqa: F401  (autouse fixtures)

QUICK = ["--preset", "quick", "--protocol", "noise30", "-o", "n_train=40", "-o", "n_test=8",
         "--epochs", "1", "--device", "cpu", "--precision", "fp32", "--no-leaderboard"]


def refused(method, overrides, out) -> str:
    res = CliRunner().invoke(cli, ["run", "--method", method, *QUICK, "--out", str(out),
                                   *overrides])
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferbench: error:"), res.stderr
    assert not out.exists()
    return lines[0]


@pytest.mark.parametrize("method,overrides,message", [
    ("ldlva", ["calib_hidden=[-3]"], "calib_hidden=[-3]: must be"),
    ("ldlva", ["calib_hidden=[0]"], "calib_hidden=[0]: must be"),
    ("ldlva", ["calib_hidden=[a]"], "calib_hidden=['a']: must be"),
    ("ldlva", ["calib_hidden=[1.5]"], "calib_hidden=[1.5]: must be"),
    ("ldlva", ["feature_dim=-5"], "feature_dim=-5: must be"),
    ("ldlva", ["feature_dim=0"], "feature_dim=0: must be"),
    ("ldlva", ["scheduler=step", "lr_milestones=[a]"], "lr_milestones=['a']: must be"),
    ("ldlva", ["scheduler=step", "lr_milestones=[[0.5]]"], "lr_milestones=[[0.5]]: must be"),
    ("ldlva", ["scheduler=step", "lr_milestones=[1.5,-2]"],
     "lr_milestones=[1.5, -2]: must be a list of fractions of `epochs` in (0, 1)"),
    ("ldlva", ["aux_space=hog:junk"], "aux_space='hog:junk': must be hog without an argument"),
    ("ldl-alsg", ["aux_spaces=[landmarks,lbp:8]"],
     "aux_spaces=['landmarks', 'lbp:8']: must be lbp without an argument"),
    ("ldl-alsg", ["space_weights=[a]"], "space_weights=['a']: must be"),
    ("ldl-alsg", ["space_weights=[-1]"], "space_weights=[-1]: must be a list of weights >= 0"),
    ("ldl-alsg", ["aux_spaces=[landmarks,lbp]", "space_weights=[1,1,1]"],
     "space_weights=[1, 1, 1]: must be one weight for all spaces or one per space"),
    ("ldl-alsg", ["neighbour_pass=bogus"], "neighbour_pass='bogus': must be forward or cache"),
])
def test_a_bad_value_is_one_line_naming_the_key_and_nothing_is_written(
        method, overrides, message, tmp_path):
    assert message in refused(method, overrides, tmp_path / "out")


def test_ldl_alsg_lists_the_neighbour_passes_it_takes():
    res = CliRunner().invoke(cli, ["list", "--method", "ldl-alsg"])
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if line.startswith("neighbour_pass"))
    assert "forward | cache" in row
