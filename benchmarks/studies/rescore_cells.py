"""Finished cells of `indis bench scaling` rescored from their cached runs, for three questions about the diagnostic
and the trained ratio (nothing of the bench is retrained):

- `curve`: where does a learning-curve prediction miss a well-measured ratio? The diagnostic's GOD and its phi on each
  subset are fitted again exactly as `indis.diagnose` fits them (same rows, seeds, budget: the stored ratios at each
  subset size are reproduced) and scored on the cell's test priors as well: `at_sizes_stored` / `at_sizes_block`
  (phi_n / its GOD on the diagnostic's scored block, stored and recomputed), `at_sizes_test` (the same fits on the
  test priors), `diag_god_over_bench_god` (the diagnostic's GOD against the bench's on the test priors),
  `phi_over_bench_god`, and `bench_ratio` (the bench's INDIS / GOD);
- `best-of-runs`: is keeping the lowest validation loss of several training runs a remedy for unstable training? For
  cells of `--train-runs R`: per run, GOD's and INDIS's validation loss and test teacher-MSE, and the ratio a user
  gets by keeping the GOD and the INDIS with the lowest validation loss over the R runs; per run, the share of each
  test error that its worst 1% of priors carry;
- `agreement`: how well can one training run's ratio be predicted at all? For cells of `--train-runs R`: per run, the
  ratio, its interval and whether INDIS kept its start; `--summary FILE` sets the diagnostic beside the cell's other
  runs as predictors of each run (`agreement_summary`).

    python benchmarks/studies/rescore_cells.py {curve,best-of-runs,agreement} OUT/cells/NAME [OUT/cells/NAME ...] [--out FILE.json]
    python benchmarks/studies/rescore_cells.py agreement --summary FILE.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indis.bench import scaling as S
from indis.bench.scaling_report import PREDICTION_TOLERANCE
from indis.bench.scaling_runs import decided_ci
from indis.diagnose import RECOMMEND_BELOW
from indis.diagnose_curve import CURVE_LRS, _curve_global, _fit_from, curve_rows
from indis.io import atomic_write_json
from indis.losses import mse
from indis.methods import learned
from indis.metrics.stats import ratio_ci, tail_share


def curve_on_test(folder: Path, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """`curve` (module docstring) for one finished cell (`settings`: the bench settings it ran under, FULL unless given)."""
    res = json.loads((folder / "result.json").read_text())
    c, s, h, exp, (gsp, god) = S.open_cell(folder, settings)
    seed, teacher = c["seed"], exp.teacher("train")
    fits, val, score = curve_rows(teacher.num_samples)
    _, xs, cs, x0s = teacher.batch(torch.tensor(score), torch.float64, "cpu")
    _, xT, cond, x0 = exp.data("test")

    def errors(d: Any, x: Any, cnd: Any, ref: Any) -> np.ndarray:
        with torch.no_grad():
            return mse(d.eval().sample(h.denoiser, x, cnd), ref).cpu().numpy()

    shared = _curve_global(h, teacher, god, fits[-1], val, seed, s["cap"])
    ref_block, ref_test, bench_test = errors(shared, xs, cs, x0s), errors(shared, xT, cond, x0), errors(god, xT, cond, x0)
    block, test = [], []
    for rows in fits:
        def phi() -> Any:
            return learned(h, "indis", shared.steps, shared.solver, afs=shared.afs, space=shared.space,
                           free_last=shared.free_last, seed=seed).warm_start(shared)
        fit = min((_fit_from(phi(), h, teacher, rows, val, lr, seed, s["cap"]) for lr in CURVE_LRS), key=lambda r: r[0])[1]
        block.append(errors(fit, xs, cs, x0s))
        test.append(errors(fit, xT, cond, x0))
    return {"cell": res["name"], "sizes": [len(f) for f in fits],
            "at_sizes_stored": res["diagnosis"]["extra"]["curve"]["at_sizes"],
            "at_sizes_block": [float(b.mean() / ref_block.mean()) for b in block],
            "at_sizes_test": [float(t.mean() / ref_test.mean()) for t in test],
            "diag_god_over_bench_god": float(ref_test.mean() / bench_test.mean()),
            "phi_over_bench_god": [float(t.mean() / bench_test.mean()) for t in test],
            "bench_ratio": res["ratio"], "predicted": res["diagnosis"]["predicted_ratio"],
            "pooled": (res.get("training_runs") or {}).get("ratio")}


def _runs(folder: Path, settings: dict[str, Any] | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A cell's result.json and, per training run (from the cache), GOD's and INDIS's validation loss, per-prior test
    errors and whether INDIS kept its GOD start."""
    res = json.loads((folder / "result.json").read_text())
    c, s, h, exp, _ = S.open_cell(folder, settings)
    runs = []
    for run in range(res["training_runs"]["count"]):
        (gsp, god), ginfo = S._god(exp, h, c, s, run)
        isp, ind, iinfo = S._indis(exp, h, c, s, gsp, run=run)
        m = S._test_mse(exp, {"god": (gsp, god), "indis": (isp, ind)})
        runs.append({"god_val": S.god_val(ginfo), "indis_val": iinfo["best_val"], "god": m["god"], "indis": m["indis"],
                     "kept": iinfo["best_iter"] == 0})
    return res, runs


