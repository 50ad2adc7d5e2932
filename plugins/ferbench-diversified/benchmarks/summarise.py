"""One line per stored run of a results folder: accuracy, the branch similarity and each
term's kernel, per-branch accuracy and ensemble gain, noise detection.

    python plugins/ferbench-diversified/benchmarks/summarise.py RESULTS_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = [("test_acc", "acc %", 100), ("test_sim_cosine", "cos", 1),
           ("test_sim_kernel_l2", "k_l2", 1), ("test_kernel_spatial", "k_sp", 1),
           ("test_kernel_channel", "k_ch", 1), ("test_kernel_feature", "k_feat", 1),
           ("test_member_acc_mean", "branch acc %", 100), ("test_ensemble_gain", "gain", 100),
           ("test_member_disagreement", "disagree", 100), ("train_noise_auroc", "AUROC", 100)]


def main(folder: str) -> None:
    print("| run | " + " | ".join(c[1] for c in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for path in sorted(Path(folder).rglob("seed*.json")):
        r = json.loads(path.read_text())
        cfg = r["config"]["method"]
        label = r["method"]["name"] if isinstance(r.get("method"), dict) else str(r["method"])
        extra = [f"{k}={cfg[k]}" for k in ("n_branches", "diversity_form", "cbam")
                 if k in cfg and (k != "diversity_form" or cfg[k] != "logdet_unit")]
        cells = []
        for key, _, scale in COLUMNS:
            v = r["metrics"].get(key)
            cells.append("–" if v is None else f"{v * scale:.3f}" if scale == 1 else f"{v * scale:.2f}")
        print(f"| {label} {' '.join(extra)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
