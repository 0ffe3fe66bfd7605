"""Batched, differentiable few-step ODE solvers with per-sample timesteps.

One entry point, `sample(denoiser, x_T, times, solver=...)`. Each solver is a short function of an
evaluator (the model call with the per-step time shift and output scale of INDIS eq. 5), the state and the
per-sample times [B, N+1]. EDM-form solvers (euler, heun, ipndm, ipndm_v) integrate dy/du = (y - D)/u in the
schedule's ODE coordinates (see `indis.schedules`); exponential integrators (ddim, dpmpp_2m, dpmpp_3m, unipc)
use alpha, sigma and lambda = log(alpha/sigma) with data prediction D.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _checkpoint

from .denoiser import Cond, Denoiser, bcast
from .errors import InputError, ModelOutputError
from .schedules import EDM, FlowMatching, NoiseSchedule

SOLVERS = ("euler", "heun", "ddim", "ipndm", "ipndm_v", "dpmpp_2m", "dpmpp_3m", "unipc")


def solver_nfe(solver: str, steps: int, afs: bool = False, final_zero: bool = False) -> int:
    """Number of model calls `solver` makes for `steps` steps (AFS saves the first call)."""
    _check_solver(solver)
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    n = 2 * steps - (1 if final_zero else 0) if solver == "heun" else steps
    return n - (1 if afs else 0)


def steps_for_nfe(solver: str, nfe: int, afs: bool = False) -> int:
    """The number of steps N at which `solver` makes exactly `nfe` model calls; InputError if none does."""
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise InputError(f"NFE must be an integer >= 1, got {nfe!r}")
    for n in range(1, nfe + 2):
        if solver_nfe(solver, n, afs) == nfe:
            return n
    raise InputError(f"solver {solver}{' with AFS' if afs else ''} cannot make exactly {nfe} model calls")


def _check_solver(solver: str) -> None:
    if solver not in SOLVERS:
        raise InputError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")


@dataclass
class Trajectory:
    """What a solver visited: states x_n [N+1 entries, data coordinates], denoised estimates per model call."""

    times: Tensor
    states: list[Tensor] = field(default_factory=list)
    denoised: list[Tensor] = field(default_factory=list)
    eval_times: list[Tensor] = field(default_factory=list)


class _Evaluator:
    """One model call at step n: evaluates at tau + shift[n], scales eps by scale[n] (eq. 5), returns x0-hat at tau."""

    def __init__(self, denoiser: Denoiser, cond: Cond, shift: Tensor | None, scale: Tensor | None,
                 use_checkpoint: bool, check_finite: bool, trajectory: Trajectory | None, first: Tensor | None = None):
        self.den, self.sched, self.cond = denoiser, denoiser.schedule, cond
        self.shift, self.scale = shift, scale
        self.use_checkpoint, self.check_finite, self.traj = use_checkpoint, check_finite, trajectory
        self.first_x0 = first  # the model's x0 at the first call's point, computed by the caller: that call reuses it
        self.nfe = 0

    def _eval(self, x: Tensor, tau: Tensor, sh: Tensor | None, sc: Tensor | None, x0: Tensor | None = None) -> Tensor:
        s = self.sched
        t_eval = tau if sh is None else s.clamp_eval(tau + sh)
        if x0 is None:
            x0, _ = self.den(x, t_eval, self.cond)
        if sh is None and sc is None:
            return x0
        # The model's output as a derivative in the ODE coordinates at its evaluation time: eps for EDM and VP
        # (VE coordinates), the velocity for flow matching. Scaling it (eq. 5) stays well conditioned up to
        # t = 1, where an eps scale would be divided by alpha = 1 - t.
        d = (x / bcast(s.ode_scale(t_eval), x) - x0) / bcast(s.ode_time(t_eval), x)
        if sc is not None:
            d = d * bcast(sc, x)
        return x / bcast(s.ode_scale(tau), x) - bcast(s.ode_time(tau), x) * d

    def __call__(self, x: Tensor, tau: Tensor, n: int) -> Tensor:
        sh = None if self.shift is None else self.shift[:, n]
        sc = None if self.scale is None else self.scale[:, n]
        x0, self.first_x0 = self.first_x0, None  # only the first call has one
        if self.use_checkpoint and torch.is_grad_enabled():
            d = _checkpoint(self._eval, x, tau, sh, sc, x0, use_reentrant=False)
        else:
            d = self._eval(x, tau, sh, sc, x0)
        self.nfe += 1
        if self.check_finite and not bool(torch.isfinite(d).all()):
            raise ModelOutputError(
                f"the model output at call {self.nfe} (step {n}, t={tau.detach().flatten()[:4].tolist()}) contains NaN or Inf; "
                "check the model, its dtype and the times it is evaluated at")
        if self.traj is not None:
            self.traj.denoised.append(d)
            self.traj.eval_times.append(tau if sh is None else self.sched.clamp_eval(tau + sh))
        return d

    def afs(self, x: Tensor, tau: Tensor, n: int) -> Tensor:
        """Analytical first step: eps = x / sqrt(alpha^2 + sigma^2), i.e. D ~ E[x0] = 0 for unit-variance data."""
        s = self.sched
        a, sg = bcast(s.alpha(tau), x), bcast(s.sigma(tau), x)
        eps = x / torch.sqrt(a * a + sg * sg)
        if self.scale is not None:
            eps = eps * bcast(self.scale[:, n], x)
        pos = a > 0
        d = torch.where(pos, (x - sg * eps) / torch.where(pos, a, torch.ones_like(a)), torch.zeros_like(x))  # D = 0 at alpha = 0
        if self.traj is not None:
            self.traj.denoised.append(d)
            self.traj.eval_times.append(tau)
        return d

    def first(self, x: Tensor, tau: Tensor, afs: bool) -> Tensor:
        return self.afs(x, tau, 0) if afs else self(x, tau, 0)

    def record(self, x: Tensor) -> None:
        if self.traj is not None:
            self.traj.states.append(x)


def _steps(n: int, progress: bool, desc: str) -> Sequence[int] | Any:
    if not progress:
        return range(n)
    from tqdm.auto import tqdm

    return tqdm(range(n), desc=desc, leave=False)


# ----------------------------------------------------------------------------------------------------------
# EDM-form solvers: state y = x / c(t), ODE time u(t), derivative d = (y - D) / u.
# ----------------------------------------------------------------------------------------------------------
class _Coords:
    def __init__(self, sched: NoiseSchedule, t: Tensor):
        self.identity = isinstance(sched, (EDM, FlowMatching))
        self.u = sched.ode_time(t)
        self.c = None if self.identity else sched.ode_scale(t)

    def to_y(self, x: Tensor, n: int) -> Tensor:
        return x if self.c is None else x / bcast(self.c[:, n], x)

    def to_x(self, y: Tensor, n: int) -> Tensor:
        return y if self.c is None else y * bcast(self.c[:, n], y)


def _euler(ev: _Evaluator, x: Tensor, t: Tensor, *, afs: bool = False, progress: bool = False, **_: Any) -> Tensor:
    k = _Coords(ev.sched, t)
    y = k.to_y(x, 0)
    for n in _steps(t.shape[1] - 1, progress, "euler"):
        xn = k.to_x(y, n)
        ev.record(xn)
        D = ev.afs(xn, t[:, n], n) if (afs and n == 0) else ev(xn, t[:, n], n)
        d = (y - D) / bcast(k.u[:, n], y)
        y = y + bcast(k.u[:, n + 1] - k.u[:, n], y) * d
    return k.to_x(y, t.shape[1] - 1)


def _heun(ev: _Evaluator, x: Tensor, t: Tensor, *, afs: bool = False, progress: bool = False, **_: Any) -> Tensor:
    """Heun (EDM alg. 1). A row whose last step ends at t = 0 takes no correction there (EDM); the others do, so a
    batch may mix both kinds of rows (rows at 0 get a model call at a safe time whose result is discarded)."""
    k = _Coords(ev.sched, t)
    N = t.shape[1] - 1
    ends_at_zero = t[:, -1] == 0
    y = k.to_y(x, 0)
    for n in _steps(N, progress, "heun"):
        xn = k.to_x(y, n)
        ev.record(xn)
        D = ev.afs(xn, t[:, n], n) if (afs and n == 0) else ev(xn, t[:, n], n)
        d = (y - D) / bcast(k.u[:, n], y)
        du = bcast(k.u[:, n + 1] - k.u[:, n], y)
        y_e = y + du * d
        last = n == N - 1
        if last and bool(ends_at_zero.all()):  # EDM: no correction on a last step to t = 0
            y = y_e
            continue
        skip = ends_at_zero if last else torch.zeros_like(ends_at_zero)
        t2 = torch.where(skip, t[:, n], t[:, n + 1])
        u2 = torch.where(skip, k.u[:, n], k.u[:, n + 1])
        x_e = y_e if k.c is None else y_e * bcast(ev.sched.ode_scale(t2), y_e)
        D2 = ev(x_e, t2, n)
        d2 = (y_e - D2) / bcast(u2, y)
        y = torch.where(bcast(skip, y), y_e, y + du * 0.5 * (d + d2))
    return k.to_x(y, N)


_AB = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}
_GL = (0.5 - 0.5 / math.sqrt(3.0), 0.5 + 0.5 / math.sqrt(3.0))


def ab_weights(nodes: Sequence[Tensor], u_next: Tensor) -> list[Tensor]:
    """Exact variable-step Adams-Bashforth weights b_j = (1/h) int_{u_0}^{u_next} l_j, nodes newest first.

    The Lagrange basis has degree <= 3 for up to 4 nodes, so 2-point Gauss-Legendre quadrature is exact.
    """
    u0 = nodes[0]
    h = u_next - u0
    out = []
    for j, uj in enumerate(nodes):
        w = 0.0
        for g in _GL:
            p = u0 + g * h
            l = 1.0
            for m, um in enumerate(nodes):
                if m != j:
                    l = l * (p - um) / (uj - um)
            w = w + 0.5 * l
        out.append(w)
    return out


def _ipndm(ev: _Evaluator, x: Tensor, t: Tensor, *, afs: bool = False, max_order: int = 4, variable: bool = False,
           history: Sequence[tuple[Tensor, Tensor]] = (), progress: bool = False, **_: Any) -> Tensor:
    if max_order not in _AB:
        raise InputError(f"ipndm max_order must be 1, 2, 3 or 4, got {max_order}")
    k = _Coords(ev.sched, t)
    hist_u = [h[0] for h in history]  # oldest first, as given
    hist_d = [h[1] for h in history]
    y = k.to_y(x, 0)
    for n in _steps(t.shape[1] - 1, progress, "ipndm_v" if variable else "ipndm"):
        xn = k.to_x(y, n)
        ev.record(xn)
        D = ev.afs(xn, t[:, n], n) if (afs and n == 0) else ev(xn, t[:, n], n)
        u = k.u[:, n]
        d = (y - D) / bcast(u, y)
        hist_u.append(u)
        hist_d.append(d)
        order = min(max_order, len(hist_d))
        ds = hist_d[::-1][:order]  # newest first
        if variable and order > 1:
            w = ab_weights(hist_u[::-1][:order], k.u[:, n + 1])
            slope = sum(bcast(wj, y) * dj for wj, dj in zip(w, ds))
        else:
            slope = sum(wj * dj for wj, dj in zip(_AB[order], ds))
        y = y + bcast(k.u[:, n + 1] - u, y) * slope
        del hist_u[: -(max_order - 1) or None], hist_d[: -(max_order - 1) or None]
    return k.to_x(y, t.shape[1] - 1)


def _ipndm_v(ev: _Evaluator, x: Tensor, t: Tensor, **kw: Any) -> Tensor:
    return _ipndm(ev, x, t, variable=True, **kw)


# ----------------------------------------------------------------------------------------------------------
# Exponential integrators in data prediction (DPM-Solver++, UniPC).
# ----------------------------------------------------------------------------------------------------------
def _orders(N: int, max_order: int, start: int, lower_order_final: bool) -> list[int]:
    return [min(max_order, n + 1 + start, N - n if lower_order_final else max_order) for n in range(N)]


def _exp_setup(ev: _Evaluator, t: Tensor, lower_order_final: bool, what: str) -> tuple[Tensor, Tensor, Tensor]:
    s = ev.sched
    a, sg, lam = s.alpha(t), s.sigma(t), s.lambda_(t)
    if not bool(torch.isfinite(lam[:, :-1]).all()):
        raise InputError(f"{what} needs alpha(t) > 0 and sigma(t) > 0 at every time but the last (flow matching: times < 1)")
    if not lower_order_final and not bool(torch.isfinite(lam[:, -1]).all()):
        raise InputError(f"{what} with a final time of zero noise needs lower_order_final=True")
    return a, sg, lam


def _dpmpp(ev: _Evaluator, x: Tensor, t: Tensor, *, afs: bool = False, max_order: int = 2, lower_order_final: bool = True,
           history: Sequence[tuple[Tensor, Tensor]] = (), legacy_3m: bool = False, progress: bool = False, **_: Any) -> Tensor:
    """DPM-Solver++ multistep (Lu et al. 2022) in data prediction.

    Third order: D2 = (D1_0 - D1_1)/(r0 + r1) approximates h^2 D''/2, whose exact weight in the
    exponential integral is -2 alpha_t phi_3. The public DPM-Solver and k-diffusion code use -alpha_t phi_3,
    which leaves the method second order; `legacy_3m=True` reproduces that published update.
    """
    if max_order not in (1, 2, 3):
        raise InputError(f"dpmpp max_order must be 1, 2 or 3, got {max_order}")
    a, sg, lam = _exp_setup(ev, t, lower_order_final, "DPM-Solver++")
    N = t.shape[1] - 1
    hl = [h[0] for h in history][::-1]  # newest first
    hD = [h[1] for h in history][::-1]
    orders = _orders(N, max_order, len(history), lower_order_final)
    for n in _steps(N, progress, f"dpmpp_{max_order}m"):
        ev.record(x)
        D = ev.afs(x, t[:, n], n) if (afs and n == 0) else ev(x, t[:, n], n)
        hl.insert(0, lam[:, n])
        hD.insert(0, D)
        del hl[3:], hD[3:]
        ratio = bcast(sg[:, n + 1] / sg[:, n], x)
        a_t = bcast(a[:, n + 1], x)
        x_new = ratio * x + (a_t - ratio * bcast(a[:, n], x)) * D  # order 1: -alpha_t phi_1 D_0
        o = orders[n]
        if o >= 2:
            h = lam[:, n + 1] - hl[0]
            phi1 = bcast(torch.expm1(-h), x)
            r0 = bcast((hl[0] - hl[1]) / h, x)
            D1_0 = (hD[0] - hD[1]) / r0
            if o == 2:
                x_new = x_new - 0.5 * a_t * phi1 * D1_0
            else:
                hb = bcast(h, x)
                phi2 = phi1 / hb + 1
                phi3 = phi2 / hb - 0.5
                r1 = bcast((hl[1] - hl[2]) / h, x)
                D1_1 = (hD[1] - hD[2]) / r1
                Dd1 = D1_0 + r0 / (r0 + r1) * (D1_0 - D1_1)
                Dd2 = (D1_0 - D1_1) / (r0 + r1)
                x_new = x_new + a_t * phi2 * Dd1 - (1.0 if legacy_3m else 2.0) * a_t * phi3 * Dd2
        x = x_new
    return x


def _dpmpp_2m(ev: _Evaluator, x: Tensor, t: Tensor, **kw: Any) -> Tensor:
    kw.setdefault("max_order", 2)
    return _dpmpp(ev, x, t, **kw)


def _dpmpp_3m(ev: _Evaluator, x: Tensor, t: Tensor, **kw: Any) -> Tensor:
    kw.setdefault("max_order", 3)
    return _dpmpp(ev, x, t, **kw)


def _ddim(ev: _Evaluator, x: Tensor, t: Tensor, **kw: Any) -> Tensor:
    kw["max_order"] = 1
    return _dpmpp(ev, x, t, **kw)


def _unipc(ev: _Evaluator, x: Tensor, t: Tensor, *, afs: bool = False, max_order: int = 3, variant: str = "bh2",
           lower_order_final: bool = True, progress: bool = False, **_: Any) -> Tensor:
    """UniPC (Zhao et al. 2023) with the B(h) variants bh1/bh2; the corrector's model call is reused."""
    if variant not in ("bh1", "bh2"):
        raise InputError(f"unipc variant must be 'bh1' or 'bh2', got {variant!r}")
    if max_order not in (1, 2, 3, 4):
        raise InputError(f"unipc max_order must be 1..4, got {max_order}")
    a, sg, lam = _exp_setup(ev, t, lower_order_final, "UniPC")
    N = t.shape[1] - 1
    orders = _orders(N, max_order, 0, lower_order_final)
    ev.record(x)
    D0 = ev.afs(x, t[:, 0], 0) if afs else ev(x, t[:, 0], 0)
    hl, hD = [lam[:, 0]], [D0]  # newest first
    for n in _steps(N, progress, f"unipc_{variant}"):
        o = min(orders[n], len(hD))
        h = lam[:, n + 1] - hl[0]
        hh = -h
        ratio = bcast(sg[:, n + 1] / sg[:, n], x)
        a_t = bcast(a[:, n + 1], x)
        x_base = ratio * x + (a_t - ratio * bcast(a[:, n], x)) * hD[0]  # = sigma_t/sigma_s x - alpha_t expm1(hh) D0
        B_h = hh if variant == "bh1" else torch.expm1(hh)
        rks = [(hl[i] - hl[0]) / h for i in range(1, o)] + [torch.ones_like(h)]
        D1s = [(hD[i] - hD[0]) / bcast(rks[i - 1], x) for i in range(1, o)]
        # b_i = g_i i! / B(h), with g_1 = expm1(hh)/hh - 1, g_{i+1} = g_i/hh - 1/(i+1)!
        b, g, fact = [], torch.expm1(hh) / hh - 1, 1.0
        for i in range(1, o + 1):
            b.append(g * fact / B_h)
            fact *= i + 1
            g = g / hh - 1.0 / fact
        bvec = torch.stack(b, -1)  # [B, o]
        R = torch.stack([torch.stack(rks, -1) ** (i - 1) for i in range(1, o + 1)], -2)  # [B, o, o]
        aB = a_t * bcast(B_h, x)
        # predictor
        if o == 1:
            x_pred = x_base
        else:
            if o == 2:
                rho_p = torch.full_like(h, 0.5)[:, None]
            else:
                rho_p = torch.linalg.solve(R[:, :-1, :-1], bvec[:, :-1])
            x_pred = x_base - aB * sum(bcast(rho_p[:, k], x) * D1s[k] for k in range(o - 1))
        if n == N - 1:
            x = x_pred
            break
        # corrector, whose model call at the new time is the next step's D0
        D_new = ev(x_pred, t[:, n + 1], n + 1)
        rho_c = torch.full_like(h, 0.5)[:, None] if o == 1 else torch.linalg.solve(R, bvec)
        corr = sum((bcast(rho_c[:, k], x) * D1s[k] for k in range(o - 1)), torch.zeros_like(x))
        x = x_base - aB * (corr + bcast(rho_c[:, -1], x) * (D_new - hD[0]))
        ev.record(x)
        hl.insert(0, lam[:, n + 1])
        hD.insert(0, D_new)
        del hl[max_order:], hD[max_order:]
    return x


