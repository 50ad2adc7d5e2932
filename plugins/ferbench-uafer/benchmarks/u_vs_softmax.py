"""Is UA-FER's u informative beyond the probabilities it comes from? From stored results.

    python plugins/ferbench-uafer/benchmarks/u_vs_softmax.py RESULTS_DIR [--method uafer]

For every stored run of the method under RESULTS_DIR (its `.json` and `.npz`): test accuracy,
the rejection AUC when faces are rejected by u and when they are rejected by 1 − max p of the
same run (both from the stored per-face arrays, `ferbench.metrics.rejection_curve`), their
Spearman rank correlation, ECE, and, under a noise protocol, the AUROC of each training-set
noise score for the flipped labels (as stored by the harness).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ferbench.metrics import rejection_curve


def rows(root: Path, method: str):
    for result in sorted(root.rglob("seed*.json")):
        record = json.loads(result.read_text())
        if record.get("method", {}).get("name") != method:
            continue
        arrays = np.load(result.with_suffix(".npz"))
        probs, labels = arrays["test_probs"], arrays["test_labels"]
        u = arrays["test_uncertainty"]
        by_u = rejection_curve(probs, labels, u)["rejection_auc"]
        by_p = rejection_curve(probs, labels)["rejection_auc"]
        rho = spearmanr(u, 1 - probs.max(1)).statistic
        m = record["metrics"]
        noise = {k: v for k, v in m.items() if k.startswith("train_noise_auroc")}
        yield {"run": str(result.relative_to(root)), "acc": m.get("test_acc"),
               "ece": m.get("test_ece"), "rejection_auc_u": by_u,
               "rejection_auc_1-maxp": by_p, "spearman_u_1-maxp": rho,
               "u_range": [float(u.min()), float(u.max())], **noise}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path)
    p.add_argument("--method", default="uafer")
    args = p.parse_args(argv)
    found = list(rows(args.results, args.method))
    if not found:
        print(f"{args.results}: no stored {args.method} run", file=sys.stderr)
        return 2
    for r in found:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
