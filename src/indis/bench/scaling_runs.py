"""Several training runs of one scaling cell: the trained INDIS/GOD ratio as a mean over runs, not one run's draw.

A cell's GOD and INDIS are trained once per run; run r > 0 differs from run 0 only in its training seed (minibatch
order and phi's initial weights), with the same model, teacher, priors and budget. The pooled ratio is
mean(INDIS error over runs and test priors) / mean(GOD error over them): the expected error of an INDIS from a random
training run against that of a GOD from one. Its interval resamples runs and priors (paired), so it holds the spread
between training runs as well as the scoring noise.
"""
from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

from ..diagnose import RECOMMEND_BELOW
from ..errors import InputError


def pooled_ratio(indis: np.ndarray, god: np.ndarray, *, replicates: int = 2000, seed: int = 0) -> dict[str, Any]:
    """mean(indis) / mean(god) over runs x priors ([R, P] per-prior errors of the same test priors in every run), with a
    95% percentile interval from a two-level paired bootstrap: runs drawn with replacement, then priors."""
    indis, god = np.asarray(indis, dtype=np.float64), np.asarray(god, dtype=np.float64)
    if indis.shape != god.shape or indis.ndim != 2 or indis.shape[1] < 2:
        raise InputError(f"pooled_ratio needs two [runs, priors] arrays of one shape with >= 2 priors, got {indis.shape} "
                         f"and {god.shape}")
    R, P = indis.shape
    rng = np.random.default_rng(seed)
    reps = np.empty(replicates)
    for k in range(replicates):
        r, p = rng.integers(0, R, R), rng.integers(0, P, P)
        reps[k] = indis[np.ix_(r, p)].mean() / god[np.ix_(r, p)].mean()
    return {"ratio": float(indis.mean() / god.mean()), "ratio_ci": [float(np.quantile(reps, 0.025)),
                                                                   float(np.quantile(reps, 0.975))]}


def runs_block(indis: np.ndarray, god: np.ndarray, kept_god: list[bool], predicted: float) -> dict[str, Any]:
    """What a cell stores about its R training runs: each run's ratio and whether its INDIS kept the GOD start, the
    pooled ratio with its interval, and the diagnostic's error against the pooled ratio."""
    pooled = pooled_ratio(indis, god)
    return {"count": int(indis.shape[0]), "ratios": [float(a.mean() / b.mean()) for a, b in zip(indis, god)],
            "kept_god": [bool(k) for k in kept_god], **pooled, "prediction_error": float(predicted - pooled["ratio"])}


def decided_ci(ci: list[float], kept_start: bool) -> list[float]:
    """A ratio's interval for counting wins and losses: [1, 1] (a tie) where the trained schedule kept its warm start
    (best validation at iteration 0). It then is its GOD's schedule under another parameterisation, and the difference
    of at most ~1e-6 relative that a tight paired interval can exclude is float round-off, not a trained difference."""
    return [1.0, 1.0] if kept_start else list(ci)


def pooled_ci(r: dict[str, Any]) -> list[float]:
    """The pooled interval of a cell trained in several runs, a tie where every run's INDIS kept its GOD start."""
    t = r["training_runs"]
    return decided_ci(t["ratio_ci"], bool(t.get("kept_god")) and all(t["kept_god"]))


def known_to(ci: list[float], tol: float) -> bool:
    """Whether an interval pins its ratio to +-`tol` (its half-width)."""
    return (ci[1] - ci[0]) / 2 <= tol


def with_runs(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cells trained in several runs."""
    return [r for r in results if (r.get("training_runs") or {}).get("count", 1) > 1]


def runs_summary(results: list[dict[str, Any]], tol: float) -> dict[str, Any] | None:
    """Over the cells trained in several runs: how often two runs' ratios agree within `tol`, how often the
    diagnostic's prediction is within `tol` of run 0 (the ratio the grid reports), of the pooled ratio and of the
    median run's ratio (what a typical run gives: one failed run can decide the pooled one), and how often the pooled
    ratio is itself known to `tol` (its interval's half-width). None where no cell has runs."""
    rs = with_runs(results)
    if not rs:
        return None
    pairs = [abs(a - b) <= tol for r in rs for a, b in combinations(r["training_runs"]["ratios"], 2)]
    blocks = [r["training_runs"] for r in rs]
    precise = [known_to(b["ratio_ci"], tol) for b in blocks]
    pooled_hit = [abs(b["prediction_error"]) <= tol for b in blocks]
    any_run = [abs(r["diagnosis"]["predicted_ratio"] - x) <= tol for r in rs for x in r["training_runs"]["ratios"]]
    return {"cells": len(rs), "runs": sorted({b["count"] for b in blocks}), "pairs": len(pairs),
            "run0_retrained": sum(not b.get("run0_is_result", True) for b in blocks),
            "pairs_within": int(sum(pairs)), "run_predictions": len(any_run), "runs_within": int(sum(any_run)),
            "first_within": int(sum(abs(r["prediction_error"]) <= tol for r in rs)),
            "pooled_within": int(sum(pooled_hit)), "pooled_precise": int(sum(precise)),
            "median_within": int(sum(abs(r["diagnosis"]["predicted_ratio"] - float(np.median(r["training_runs"]["ratios"])))
                                     <= tol for r in rs)),
            "pooled_within_precise": int(sum(h for h, p in zip(pooled_hit, precise) if p)),
            "pooled_gain": int(sum(pooled_ci(r)[1] < 1.0 for r in rs)),
            "pooled_loss": int(sum(pooled_ci(r)[0] > 1.0 for r in rs))}


def _retrained(t: dict[str, Any]) -> str:
    n = t.get("run0_retrained", 0)
    return f"; in {n} the cell's own runs were gone and run 0 was retrained, so the ratio above is one more draw" if n else ""


def runs_lines(s: dict[str, Any]) -> list[str]:
    """The report's paragraph on cells trained in several runs (summary `s` with `runs_summary` under "training_runs", and
    its "tolerance"), if any."""
    t, tol = s.get("training_runs"), s["tolerance"]
    if not t:
        return []
    return ["", f"Training runs: {t['cells']} cells were trained {'/'.join(map(str, t['runs']))} times (GOD and INDIS, "
            f"other training seeds, the same test priors{_retrained(t)}). Two runs' ratios lie within +-{tol} of each other in "
            f"{t['pairs_within']} of {t['pairs']} pairs ({t['pairs_within'] / t['pairs']:.0%}), the prediction lies within "
            f"+-{tol} of a run's ratio in {t['runs_within']} of {t['run_predictions']} (cell, run) pairs "
            f"({t['runs_within'] / t['run_predictions']:.0%}; another run of the same cell is the reference a prediction "
            f"is judged beside). The prediction is within +-{tol} of run 0 (the ratio above) in "
            f"{t['first_within']} of these cells, of the ratio pooled over runs in {t['pooled_within']} and of the median "
            f"run's in {t['median_within']}; the pooled "
            f"ratio is known to +-{tol} (its interval resamples runs and priors) in {t['pooled_precise']}, and the "
            f"prediction is within +-{tol} of it in {t['pooled_within_precise']} of those. Pooled, INDIS gains beyond "
            f"the interval in {t['pooled_gain']} and loses in {t['pooled_loss']}; the recommendation is right in "
            f"{t['recommendation_right'][0]} cells decided beyond the pooled interval and {t['recommendation_right'][1]} "
            f"asked the {1 - RECOMMEND_BELOW:.0%} way."]