_IMPL: dict[str, Callable[..., Tensor]] = {
    "euler": _euler, "heun": _heun, "ddim": _ddim, "ipndm": _ipndm, "ipndm_v": _ipndm_v,
    "dpmpp_2m": _dpmpp_2m, "dpmpp_3m": _dpmpp_3m, "unipc": _unipc,
}


# ----------------------------------------------------------------------------------------------------------
# Input checks and the public entry point
# ----------------------------------------------------------------------------------------------------------
def _per_sample(v: Tensor | Sequence[float] | None, name: str, B: int, length: int, like: Tensor) -> Tensor | None:
    if v is None:
        return None
    v = torch.as_tensor(v, device=like.device)
    if not v.is_floating_point():
        v = v.to(like.dtype)
    v = v.to(like.dtype)
    if v.dim() == 1:
        if v.shape[0] != length:
            raise InputError(f"{name} must have shape [{length}] or [B, {length}], got {list(v.shape)}")
        return v.unsqueeze(0).expand(B, length)
    if v.dim() == 2:
        if v.shape[1] != length or v.shape[0] not in (1, B):
            raise InputError(f"{name} must have shape [{length}] or [{B}, {length}] (batch {B}), got {list(v.shape)}")
        return v.expand(B, length)
    raise InputError(f"{name} must have shape [{length}] or [B, {length}], got {list(v.shape)}")


