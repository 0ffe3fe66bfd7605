"""The scaling study's figures: the trained INDIS/GOD ratio against d (`figure`), and the diagnostic's predicted ratio
against the trained one, per cell, and (where cells were trained in several runs) against the ratio pooled over runs,
with each run's ratio beside it (`prediction_figure`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .scaling_report import PREDICTION_TOLERANCE, cond_label, precise, solved

CEIL = 1.6  # linear axes, where the +-0.05 target can be seen; ratios above (up to 30 occur) are drawn at the edge
D_COLORS = {2: "tab:blue", 8: "tab:orange", 64: "tab:green", 256: "tab:red", 1024: "tab:purple"}


def _clip(x: Any) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.float64), 0.0, CEIL)


def _band(ax: Any) -> None:
    """The diagonal and the target's +-PREDICTION_TOLERANCE band around it."""
    x = np.array([0.0, CEIL])
    ax.plot(x, x, color="k", lw=0.8)
    for s in (-1, 1):
        ax.plot(x, x + s * PREDICTION_TOLERANCE, color="k", lw=0.6, ls="--")
    ax.set_xlim(-0.03, CEIL + 0.03)
    ax.set_ylim(-0.03, CEIL + 0.03)
    ax.set_aspect("equal")
    ax.set_ylabel("predicted INDIS / GOD (indis eval --diagnose)")
    ax.grid(alpha=0.3)


def _color(r: dict[str, Any]) -> str:
    return "k" if r["cell"]["model"] != "random" else D_COLORS.get(r["cell"]["d"], "tab:gray")


