"""DMN: "Accelerating Diffusion Sampling with Optimized Time Steps" (Xue et al., CVPR 2024), port of step_optim.py.

The N-1 interior log-SNRs lambda = log(alpha / sigma) are chosen to minimise an upper bound on the final error of
multistep DPM-Solver++ with orders (1, 2, 3, ..., 3, 2, 1), each data-prediction error weighted by a function of
the VP-equivalent alpha, sigma. The bound depends only on N and the end lambdas, so no model calls are needed;
the optimiser is scipy's trust-constr under the monotonicity constraint lambda_T <= lambda_1 <= ... <= lambda_eps.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..schedules import EDM, NoiseSchedule
from .heuristics import _check_schedule, _check_steps, _endpoints, _finish, _t, edm, logsnr, quadratic, uniform

__all__ = ["DMN_INITS", "DMN_WEIGHTS", "dmn", "dmn_objective"]

DMN_INITS = ("unif", "unif_t", "edm", "quad")
DMN_WEIGHTS = ("sigma2_over_alpha", "sigma_over_alpha")


def _H0(h: float) -> float:
    return math.exp(h) - 1


def _H1(h: float) -> float:
    return math.exp(h) * h - _H0(h)


def _H2(h: float) -> float:
    return math.exp(h) * h * h - 2 * _H1(h)


def dmn_objective(lams: np.ndarray, lambda_T: float, lambda_eps: float, trunc_num: int = 3,
                  weight: str = "sigma2_over_alpha") -> float:
    """DMN error bound for interior lambdas `lams` (N-1 values) between lambda_T (noisiest) and lambda_eps.

    Steps s < trunc_num add the root-sum-of-squares of their weighted coefficients; later multistep steps
    accumulate signed coefficients per evaluation, summed in absolute value at the end (step_optim.py).
    """
    if weight not in DMN_WEIGHTS:
        raise InputError(f"unknown DMN weight {weight!r}; choose one of {', '.join(DMN_WEIGHTS)}")
    # plain Python floats: scipy calls this thousands of times and numpy scalar arithmetic is slower
    lam = [float(lambda_T), *np.asarray(lams, dtype=np.float64).reshape(-1).tolist(), float(lambda_eps)]
    N = len(lam) - 1
    h = [lam[i + 1] - lam[i] for i in range(N)]
    E = [math.exp(v) for v in lam]
    alpha = [1.0 / math.sqrt(1 + math.exp(-2 * v)) for v in lam]
    sigma = [1.0 / math.sqrt(1 + math.exp(2 * v)) for v in lam]
    if weight == "sigma2_over_alpha":
        w = [sg * sg / a for sg, a in zip(sigma, alpha)]
    else:
        w = [sg / a for sg, a in zip(sigma, alpha)]
    res = 0.0
    c = [0.0] * N
    for s in range(N):
        if s in (0, N - 1):
            n = s
            res += abs((E[n + 1] - E[n]) * w[n])
            continue
        if s in (1, N - 2):
            n = s - 1
            J = (-E[n + 1] * _H1(h[n + 1]) / h[n],
                 E[n + 1] * (_H1(h[n + 1]) + h[n] * _H0(h[n + 1])) / h[n])
        else:
            n = s - 2
            a, b, hh = h[n], h[n + 1], h[n + 2]
            J = (E[n + 2] * (_H2(hh) + b * _H1(hh)) / (a * (a + b)),
                 -E[n + 2] * (_H2(hh) + (a + b) * _H1(hh)) / (a * b),
                 E[n + 2] * (_H2(hh) + (2 * b + a) * _H1(hh) + b * (a + b) * _H0(hh)) / (b * (a + b)))
        if s >= trunc_num:
            for k, Jk in enumerate(J):
                c[n + k] += w[n + k] * Jk
        else:
            res += math.sqrt(sum((w[n + k] * Jk) ** 2 for k, Jk in enumerate(J)))
    return float(res + sum(abs(v) for v in c))


def dmn(steps: int, schedule: NoiseSchedule | None = None, init: str = "unif", trunc_num: int | None = None,
        weight: str = "sigma2_over_alpha", *, t_max: float | None = None, t_min: float | None = None,
        optimize: bool = True) -> Tensor:
    """DMN schedule: N+1 decreasing times in the schedule's time with optimised interior log-SNRs.

    init: "unif" (uniform lambda; the authors' choice for pixel space), "unif_t" (uniform time; latent space),
    "edm" (rho=7) or "quad" (time-quadratic). trunc_num: default 3 for steps <= 7, else 0 (step_optim.py
    comment). weight: per-evaluation error sigma^2/alpha (code default) or sigma/alpha. optimize=False returns
    the initialisation (the reference's "*_origin" variants).
    """
    steps = _check_steps(steps)
    schedule = _check_schedule(schedule if schedule is not None else EDM())
    if init not in DMN_INITS:
        raise InputError(f"unknown DMN init {init!r}; choose one of {', '.join(DMN_INITS)}")
    if weight not in DMN_WEIGHTS:
        raise InputError(f"unknown DMN weight {weight!r}; choose one of {', '.join(DMN_WEIGHTS)}")
    if trunc_num is None:
        trunc_num = 3 if steps <= 7 else 0
    hi, lo = _endpoints(schedule, t_max, t_min)
    lam_T, lam_eps = float(schedule.lambda_(_t(hi))), float(schedule.lambda_(_t(lo)))
    if not (math.isfinite(lam_T) and math.isfinite(lam_eps)):
        raise InputError(f"dmn needs a finite log-SNR at t_max={hi} and t_min={lo} (flow matching: 0 < t < 1)")
    fn = {"unif": logsnr, "unif_t": uniform, "edm": edm, "quad": quadratic}[init]
    t0 = fn(steps, schedule, t_max=hi, t_min=lo)
    if steps == 1 or not optimize:
        return t0
    from scipy.optimize import LinearConstraint, minimize  # imported here: it costs ~0.6 s at CLI start-up

    lam0 = schedule.lambda_(t0).numpy().astype(np.float64)
    lam0[0], lam0[-1] = lam_T, lam_eps
    # rows: lambda_1 >= lambda_T, lambda_{i+1} - lambda_i >= 0, -lambda_{N-1} >= -lambda_eps
    A = np.zeros((steps, steps - 1))
    for i in range(steps - 1):
        A[i, i], A[i + 1, i] = 1.0, -1.0
    lb = np.zeros(steps)
    lb[0], lb[-1] = lam_T, -lam_eps
    con = LinearConstraint(A, lb, np.full(steps, np.inf))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = minimize(dmn_objective, lam0[1:-1], args=(lam_T, lam_eps, trunc_num, weight), method="trust-constr",
                       constraints=[con])
    lam = np.concatenate(([lam_T], res.x, [lam_eps]))
    if not (np.all(np.diff(lam) > 0) and np.isfinite(res.fun)):
        raise InputError(f"DMN optimisation for steps={steps} did not return an increasing log-SNR grid; try another init")
    t = schedule.t_from_lambda(torch.from_numpy(lam))
    return _finish(t, hi, lo, "dmn")

