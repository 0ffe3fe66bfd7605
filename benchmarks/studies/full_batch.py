"""Does the trained INDIS/GOD ratio of a cell of `indis bench scaling` depend on the minibatch noise of training?
Run 0 of a finished cell is trained again under a full-batch protocol: GOD's kept schedule polished with every step on
all of the cell's training priors (at INDIS_LRS, the bench's budget rule; kept only where its validation loss is
lower, as the bench keeps its own polish), then INDIS warm-started from that GOD and trained full-batch the same way.
Reported per cell: both protocols' test teacher-MSE of GOD and INDIS, their ratios with paired intervals, and the
bench's (minibatch) INDIS against the full-batch GOD.

    python benchmarks/studies/full_batch.py OUT/cells/NAME [OUT/cells/NAME ...] [--out FILE.json]
    python benchmarks/studies/full_batch.py --summary FILE.json

The full-batch runs are cached in the cell's runs/ folder like the bench's own.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indis.bench import scaling as S
from indis.experiment import best_rate
from indis.methods import learned
from indis.metrics.stats import ratio_ci
from indis.solvers import steps_for_nfe
from indis.training.config import train_seed


def full_batch(exp: Any, h: Any, c: dict[str, Any], s: dict[str, Any], method: str,
               warm: dict[str, Any]) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """`method` warm-started from the run `warm`, every step on all training priors, at each of INDIS_LRS under the
    bench's budget rule; the lowest validation loss wins (cached)."""
    N, seed = steps_for_nfe("ipndm", c["nfe"], False), train_seed(c["seed"], 0)

    def train(lr: float):
        sp = {"method": method, "steps": N, "nfe": c["nfe"], "warm": exp.run_dir(warm).name, "lr": lr,
              "train": S._budget(s), "fullbatch": s["train"], "run": 0}
        cfg = replace(S._tcfg(c, s, lr, 0), batch_size=s["train"])
        kw = {"seed": seed} if method == "indis" else {}
        torch.manual_seed(seed)
        d, info = exp.train(sp, lambda init: learned(h, method, N, "ipndm", init=init, **kw), cfg,
                            [str(exp.run_dir(warm) / "disc")])
        return sp, d, info

    return best_rate(S.INDIS_LRS, train)[:3]


def compare(folder: Path, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Both protocols on one finished cell (module docstring; `settings`: the bench settings it ran under, FULL unless
    given)."""
    c, s, h, exp, _ = S.open_cell(folder, settings)
    (gsp, god), ginfo = S._god(exp, h, c, s)
    isp, ind, iinfo = S._indis(exp, h, c, s, gsp)
    fsp, fgod, finfo = full_batch(exp, h, c, s, "god", gsp)
    kept = finfo["best_val"] < min(ginfo["best_val"], ginfo["polish"]["best_val"])
    gkeep = (fsp, fgod) if kept else (gsp, god)
    fisp, find, fiinfo = full_batch(exp, h, c, s, "indis", gkeep[0])
    m = S._test_mse(exp, {"god": (gsp, god), "indis": (isp, ind), "fgod": gkeep, "findis": (fisp, find)})
    predicted = json.loads((folder / "result.json").read_text())["diagnosis"]["predicted_ratio"]
    row: dict[str, Any] = {"cell": S.cell_name(c), "predicted": predicted, **{k: float(v.mean()) for k, v in m.items()}}
    row.update(minibatch_ratio=row["indis"] / row["god"], minibatch_ratio_ci=ratio_ci(m["indis"], m["god"]),
               full_batch_ratio=row["findis"] / row["fgod"], full_batch_ratio_ci=ratio_ci(m["findis"], m["fgod"]),
               indis_over_full_batch_god=row["indis"] / row["fgod"], full_batch_god_kept=kept,
               god_val=min(ginfo["best_val"], ginfo["polish"]["best_val"]), full_batch_god_val=finfo["best_val"],
               indis_val=iinfo["best_val"], full_batch_indis_val=fiinfo["best_val"],
               full_batch_indis_iterations=fiinfo["iterations"], full_batch_indis_best_iter=fiinfo["best_iter"])
    return row


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How the two protocols compare over cells: median ratios, cells where they differ by more than 0.05, INDIS
    below/above GOD beyond the interval under each, how each method moved, and what choosing on validation gives (the
    GOD and the INDIS with the lowest validation loss over both protocols)."""
    mb, fb = (np.array([r[k] for r in rows]) for k in ("minibatch_ratio", "full_batch_ratio"))

    def beyond(key: str) -> list[int]:
        return [sum(r[key][1] < 1 for r in rows), sum(r[key][0] > 1 for r in rows)]

    g_best = [r["fgod"] if r["full_batch_god_kept"] else r["god"] for r in rows]
    i_best = [r["findis"] if r["full_batch_indis_val"] < r["indis_val"] else r["indis"] for r in rows]
    chosen = np.array(i_best) / np.array(g_best)
    moved = {k: np.array([r["f" + k] / r[k] for r in rows]) for k in ("god", "indis")}
    return {"cells": len(rows), "median_minibatch": float(np.median(mb)), "median_full_batch": float(np.median(fb)),
            "full_batch_lower_by_0.05": int((fb < mb - 0.05).sum()), "full_batch_higher_by_0.05": int((fb > mb + 0.05).sum()),
            "minibatch_below_above_god": beyond("minibatch_ratio_ci"), "full_batch_below_above_god": beyond("full_batch_ratio_ci"),
            **{f"{k}_moved_median": float(np.median(v)) for k, v in moved.items()},
            **{f"{k}_moved_down_up_5pct": [int((v < 0.95).sum()), int((v > 1.05).sum())] for k, v in moved.items()},
            "chosen_on_validation_median": float(np.median(chosen)),
            "chosen_lower_higher_than_minibatch_by_0.05": [int((chosen < mb - 0.05).sum()), int((chosen > mb + 0.05).sum())],
            "prediction_within_0.05_of_minibatch_full_batch_chosen": [
                int(sum(abs(r["predicted"] - v) <= 0.05 for r, v in zip(rows, x))) for x in (mb, fb, chosen)],
            "full_batch_god_kept": sum(r["full_batch_god_kept"] for r in rows),
            "full_batch_indis_chosen": sum(r["full_batch_indis_val"] < r["indis_val"] for r in rows)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cells", nargs="*", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--summary", type=Path, default=None, help="print the summary of a JSON this script wrote")
    a = ap.parse_args()
    if a.summary:
        print(json.dumps(summary(json.loads(a.summary.read_text())), indent=1))
        raise SystemExit(0)
    torch.set_num_threads(1)
    rows = []
    for f in a.cells:
        rows.append(compare(f))
        r = rows[-1]
        print(f"{r['cell']}: INDIS/GOD minibatch {r['minibatch_ratio']:.3f}, full batch {r['full_batch_ratio']:.3f}",
              flush=True)
        if a.out:
            a.out.write_text(json.dumps(rows, indent=1))
