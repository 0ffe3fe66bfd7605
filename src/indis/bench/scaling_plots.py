"""The scaling study's second figure: the diagnostic's predicted INDIS/GOD ratio against the trained one, per cell, and
(where cells were trained in several runs) against the ratio pooled over runs, with each run's ratio beside it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .scaling_report import PREDICTION_TOLERANCE, precise, solved

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
