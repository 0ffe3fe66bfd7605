"""Does the trained INDIS/GOD ratio of a cell of `indis bench scaling` depend on the training protocol? Run 0 of a
finished cell is trained again under another protocol: GOD's kept schedule polished under it (at INDIS_LRS; kept only
where its validation loss is lower, as the bench keeps its own polish), then INDIS warm-started from that GOD and
trained under it too. Protocols (PROTOCOLS):
- `full-batch`: every step on all of the cell's training priors instead of batches of 64 (the bench's budget rule);
- `patience`: the bench's batches, but patience 24 instead of 6 validations (with the plateau rule's halving every 3,
  the learning rate falls to 1/256 before the run stops) and a cap of 6,000 iterations instead of 3,000: trained
  until validation has really stopped improving.
Reported per cell: both protocols' test teacher-MSE of GOD and INDIS, their ratios with paired intervals, and the
bench's INDIS against the other protocol's GOD.

    python benchmarks/studies/protocol.py OUT/cells/NAME [OUT/cells/NAME ...] --protocol P [--out FILE.json]
    python benchmarks/studies/protocol.py --summary FILE.json

The runs are the bench's own GOD polish and INDIS runs (`scaling._from_god`) under the changed settings, cached in the
cell's runs/ folder like the bench's.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indis.bench import scaling as S
from indis.bench.scaling_runs import decided_ci
from indis.io import atomic_write_json
from indis.metrics.stats import ratio_ci

PROTOCOLS = ("full-batch", "patience")
LONG_PATIENCE, LONG_CAP = 24, 6000  # the `patience` protocol


def alt_settings(s: dict[str, Any], protocol: str) -> dict[str, Any]:
    """The bench settings `s` changed as `protocol` changes them (module docstring)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "full-batch":
        return {**s, "batch": s["train"]}
    return {**s, "patience": LONG_PATIENCE, "cap": LONG_CAP}


def compare(folder: Path, protocol: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The bench's protocol and `protocol` on one finished cell (module docstring; `settings`: the bench settings it
    ran under, FULL unless given). Keys: god/indis the bench's run 0, alt_god/alt_indis the other protocol's."""
    c, s, h, exp, _ = S.open_cell(folder, settings)
    alt = alt_settings(s, protocol)
    (gsp, god), ginfo = S._god(exp, h, c, s)
    isp, ind, iinfo = S._indis(exp, h, c, s, gsp)
    fsp, fgod, finfo = S._from_god(exp, h, c, alt, gsp, "god")[:3]  # GOD's polish, then INDIS, under `protocol`
    god_val = S.god_val(ginfo)
    kept = finfo["best_val"] < god_val
    fisp, find, fiinfo = S._from_god(exp, h, c, alt, fsp if kept else gsp, "indis")[:3]
    m = S._test_mse(exp, {"god": (gsp, god), "indis": (isp, ind), "alt_god": (fsp, fgod) if kept else (gsp, god),
                          "alt_indis": (fisp, find)})
    predicted = json.loads((folder / "result.json").read_text())["diagnosis"]["predicted_ratio"]
    row: dict[str, Any] = {"cell": S.cell_name(c), "protocol": protocol, "predicted": predicted,
                           **{k: float(v.mean()) for k, v in m.items()}}
    row.update(base_ratio=row["indis"] / row["god"], base_ratio_ci=ratio_ci(m["indis"], m["god"]),
               alt_ratio=row["alt_indis"] / row["alt_god"], alt_ratio_ci=ratio_ci(m["alt_indis"], m["alt_god"]),
               indis_over_alt_god=row["indis"] / row["alt_god"], alt_god_kept=kept, god_val=god_val,
               alt_god_val=finfo["best_val"], indis_val=iinfo["best_val"], alt_indis_val=fiinfo["best_val"],
               indis_iterations=iinfo["iterations"], indis_best_iter=iinfo["best_iter"],
               alt_indis_iterations=fiinfo["iterations"],
               alt_indis_best_iter=fiinfo["best_iter"], alt_indis_stop=fiinfo.get("stop_reason"))
    return row


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How the two protocols compare over cells: median ratios, cells where they differ by more than 0.05, INDIS
    below/above GOD beyond the interval under each (a tie where INDIS kept its GOD start), how each method moved, and
    what choosing on validation gives (the GOD and the INDIS with the lowest validation loss over both protocols)."""
    base, alt = (np.array([r[k] for r in rows]) for k in ("base_ratio", "alt_ratio"))

    def beyond(ci_key: str, iter_key: str) -> list[int]:  # an INDIS that kept its GOD start ties with it
        cis = [decided_ci(r[ci_key], r[iter_key] == 0) for r in rows]
        return [sum(ci[1] < 1 for ci in cis), sum(ci[0] > 1 for ci in cis)]

    g_best = [r["alt_god"] if r["alt_god_kept"] else r["god"] for r in rows]
    i_best = [r["alt_indis"] if r["alt_indis_val"] < r["indis_val"] else r["indis"] for r in rows]
    chosen = np.array(i_best) / np.array(g_best)
    moved = {k: np.array([r["alt_" + k] / r[k] for r in rows]) for k in ("god", "indis")}
    return {"cells": len(rows), "median_base": float(np.median(base)), "median_alt": float(np.median(alt)),
            "alt_lower_by_0.05": int((alt < base - 0.05).sum()), "alt_higher_by_0.05": int((alt > base + 0.05).sum()),
            "base_below_above_god": beyond("base_ratio_ci", "indis_best_iter"),
            "alt_below_above_god": beyond("alt_ratio_ci", "alt_indis_best_iter"),
            **{f"{k}_moved_median": float(np.median(v)) for k, v in moved.items()},
            **{f"{k}_moved_down_up_5pct": [int((v < 0.95).sum()), int((v > 1.05).sum())] for k, v in moved.items()},
            "chosen_on_validation_median": float(np.median(chosen)),
            "chosen_lower_higher_than_base_by_0.05": [int((chosen < base - 0.05).sum()), int((chosen > base + 0.05).sum())],
            "prediction_within_0.05_of_base_alt_chosen": [
                int(sum(abs(r["predicted"] - v) <= 0.05 for r, v in zip(rows, x))) for x in (base, alt, chosen)],
            "alt_god_kept": sum(r["alt_god_kept"] for r in rows),
            "alt_indis_chosen": sum(r["alt_indis_val"] < r["indis_val"] for r in rows)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cells", nargs="*", type=Path)
    ap.add_argument("--protocol", choices=PROTOCOLS, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--summary", type=Path, default=None, help="print the summary of a JSON this script wrote")
    a = ap.parse_args()
    if a.summary:
        print(json.dumps(summary(json.loads(a.summary.read_text())), indent=1))
        raise SystemExit(0)
    if a.cells and a.protocol is None:
        ap.error("--protocol is required with cells (full-batch or patience)")
    torch.set_num_threads(1)
    rows = json.loads(a.out.read_text()) if a.out and a.out.exists() else []
    done = {r["cell"] for r in rows}
    for f in a.cells:
        if f.name in done:
            continue
        rows.append(compare(f, a.protocol))
        r = rows[-1]
        print(f"{r['cell']}: INDIS/GOD bench {r['base_ratio']:.3f}, {a.protocol} {r['alt_ratio']:.3f}", flush=True)
        if a.out:
            atomic_write_json(a.out, rows)
