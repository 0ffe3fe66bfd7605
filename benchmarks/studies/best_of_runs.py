"""Is keeping the lowest validation loss of several training runs a remedy for unstable INDIS training? For finished
cells of `indis bench scaling --train-runs R` (their cached runs are reused, nothing is trained), per run: GOD's and
INDIS's validation loss and test teacher-MSE; then the ratio a user gets by keeping the GOD and the INDIS with the
lowest validation loss over the R runs, against run 0's ratio and the pooled one.

    python benchmarks/studies/best_of_runs.py OUT/cells/NAME [OUT/cells/NAME ...] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indis.bench import scaling as S
from indis.metrics.stats import ratio_ci


def main(folder: Path, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per-run validation and test errors of one cell with "training_runs", and the best-by-validation ratio."""
    res = json.loads((folder / "result.json").read_text())
    R = res["training_runs"]["count"]
    c, s, h, exp, _ = S.open_cell(folder, settings)
    runs = []
    for run in range(R):
        (gsp, god), ginfo = S._god(exp, h, c, s, run)
        isp, ind, iinfo = S._indis(exp, h, c, s, gsp, run=run)
        m = S._test_mse(exp, {"god": (gsp, god), "indis": (isp, ind)})
        gval = min(ginfo["best_val"], ginfo["polish"]["best_val"])  # the GOD kept: the polish where validation preferred it
        runs.append({"god_val": gval, "indis_val": iinfo["best_val"], "god": m["god"], "indis": m["indis"]})
    g = min(runs, key=lambda r: r["god_val"])
    i = min(runs, key=lambda r: r["indis_val"])
    return {"cell": res["name"], "ratios": res["training_runs"]["ratios"], "pooled": res["training_runs"]["ratio"],
            "predicted": res["diagnosis"]["predicted_ratio"],
            "god_val": [r["god_val"] for r in runs], "indis_val": [r["indis_val"] for r in runs],
            "god_test": [float(r["god"].mean()) for r in runs], "indis_test": [float(r["indis"].mean()) for r in runs],
            "best_god_run": runs.index(g), "best_indis_run": runs.index(i),
            "best_ratio": float(i["indis"].mean() / g["god"].mean()), "best_ratio_ci": ratio_ci(i["indis"], g["god"])}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cells", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for f in a.cells:
        rows.append(main(f))
        print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("god_test", "indis_test")}), flush=True)
    if a.out:
        a.out.write_text(json.dumps(rows, indent=1))
    best = np.array([r["best_ratio"] for r in rows])
    print(f"{len(rows)} cells: best-by-validation ratio median {np.median(best):.3f}", flush=True)