def _check_first(first: Tensor | None, x_T: Tensor) -> None:
    """A reused first model output must have x_T's shape."""
    if first is None:
        return
    if not isinstance(first, Tensor) or first.shape != x_T.shape:
        raise InputError(f"first_denoised must be a tensor of x_T's shape {list(x_T.shape)}, got "
                         f"{list(first.shape) if isinstance(first, Tensor) else type(first).__name__}")


def check_times(times: Tensor, schedule: NoiseSchedule, batch: int | None = None) -> Tensor:
    """Validate a decreasing time grid [N+1] or [B, N+1]; return it as [B, N+1] (or [1, N+1])."""
    if not isinstance(times, Tensor):
        times = torch.as_tensor(times, dtype=torch.float64)
    if times.dim() not in (1, 2):
        raise InputError(f"times must have shape [N+1] or [B, N+1], got {list(times.shape)}")
    if times.shape[-1] < 2:
        raise InputError(f"times must hold at least 2 points (N >= 1 steps), got {times.shape[-1]}")
    t2 = times if times.dim() == 2 else times.unsqueeze(0)
    if batch is not None and t2.shape[0] not in (1, batch):
        raise InputError(f"times has batch size {t2.shape[0]} but x_T has batch size {batch}")
    td = t2.detach()
    if not bool(torch.isfinite(td).all()):
        raise InputError("times contains NaN or Inf")
    if not bool((td[:, 1:] < td[:, :-1]).all()):
        raise InputError("times must be strictly decreasing along the last axis (from noise to data), e.g. indis.heuristic('edm', N)")
    lo, hi = schedule.domain
    if bool((td[:, :-1] <= 0).any()) or bool((td[:, -1] < 0).any()) or bool((td[:, :-1] < lo).any()):
        raise InputError(f"times must be > 0 (only the last may be 0) and >= {lo} for the {schedule.name} schedule")
    if bool((td > hi).any()):
        raise InputError(f"times must be <= {hi} for the {schedule.name} schedule, got max {float(td.max())}")
    return t2


