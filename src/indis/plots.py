"""Small plotting helpers (matplotlib, no pyplot: safe on headless machines and inside other programs).

Figures are built with `new_figure`, drawn with ordinary matplotlib Axes calls and written atomically with
`save_figure` (PNG), so an interrupted run never leaves a half-written image.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .io import atomic_write_bytes

__all__ = ["new_figure", "save_figure", "density_grid", "positive_for_log", "METHOD_STYLES", "style_for"]

# A consistent look for the usual methods across figures; unknown names get a default.
METHOD_STYLES: dict[str, dict[str, Any]] = {
    "uniform": {"color": "#7f7f7f", "marker": "o", "linestyle": "-"},
    "best-heuristic": {"color": "#bcbd22", "marker": "v", "linestyle": "-"},
    "global": {"color": "#1f77b4", "marker": "s", "linestyle": "-"},
    "global-times-only": {"color": "#1f77b4", "marker": "s", "linestyle": ":"},
    "instance-oracle": {"color": "#2ca02c", "marker": "^", "linestyle": "--"},
    "indis": {"color": "#d62728", "marker": "D", "linestyle": "-"},
    "indis-no-shift-scale": {"color": "#d62728", "marker": "D", "linestyle": ":"},
}


def style_for(name: str) -> dict[str, Any]:
    return dict(METHOD_STYLES.get(name, {"color": "#9467bd", "marker": "x", "linestyle": "-."}))


def new_figure(ncols: int = 1, nrows: int = 1, *, panel: tuple[float, float] = (4.0, 3.6), **subplot_kw: Any):
    """A matplotlib Figure with an nrows x ncols grid of Axes (returned as a flat list)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, [ax for row in axes for ax in row]


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Write `fig` as PNG to `path` atomically (temp file + rename)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def density_grid(log_prob: Callable[[np.ndarray], np.ndarray], xlim: Sequence[float], ylim: Sequence[float],
                 n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate a 2-D log-density on an n x n grid: returns (X, Y, logp) ready for `contour`/`contourf`."""
    xs = np.linspace(float(xlim[0]), float(xlim[1]), n)
    ys = np.linspace(float(ylim[0]), float(ylim[1]), n)
    X, Y = np.meshgrid(xs, ys)
    pts = np.stack([X.ravel(), Y.ravel()], 1)
    return X, Y, np.asarray(log_prob(pts), dtype=np.float64).reshape(n, n)


def positive_for_log(values: Sequence[float], floor: float | None = None) -> tuple[np.ndarray, bool]:
    """Values to draw on a log axis: entries <= 0 (e.g. a noisy KL estimate) become `floor` (default: a tenth of
    the smallest positive entry). Returns (array, whether anything was floored)."""
    v = np.asarray(values, dtype=np.float64)
    pos = v[np.isfinite(v) & (v > 0)]
    if floor is None:
        floor = float(pos.min()) / 10 if pos.size else 1e-6
    bad = ~(np.isfinite(v) & (v > 0))
    out = np.where(bad, floor, v)
    return out, bool(bad.any()) and not math.isnan(floor)


def image_mosaic(x: Any, rows: int, gap: int = 1) -> np.ndarray:
    """Tile images [N, C, H, W] in [-1, 1] row-major into one [rows*(H+gap)-gap, cols*(W+gap)-gap, C] array in
    [0, 1]; gaps and unused cells are mid-grey."""
    import torch

    x = ((torch.as_tensor(x).detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    n, h, w, c = x.shape
    cols = -(-n // rows)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, c), 0.5, dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, cols)
        out[r * (h + gap): r * (h + gap) + h, q * (w + gap): q * (w + gap) + w] = x[i]
    return out


def save_image_grid(x: Any, path: str | Path, rows: int | None = None, cell: float = 0.8, title: str | None = None) -> Path:
    """Save images [N, C, H, W] in [-1, 1] (C = 1 or 3) as one grid PNG, atomically (one mosaic drawn once, so
    thousands of images stay fast; the figure is capped at 40 inches a side)."""
    import torch

    x = torch.as_tensor(x)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"save_image_grid needs images [N, 1 or 3, H, W], got {list(x.shape)}")
    n = x.shape[0]
    rows = rows or max(1, int(n**0.5))
    cols = -(-n // rows)
    shrink = min(1.0, 40.0 / (cell * max(rows, cols)))
    fig, (ax,) = new_figure(1, 1, panel=(cell * cols * shrink, cell * rows * shrink))
    img = image_mosaic(x, rows)
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=8)
    return save_figure(fig, path)


def save_point_cloud(x: Any, path: str | Path, title: str | None = None) -> Path:
    """Save 2-D points [N, 2] as a scatter PNG with a title and labelled axes, atomically."""
    import torch

    x = torch.as_tensor(x).detach().float().cpu()
    fig, (ax,) = new_figure(1, 1, panel=(5.0, 5.0))
    ax.scatter(x[:, 0], x[:, 1], s=4)
    ax.set(aspect="equal", xlabel="x[0]", ylabel="x[1]")
    ax.set_title(title or f"{x.shape[0]} samples", fontsize=9)
    return save_figure(fig, path)