def best_of_runs(folder: Path, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per-run validation and test errors of one cell with "training_runs", and the best-by-validation ratio."""
    res, runs = _runs(folder, settings)
    g = min(runs, key=lambda r: r["god_val"])
    i = min(runs, key=lambda r: r["indis_val"])
    return {"cell": res["name"], "ratios": res["training_runs"]["ratios"], "pooled": res["training_runs"]["ratio"],
            "predicted": res["diagnosis"]["predicted_ratio"],
            "god_val": [r["god_val"] for r in runs], "indis_val": [r["indis_val"] for r in runs],
            "god_test": [float(r["god"].mean()) for r in runs], "indis_test": [float(r["indis"].mean()) for r in runs],
            "god_tail_share": [tail_share(r["god"], 0.01) for r in runs],
            "indis_tail_share": [tail_share(r["indis"], 0.01) for r in runs], "best_god_run": runs.index(g), "best_indis_run": runs.index(i),
            "best_ratio": float(i["indis"].mean() / g["god"].mean()), "best_ratio_ci": ratio_ci(i["indis"], g["god"])}


def agreement(folder: Path, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per run of one cell with "training_runs": INDIS/GOD, its paired interval over the test priors and whether INDIS
    kept its GOD start; beside the diagnostic's prediction and recommendation (`agreement_summary` compares them)."""
    res, runs = _runs(folder, settings)
    return {"cell": res["name"], "predicted": res["diagnosis"]["predicted_ratio"],
            "recommendation": res["diagnosis"]["recommendation"],
            "ratios": [float(r["indis"].mean() / r["god"].mean()) for r in runs],
            "ratio_cis": [ratio_ci(r["indis"], r["god"]) for r in runs], "kept": [bool(r["kept"]) for r in runs]}


def agreement_summary(rows: list[dict[str, Any]], tol: float = PREDICTION_TOLERANCE) -> dict[str, Any]:
    """How well the diagnostic predicts one training run of a cell, beside how well the cell's other training runs do
    (the best a prediction made without training on the full set could hope for: they are draws of the very quantity
    predicted). Over every (cell, run k) as the target: within +-`tol` of run k's ratio (the diagnostic; another run j;
    the median of the other runs); the recommendation right where run k's difference is beyond its interval (an INDIS
    that kept its start a tie) and where run k's interval lies wholly on one side of RECOMMEND_BELOW, for the
    diagnostic, for another run j deciding as the diagnostic decides from its own interval (INDIS where it lies wholly
    below the line), and for always naming INDIS."""
    hit: dict[str, list[bool]] = {"diagnostic": [], "another_run": [], "median_of_others": []}
    right = {line: {"diagnostic": [], "another_run": [], "always_indis": []} for line in (1.0, RECOMMEND_BELOW)}
    for row in rows:
        cis = [decided_ci(ci, kept) for ci, kept in zip(row["ratio_cis"], row["kept"])]
        for k, x in enumerate(row["ratios"]):
            others = [j for j in range(len(row["ratios"])) if j != k]
            hit["diagnostic"].append(abs(row["predicted"] - x) <= tol)
            hit["another_run"] += [abs(row["ratios"][j] - x) <= tol for j in others]
            hit["median_of_others"].append(abs(float(np.median([row["ratios"][j] for j in others])) - x) <= tol)
            for line, tally in right.items():
                if cis[k][0] <= line <= cis[k][1]:
                    continue  # run k does not decide this question
                gain = cis[k][1] < line
                tally["diagnostic"].append((row["recommendation"] == "INDIS") == gain)
                tally["another_run"] += [(cis[j][1] < line) == gain for j in others]
                tally["always_indis"].append(gain)
    share = {k: [int(sum(v)), len(v)] for k, v in hit.items()}
    out = {"cells": len(rows), "tolerance": tol, "within_tolerance": share,
           "right_where_decided": {k: [int(sum(v)), len(v)] for k, v in right[1.0].items()},
           "right_at_threshold": {k: [int(sum(v)), len(v)] for k, v in right[RECOMMEND_BELOW].items()}}
    groups = sorted({_group(r["cell"]) for r in rows}, key=lambda g: int(g[4:]) if g.startswith("d = ") else 10**9)
    if len(groups) > 1:
        out["by_group"] = {g: agreement_summary([r for r in rows if _group(r["cell"]) == g], tol) for g in groups}
    return out


def _group(cell: str) -> str:
    """A cell's row of the grid: "d = 8" for random-d8-..., "digits mixture" for the digits-fitted one."""
    return "digits mixture" if cell.startswith("digits") else "d = " + cell.split("-")[1][1:]


STUDIES = {"curve": curve_on_test, "best-of-runs": best_of_runs, "agreement": agreement}

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", choices=sorted(STUDIES))
    ap.add_argument("cells", nargs="*", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--summary", type=Path, default=None, help="agreement: print the summary of a JSON it wrote")
    a = ap.parse_args()
    if a.summary:
        if a.study != "agreement":
            ap.error("--summary goes with the agreement study")
        print(json.dumps(agreement_summary(json.loads(a.summary.read_text())), indent=1))
        raise SystemExit(0)
    torch.set_num_threads(1)
    rows = json.loads(a.out.read_text()) if a.out and a.out.exists() else []
    done = {r["cell"] for r in rows}  # resumable: cells already in --out are skipped
    for f in a.cells:
        if f.name in done:
            continue
        rows.append(STUDIES[a.study](f))
        print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("god_test", "indis_test")}), flush=True)
        if a.out:
            atomic_write_json(a.out, rows)