def sample(
    denoiser: Denoiser,
    x_T: Tensor,
    times: Tensor | Sequence[float],
    solver: str = "ipndm",
    shift: Tensor | None = None,
    scale: Tensor | None = None,
    cond: Cond = None,
    afs: bool = False,
    checkpoint: bool = False,
    *,
    return_trajectory: bool = False,
    check_finite: bool = True,
    progress: bool = False,
    first_denoised: Tensor | None = None,
    **options: Any,
) -> Tensor | tuple[Tensor, Trajectory]:
    """Integrate the probability-flow ODE from x_T along `times` and return x_0.

    times: decreasing, [N+1] or per sample [B, N+1]. shift, scale: [N] or [B, N]; the model is evaluated at
    times[n] + shift[n] and its output, as a derivative of the ODE in the schedule's coordinates (eps for EDM and
    VP, the velocity for flow matching), is multiplied by scale[n] (INDIS eq. 5). checkpoint: recompute each
    model call in the backward pass, so memory does not grow with N. Solver options (max_order, variant,
    lower_order_final, history) are passed through. Gradients flow to times, shift, scale, x_T and the model.
    first_denoised: the model's x0 at the first model call's own point, when the caller already evaluated it there (an
    INDIS variant whose phi reads it): (x_T, times[:, 0] + shift[:, 0]), or with AFS (x_1, times[:, 1] + shift[:, 1]),
    x_1 the analytic first step's state (for heun the first call is its first correction). The first call reuses it,
    so the sample still costs `solver_nfe` model calls.
    """
    if not isinstance(denoiser, Denoiser):
        raise InputError(f"denoiser must be an indis.Denoiser (wrap your model with indis.Denoiser(fn, schedule, prediction=...)), got {type(denoiser).__name__}")
    _check_solver(solver)
    if not isinstance(x_T, Tensor) or x_T.dim() < 1:
        raise InputError("x_T must be a tensor with a leading batch axis")
    if not x_T.is_floating_point():
        raise InputError(f"x_T must be floating point, got {x_T.dtype}")
    B = x_T.shape[0]
    t = check_times(times, denoiser.schedule, B)
    t = t.to(device=x_T.device, dtype=x_T.dtype).expand(B, t.shape[1])
    N = t.shape[1] - 1
    shift = _per_sample(shift, "shift", B, N, t)
    scale = _per_sample(scale, "scale", B, N, t)
    if afs and solver == "heun" and N == 1 and bool((t[:, -1] == 0).all()):
        raise InputError("heun with afs needs at least 2 steps when the last time is 0")
    _check_first(first_denoised, x_T)
    traj = Trajectory(times=t) if return_trajectory else None
    ev = _Evaluator(denoiser, cond, shift, scale, checkpoint, check_finite, traj, first_denoised)
    out = _IMPL[solver](ev, x_T, t, afs=afs, progress=progress, **options)
    if check_finite and not bool(torch.isfinite(out).all()):
        raise ModelOutputError(f"solver {solver} produced NaN or Inf; check times, shift and scale")
    if traj is not None:
        if len(traj.states) < N + 1:
            traj.states.append(out)
        return out, traj
    return out
