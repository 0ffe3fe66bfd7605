"""A reference solution of the probability-flow ODE for cheap, exact denoisers (Gaussian mixtures): the teacher of
`indis teacher --solver exact` and of `indis bench scaling`."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .denoiser import Cond, Denoiser
from .errors import InputError, ModelOutputError
from .schedules import EDM, FlowMatching

__all__ = ["exact_ode"]


def exact_ode(denoiser: Denoiser, x_T: Tensor, t_start: float, t_end: float, cond: Cond = None, *, rtol: float = 1e-7,
              atol: float | None = None) -> Tensor:
    """The probability-flow ODE solved by an adaptive 8th-order Runge-Kutta method (scipy's DOP853) from t_start to
    t_end for the whole batch at once, in the schedule's EDM-form coordinates: dy/dlog u = y - D. An end at u = 0
    (flow matching to t = 0) is reached by integrating to u = 1e-10 u_start and taking the last step to 0 exactly
    (y(0) = D there, an O(1e-10) change). A reference solution for models whose denoiser is cheap and exact (Gaussian
    mixtures): no gradients, float64, `rtol`/`atol` the integrator's tolerances (default atol = rtol)."""
    import numpy as np
    from scipy.integrate import solve_ivp

    sched = denoiser.schedule
    B, shape = x_T.shape[0], x_T.shape
    u0 = float(sched.ode_time(torch.tensor(float(t_start), dtype=torch.float64)))
    u1 = float(sched.ode_time(torch.tensor(float(t_end), dtype=torch.float64)))
    if not (math.isfinite(u0) and math.isfinite(u1) and u0 > u1 >= 0):
        raise InputError(f"exact_ode needs finite ODE times u(t_start) > u(t_end) >= 0, got {u0} and {u1}")
    plain = isinstance(sched, (EDM, FlowMatching))

    def to_x(y: Tensor, u: float) -> Tensor:
        if plain:
            return y
        return y * float(sched.ode_scale(sched.t_from_ode_time(torch.tensor(u, dtype=torch.float64))))

    def denoise(y: Tensor, u: float) -> Tensor:
        t = sched.t_from_ode_time(torch.tensor(u, dtype=torch.float64))
        with torch.no_grad():
            D, _ = denoiser(to_x(y, u), t.expand(B), cond)
        return D.double()

    def rhs(s: float, y: np.ndarray) -> np.ndarray:
        yt = torch.from_numpy(y).view(shape)
        return (yt - denoise(yt, math.exp(s))).reshape(-1).numpy()

    y0 = x_T.double() if plain else x_T.double() / (to_x(torch.ones(1, dtype=torch.float64), u0))
    stop = u1 if u1 > 0 else 1e-10 * u0
    sol = solve_ivp(rhs, (math.log(u0), math.log(stop)), y0.reshape(-1).cpu().numpy(), method="DOP853", rtol=rtol,
                    atol=rtol if atol is None else atol)
    if not sol.success:
        raise ModelOutputError(f"exact_ode failed: {sol.message}")
    y = torch.from_numpy(sol.y[:, -1]).view(shape)
    if u1 == 0:
        y = denoise(y, stop)  # the exact last step from u = 1e-10 u_start to 0 (Euler to u = 0 lands on D)
    return to_x(y, u1).to(x_T.dtype)
