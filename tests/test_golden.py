"""Golden runs: one small fixed CPU run per protocol family, its key, noise and metrics pinned.

The values were measured before the core was reorganised into its current modules and
must not move with a change that means to keep behaviour: a change that moves them is
seen here and has to say why. At this budget (640 training faces, 5 epochs) the baseline
is barely above chance on synthfer; what is pinned is the arithmetic of the whole path
(data, noise, hashing, training, scoring), not a method's quality. Float metrics get a
tolerance because fp32 kernels sum in another order on another CPU; ids and hashes are exact.
"""

from __future__ import annotations

import json

import pytest

from ferbench.runner import RunRequest, run

FLAGS = {"epochs": 5, "batch_size": 32, "device": "cpu", "precision": "fp32"}
DATA = {"n_train": 640, "n_test": 96}

GOLDEN = {
    "noise30": {
        "overrides": [],
        "path": "synthfer/noise30/baseline/0fa627c0bb/seed0.json",
        "noise": "807d9869859c0983",
        "metrics": {
            "test_acc": 0.16666666666666666, "test_mean_class_acc": 0.15,
            "test_macro_f1": 0.10008042625917361, "test_ece": 0.023709000088274475,
            "test_nll": 1.957594899669024, "test_brier": 0.8611825358224351,
            "test_kl": 1.3590542824168443, "test_acc_low_ambiguity": 0.125,
            "test_acc_mid_ambiguity": 0.21875, "test_acc_high_ambiguity": 0.15625,
            "test_rejection_auc": 0.14783802323272446, "params": 690375,
            "flops_per_image": 40258176.0, "train_memorised": 0.17708333333333334,
            "train_corrected": 0.16666666666666666, "train_noise_auroc": 0.530459449404762,
            "train_noise_precision": 0.3125, "train_noise_recall": 0.3125,
            "train_noise_at": "top_k"}},
    "clean": {
        "overrides": ["protocol.val_fraction=0.2"],
        "path": "synthfer/clean+val0.2/baseline/e141facbc3/seed0.json",
        "noise": None,
        "metrics": {
            "test_acc": 0.125, "test_mean_class_acc": 0.12779839208410637,
            "test_macro_f1": 0.11052578926307365, "test_ece": 0.09339576167985797,
            "test_nll": 2.0112485900777233, "test_brier": 0.8743504525981433,
            "test_kl": 1.4025145475968939, "test_acc_low_ambiguity": 0.125,
            "test_acc_mid_ambiguity": 0.15625, "test_acc_high_ambiguity": 0.09375,
            "test_rejection_auc": 0.15992287708797245, "params": 690375,
            "flops_per_image": 40258176.0}},
}
# One and a half test faces (96) or training flips (192): another CPU may move one face.
TOLERANCE = 0.016


@pytest.mark.slow
@pytest.mark.parametrize("protocol", sorted(GOLDEN))
def test_a_fixed_small_run_gives_its_pinned_key_noise_and_metrics(protocol, tmp_path):
    want = GOLDEN[protocol]
    [path] = run(RunRequest(methods=["baseline"], protocols=[protocol], data_options=DATA,
                            flags=FLAGS, overrides=[*want["overrides"], "engine.threads=2"],
                            out=str(tmp_path),
                            leaderboard=False, show_progress=False))
    assert path.relative_to(tmp_path).as_posix() == want["path"]  # the run key and its hash
    record = json.loads(path.read_text())
    assert (record["protocol"]["noise"] or {}).get("hash") == want["noise"]
    got = {k: v for k, v in record["metrics"].items() if k != "train_images_per_s"}
    assert got.keys() == want["metrics"].keys()
    for key, value in want["metrics"].items():
        if isinstance(value, str) or key in ("params", "flops_per_image"):
            assert got[key] == value, key
        else:
            assert got[key] == pytest.approx(value, abs=TOLERANCE), key
