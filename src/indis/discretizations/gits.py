"""GITS: geometry-inspired time scheduling (Chen et al., ICML 2024), for any schedule and teacher solver.

A fine teacher grid g_0 > ... > g_{G-1} is solved once on a warm-up batch. The cost of jumping from grid point i
to j is the error of one Euler step taken with the teacher's derivative at i; a dynamic program then picks the
N-step sub-path 0 = i_0 < i_1 < ... < i_N = G-1 minimising sum_k coeff^k C[i_k, i_{k+1}].

Everything is done in the EDM-form ODE coordinates of the schedule: y = x / schedule.ode_scale(t),
u = schedule.ode_time(t), dy/du = d = (y - D) / u (plain x and sigma for EDM; x and t for flow matching).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..denoiser import Cond, Denoiser
from ..errors import InputError
from ..solvers import SOLVERS, sample
from .heuristics import _check_steps, heuristic

__all__ = ["GITS_METRICS", "gits", "gits_cost_matrix", "gits_dp", "gits_teacher"]

GITS_METRICS = ("dev", "l2", "l1")
# model calls per teacher step whose first call sits at the step's state (heun adds a corrector call)
_CALLS_PER_STEP = {"heun": 2}


def _flat(x: Tensor | Sequence[Tensor], name: str) -> Tensor:
    if not isinstance(x, Tensor):
        x = torch.stack(list(x))
    if x.dim() < 2:
        raise InputError(f"{name} must have shape [G, B, ...], got {list(x.shape)}")
    return x.reshape(x.shape[0], x.shape[1], -1)


def _deviation(a: Tensor, start: Tensor, end: Tensor) -> Tensor:
    """Per-sample distance from points a [..., B, D] to the line through start and end [B, D]."""
    line = end - start
    unit = line / line.norm(dim=-1, keepdim=True)
    w = end - a
    perp = w - (w * unit).sum(-1, keepdim=True) * unit
    return perp.norm(dim=-1)


def gits_cost_matrix(states: Tensor | Sequence[Tensor], derivs: Tensor | Sequence[Tensor], grid_u: Tensor,
                     metric: str = "dev") -> Tensor:
    """GITS cost C[i, j] (i < j) of one Euler jump from teacher point i to grid point j, batch-averaged.

    states: teacher states y_k [G, B, ...]; derivs: d_k = (y_k - D_k) / u_k [G or G-1, B, ...] (the last is
    unused); grid_u: ODE times u_k [G]. With x_hat = y_i + (u_j - u_i) d_i the metrics are "l2" / "l1":
    mean_B ||x_hat - y_j||, and "dev" (default): mean_B dev(x_hat) - mean_B dev(y_j), where dev is the
    distance to the straight line y_0 -> y_{G-1} and dev(y_{G-1}) := 0 (a signed difference). Entries with
    i >= j are 0 and never used.
    """
    if metric not in GITS_METRICS:
        raise InputError(f"unknown GITS metric {metric!r}; choose one of {', '.join(GITS_METRICS)}")
    X, d = _flat(states, "states"), _flat(derivs, "derivs")
    G = X.shape[0]
    u = torch.as_tensor(grid_u).to(device=X.device, dtype=X.dtype).reshape(-1)
    if G < 2 or u.numel() != G:
        raise InputError(f"grid_u must hold one time per state (G={G} >= 2), got {u.numel()}")
    if d.shape[0] not in (G, G - 1) or d.shape[1:] != X.shape[1:]:
        raise InputError(f"derivs must have shape [G or G-1, B, ...] matching states {list(X.shape)}, got {list(d.shape)}")
    C = torch.zeros(G, G, dtype=X.dtype, device=X.device)
    if metric == "dev":
        dev_tea = _deviation(X, X[0], X[-1]).mean(-1)
        dev_tea[-1] = 0.0
    for i in range(G - 1):
        du = (u[i + 1:] - u[i]).reshape(-1, 1, 1)
        x_hat = X[i] + du * d[i]  # [G-1-i, B, D]
        if metric == "dev":
            C[i, i + 1:] = _deviation(x_hat, X[0], X[-1]).mean(-1) - dev_tea[i + 1:]
        else:
            C[i, i + 1:] = (x_hat - X[i + 1:]).norm(p=2 if metric == "l2" else 1, dim=-1).mean(-1)
    return C


def gits_dp(cost: Tensor | np.ndarray, steps: int, coeff: float = 1.15) -> list[int]:
    """GITS dynamic program: grid indices [0, i_1, ..., G-1] (steps+1 of them) minimising sum_k coeff^k C[i_k, i_{k+1}].

    V[i][1] = C[i][G-1]; V[j][k] = min_{j < i < G-1} C[j][i] + coeff V[i][k-1]; the backtrack from 0 takes the
    first (smallest) minimiser at each level, as in the reference code.
    """
    steps = _check_steps(steps)
    if isinstance(coeff, bool) or not isinstance(coeff, (int, float)) or not math.isfinite(coeff) or coeff <= 0:
        raise InputError(f"GITS coeff must be a finite number > 0 (the reference uses 1.15), got {coeff!r}")
    C = np.asarray(cost.detach().cpu().double() if isinstance(cost, Tensor) else cost, dtype=np.float64)
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise InputError(f"cost must be a square [G, G] matrix, got shape {list(C.shape)}")
    G = C.shape[0]
    if steps > G - 1:
        raise InputError(f"steps must be <= {G - 1} for a grid of {G} points, got {steps}")
    V = np.full((G, steps + 1), np.inf)
    V[:, 1] = C[:, -1]
    for k in range(2, steps + 1):
        for j in range(G - 2):
            V[j, k] = np.min(C[j, j + 1:G - 1] + coeff * V[j + 1:G - 1, k - 1])
    path, w = [0], 0
    for k in range(steps, 1, -1):
        cand = C[w, w + 1:G - 1] + coeff * V[w + 1:G - 1, k - 1]
        w = w + 1 + int(np.argmin(cand))
        path.append(w)
    path.append(G - 1)
    return path


def gits_teacher(denoiser: Denoiser, x_T: Tensor, grid: Tensor, solver: str = "ipndm", cond: Cond = None,
                 **options) -> tuple[Tensor, Tensor, Tensor]:
    """Run the teacher over `grid` and return (states y [G, B, ...], derivs d [G-1, B, ...], ODE times u [G])."""
    if solver not in SOLVERS:
        raise InputError(f"unknown teacher_solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    sched = denoiser.schedule
    with torch.no_grad():
        _, traj = sample(denoiser, x_T, grid, solver=solver, cond=cond, return_trajectory=True, **options)
    G = grid.shape[-1]
    stride = _CALLS_PER_STEP.get(solver, 1)
    D = traj.denoised[::stride][: G - 1]
    if len(D) != G - 1 or len(traj.states) != G:
        raise InputError(f"teacher solver {solver!r} did not record one model call per step; use e.g. 'ipndm' or 'euler'")
    t = grid.to(device=x_T.device, dtype=x_T.dtype)
    u, c = sched.ode_time(t).to(x_T.dtype), sched.ode_scale(t).to(x_T.dtype)
    ys = torch.stack([s / c[k] for k, s in enumerate(traj.states)])
    ds = torch.stack([(ys[k] - D[k]) / u[k] for k in range(G - 1)])
    return ys, ds, u


def gits(denoiser: Denoiser, x_T: Tensor, steps: int, grid: Tensor | str | None = None, num_grid: int = 61,
         coeff: float = 1.15, teacher_solver: str = "ipndm", cond: Cond = None, metric: str = "dev",
         cache: dict | None = None) -> Tensor:
    """GITS schedule of `steps` steps: N+1 decreasing times, a sub-grid of the teacher grid.

    x_T: warm-up initial noise [B, ...] at the grid's first time (GITS uses 256 samples). grid: decreasing
    teacher times, or a heuristic name; default: EDM rho=7 with `num_grid` points in the denoiser's schedule.
    The teacher costs num_grid-1 model calls per warm-up sample. The cost matrix does not depend on `steps`:
    `cache` (a dict the caller keeps for one denoiser, x_T and cond) holds it per grid, teacher solver and metric,
    so schedules for other step counts or solvers cost only the dynamic program.
    """
    if not isinstance(denoiser, Denoiser):
        raise InputError(f"denoiser must be an indis.Denoiser, got {type(denoiser).__name__}")
    steps = _check_steps(steps)
    sched = denoiser.schedule
    if grid is None or isinstance(grid, str):
        if isinstance(num_grid, bool) or not isinstance(num_grid, int) or num_grid < 2:
            raise InputError(f"num_grid must be an integer >= 2, got {num_grid!r}")
        grid = heuristic(grid or "edm", num_grid - 1, sched)
    grid = torch.as_tensor(grid, dtype=torch.float64).reshape(-1)
    if steps > grid.numel() - 1:
        raise InputError(f"steps must be <= {grid.numel() - 1} (the teacher grid has {grid.numel()} points), got {steps}")
    key = (tuple(grid.tolist()), teacher_solver, metric, str(x_T.dtype))
    C = None if cache is None else cache.get(key)
    if C is None:
        X, d, u = gits_teacher(denoiser, x_T, grid, teacher_solver, cond)
        C = gits_cost_matrix(X, d, u, metric)
        if cache is not None:
            cache[key] = C
    return grid[gits_dp(C, steps, coeff)].clone()
