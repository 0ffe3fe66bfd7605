"""Does the form of the diagnostic's learning-curve extrapolation limit its accuracy? From the committed scaling cells
(each stores phi / GOD on the curve's subsets and the trained INDIS / GOD), the prediction is recomputed under other
forms through the same two points and scored as the bench scores it (|predicted - trained| <= 0.05), by dimension:

- "1/n" (the diagnostic's): r(n) = r_inf + a / n;
- "log 1/n": log r(n) = log r_inf + a / n (never below 0, so never clipped there);
- "power": r(n) = c n^-b;
- "last": the ratio on the largest subset, not extrapolated.

Each is capped at 1 as the diagnostic caps it (INDIS keeps its GOD warm start unless validation improves on it).
Nothing is trained; only the point prediction is recomputed (its interval needs per-prior values not stored).

    python benchmarks/studies/curve_forms.py [CELLS_DIR]   # default: benchmarks/results/scaling/cells
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from indis.bench.scaling_report import PREDICTION_TOLERANCE, curve, solved
from indis.diagnose_curve import extrapolate

FLOOR = 1e-6  # ratios are floored here before a logarithm (a ratio of 0 would have no log)


def log_inverse(r: Sequence[float], n: Sequence[int], m: int) -> float:
    """log r(n) = log r_inf + a / n through the two points, at m priors, capped at 1."""
    lr = [math.log(max(v, FLOOR)) for v in r]
    a = (lr[0] - lr[1]) / (1 / n[0] - 1 / n[1])
    return min(1.0, math.exp(lr[1] + a * (1 / m - 1 / n[1])))


def power(r: Sequence[float], n: Sequence[int], m: int) -> float:
    """r(n) = c n^-b through the two points, at m priors, capped at 1."""
    lr = [math.log(max(v, FLOOR)) for v in r]
    b = (lr[0] - lr[1]) / (math.log(n[1]) - math.log(n[0]))
    return min(1.0, math.exp(lr[1]) * (m / n[1]) ** -b)


FORMS: dict[str, Callable[[Sequence[float], Sequence[int], int], float]] = {
    "1/n": extrapolate, "log 1/n": log_inverse, "power": power, "last": lambda r, n, m: min(1.0, r[-1])}


def table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per form and dimension group (all, d <= 8, d >= 64): cells, share within PREDICTION_TOLERANCE, mean |error|;
    over the counted cells (GOD not exact) with a two-point learning curve."""
    cells = [r for r in results if not solved(r) and len((curve(r) or {}).get("at_sizes", [])) == 2]
    groups = {"all": lambda d: True, "d <= 8": lambda d: d <= 8, "d >= 64": lambda d: d >= 64}
    rows = []
    for name, f in FORMS.items():
        for g, keep in groups.items():
            sel = [r for r in cells if keep(r["cell"]["d"])]
            err = np.array([abs(f(c["at_sizes"], c["sizes"], c["train_size"]) - r["ratio"])
                            for r in sel for c in [curve(r)]])
            rows.append({"form": name, "group": g, "cells": len(sel),
                         "within": float(np.mean(err <= PREDICTION_TOLERANCE)) if len(err) else None,
                         "mean_abs_error": float(err.mean()) if len(err) else None})
    return rows


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).parents[1] / "results" / "scaling" / "cells"
    results = [json.loads(p.read_text()) for p in sorted(root.glob("*/result.json"))]
    print(f"| form | cells | within +-{PREDICTION_TOLERANCE} | mean abs error |\n|---|---|---|---|")
    for row in table(results):
        w = "-" if row["within"] is None else f"{100 * row['within']:.0f}%"
        e = "-" if row["mean_abs_error"] is None else f"{row['mean_abs_error']:.3f}"
        print(f"| {row['form']} ({row['group']}) | {row['cells']} | {w} | {e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