def prediction_figure(results: list[dict[str, Any]], path: Path) -> str | None:
    """Left: predicted against trained ratio (run 0), filled where the trained ratio is known to +-0.05, hollow where
    not. Right (cells with `training_runs`): predicted against the ratio pooled over runs with its interval, each
    run's ratio as a small dot on the same row. None (no file) without counted cells."""
    from matplotlib.lines import Line2D

    from ..plots import new_figure, save_figure

    rs = [r for r in results if not solved(r)]
    if not rs:
        return None
    multi = [r for r in rs if (r.get("training_runs") or {}).get("count", 1) > 1]
    fig, axes = new_figure(2 if multi else 1, 1, panel=(5.0, 4.6))
    for r in rs:
        c, p = _color(r), _clip(r["diagnosis"]["predicted_ratio"])
        axes[0].scatter(_clip(r["ratio"]), p, s=18, edgecolors=c, facecolors=c if precise(r) else "none", lw=0.9)
    axes[0].set_xlabel(f"trained INDIS / GOD, one run (above {CEIL}: at {CEIL}; hollow: CI > +-0.05)")
    if multi:
        ax = axes[1]
        for r in multi:
            b, c, p = r["training_runs"], _color(r), float(_clip(r["diagnosis"]["predicted_ratio"]))
            lo, hi = _clip(b["ratio_ci"])
            ax.plot([lo, hi], [p, p], color=c, lw=0.8, alpha=0.7)
            ax.scatter(_clip(b["ratios"]), np.full(len(b["ratios"]), p), s=5, color=c, alpha=0.5)
            ax.scatter(_clip(b["ratio"]), p, s=22, color=c, marker="D")
        runs = "/".join(str(n) for n in sorted({r["training_runs"]["count"] for r in multi}))
        ax.set_xlabel(f"trained, pooled over {runs} runs (bar: 95% CI, runs and priors; dots: runs)")
    for ax in axes:
        _band(ax)
    ds = sorted({r["cell"]["d"] for r in rs if r["cell"]["model"] == "random"})
    handles = [Line2D([], [], color=D_COLORS.get(d, "tab:gray"), marker="o", ls="none", label=f"d = {d}") for d in ds]
    if any(r["cell"]["model"] != "random" for r in rs):
        handles.append(Line2D([], [], color="k", marker="o", ls="none", label="digits mixture"))
    handles.append(Line2D([], [], color="k", ls="--", lw=0.6, label=f"+-{PREDICTION_TOLERANCE}"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    return save_figure(fig, path).name


COND_COLORS = {"none": "tab:gray", "class": "tab:blue", "class CFG 4": "tab:orange", "embedding": "tab:green",
               "embedding CFG 4": "tab:red"}
K_STYLES = {2: ("o", "-"), 10: ("s", "--"), 100: ("^", ":"), None: ("D", "-.")}  # None: K chosen by BIC (digits)


def _lines(rnd: list[dict[str, Any]]) -> dict[tuple, dict[int, list[dict[str, Any]]]]:
    """(NFE, K, condition) -> d -> cells (seeds), for the figure."""
    groups: dict[tuple, dict[int, list[dict[str, Any]]]] = {}
    for r in rnd:
        c = r["cell"]
        groups.setdefault((c["nfe"], c["K"], cond_label(c)), {}).setdefault(c["d"], []).append(r)
    return groups


def figure(results: list[dict[str, Any]], path: Path) -> str | None:
    """One panel per NFE: INDIS/GOD against d on a log axis (ratios from 0.03 to 30 occur), colour = condition, line
    style = K (seeds averaged, their mean interval), the digits-fitted mixture (K by BIC) as lone diamonds at d = 64;
    last panel: the oracle's reach eps_half against d. Cells where GOD is exact are left out."""
    from matplotlib.lines import Line2D

    from ..plots import new_figure, save_figure

    rnd = [r for r in results if not solved(r)]
    if not rnd:
        return None
    groups = _lines(rnd)
    nfes = sorted({k[0] for k in groups})
    fig, axes = new_figure(len(nfes) + 1, 1, panel=(5.0, 4.2))
    reach = axes[-1]
    conds = [cl for cl in COND_COLORS if any(k[2] == cl for k in groups)]
    for (nfe, K, cl), by_d in sorted(groups.items(), key=lambda kv: str(kv[0])):
        ax, ds = axes[nfes.index(nfe)], sorted(by_d)
        marker, ls = K_STYLES.get(K, K_STYLES[None])
        x = [d * 1.06 ** (conds.index(cl) - 2) for d in ds]  # a small shift per condition so intervals do not overlap
        ratio = [float(np.mean([r["ratio"] for r in by_d[d]])) for d in ds]
        lo = [float(np.mean([r["ratio_ci"][0] for r in by_d[d]])) for d in ds]
        lo = np.minimum(np.maximum(lo, np.multiply(ratio, 1e-2)), ratio)  # log axis: a bound <= 0 drawn at ratio / 100
        hi = [float(np.mean([r["ratio_ci"][1] for r in by_d[d]])) for d in ds]
        style = dict(color=COND_COLORS[cl], marker=marker, ls=ls, ms=4)
        ax.errorbar(x, ratio, yerr=[np.subtract(ratio, lo), np.subtract(hi, ratio)], capsize=2, lw=1.2, **style)
        if nfe == nfes[0]:
            eps = [np.mean([r["eps_half"] for r in by_d[d] if r["eps_half"] is not None] or [np.nan]) for d in ds]
            reach.plot(x, eps, lw=1.2, **style)
    for ax, nfe in zip(axes, nfes):
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylabel(f"INDIS / GOD teacher-MSE, NFE {nfe} (95% CI, log)")
    reach.set_ylabel(f"oracle reach eps_half, NFE {nfes[0]}")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("dimension d")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=COND_COLORS[cl], lw=2, label=cl) for cl in conds]
    handles += [Line2D([], [], color="k", marker=K_STYLES[K][0], ls=K_STYLES[K][1], label=f"K = {K}")
                for K in sorted({k[1] for k in groups if k[1] is not None})]
    if any(k[1] is None for k in groups):
        handles.append(Line2D([], [], color="k", marker=K_STYLES[None][0], ls="none", label="digits mixture (K by BIC)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    return save_figure(fig, path).name
