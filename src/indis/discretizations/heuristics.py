"""Hand-crafted time discretizations (heuristic schedules).

Every function returns a strictly decreasing float64 tensor of N+1 times t_0 > ... > t_N in the given
schedule's OWN time convention (EDM: sigma; VP: t in [1e-3, 1] or the discrete index; flow matching: t in
[0, 1]). Unless noted, t_0 = t_max and t_N = t_min (defaults: schedule.t_max / schedule.t_min) exactly.

Schedules defined on the noise level (edm, time_uniform, time_quadratic, ays) are built on the EDM/VE-equivalent
sigma = schedule.to_edm_sigma(t) and mapped back with schedule.from_edm_sigma, so e.g. `edm(5, VP())` spaces
the VE noise level of the VP model like Karras et al. The flow-matching shifts act on the flow-matching-
equivalent time sigma / (1 + sigma) (the schedule's own time for `FlowMatching`).
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..schedules import EDM, FlowMatching, NoiseSchedule

_F64 = torch.float64

__all__ = [
    "HEURISTICS", "AYS_SIGMAS", "heuristic", "uniform", "logsnr", "edm", "quadratic", "time_uniform",
    "time_quadratic", "flow_shift", "rds", "rds_mu", "ays", "ays_sigmas", "fitted_vp_betas",
]


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------
MAX_STEPS = 100_000  # far above any sampler; guards against runaway allocations (10^9 steps would need 8 GB)


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"steps must be an integer >= 1, got {steps!r}")
    if steps > MAX_STEPS:
        raise InputError(f"steps must be <= {MAX_STEPS}, got {steps}")
    return int(steps)


def _check_schedule(schedule: Any) -> NoiseSchedule:
    if not isinstance(schedule, NoiseSchedule):
        raise InputError(f"schedule must be an indis noise schedule (indis.EDM(), indis.VP(), indis.FlowMatching()), got {type(schedule).__name__}")
    return schedule


def _endpoints(schedule: NoiseSchedule, t_max: float | None, t_min: float | None) -> tuple[float, float]:
    hi = schedule.t_max if t_max is None else float(t_max)
    lo = schedule.t_min if t_min is None else float(t_min)
    if not (math.isfinite(hi) and math.isfinite(lo) and lo < hi):
        raise InputError(f"t_min must be smaller than t_max (both finite), got t_min={lo}, t_max={hi}")
    d_lo, d_hi = schedule.domain
    if lo < d_lo and lo != 0.0 or hi > d_hi:
        raise InputError(f"t_min and t_max must lie in [{d_lo}, {d_hi}] for the {schedule.name} schedule, got t_min={lo}, t_max={hi}")
    return hi, lo


def _t(v: float) -> Tensor:
    return torch.tensor(float(v), dtype=_F64)


def _finish(t: Tensor, hi: float, lo: float, what: str) -> Tensor:
    """Pin the endpoints exactly and check the result is finite and strictly decreasing."""
    t = t.to(_F64).clone()
    t[0], t[-1] = hi, lo
    if not bool(torch.isfinite(t).all()):
        raise InputError(f"the {what} schedule is not finite between t_max={hi} and t_min={lo}; "
                         "choose t_max/t_min where the noise level is finite and positive (e.g. flow matching t in (0, 1))")
    if not bool((t[1:] < t[:-1]).all()):
        raise InputError(f"the {what} schedule between t_max={hi} and t_min={lo} is not strictly decreasing "
                         "(too many steps for this time range?)")
    return t


def _edm_sigma(schedule: NoiseSchedule, t: float) -> float:
    if isinstance(schedule, FlowMatching) and t >= 1.0:
        return math.inf
    return float(schedule.to_edm_sigma(_t(t)))


def _from_sigma(schedule: NoiseSchedule, s: Tensor) -> Tensor:
    return schedule.from_edm_sigma(s.to(_F64)).to(_F64)


def _ramp(steps: int) -> Tensor:
    return torch.linspace(0.0, 1.0, steps + 1, dtype=_F64)


# ----------------------------------------------------------------------------------------------------------
# schedule-time heuristics
# ----------------------------------------------------------------------------------------------------------
def uniform(steps: int, schedule: NoiseSchedule | None = None, *, t_max: float | None = None,
            t_min: float | None = None) -> Tensor:
    """Uniform in the schedule's own time t (the paper's "Uniform")."""
    steps, schedule = _check_steps(steps), _check_schedule(schedule or EDM())
    hi, lo = _endpoints(schedule, t_max, t_min)
    return _finish(hi + _ramp(steps) * (lo - hi), hi, lo, "uniform")


def quadratic(steps: int, schedule: NoiseSchedule | None = None, *, t_max: float | None = None,
              t_min: float | None = None) -> Tensor:
    """Time-quadratic in the schedule's own time: t_i = (sqrt(t_max) + i/N (sqrt(t_min) - sqrt(t_max)))^2."""
    steps, schedule = _check_steps(steps), _check_schedule(schedule or EDM())
    hi, lo = _endpoints(schedule, t_max, t_min)
    return _finish((math.sqrt(hi) + _ramp(steps) * (math.sqrt(lo) - math.sqrt(hi))) ** 2, hi, lo, "quadratic")


def logsnr(steps: int, schedule: NoiseSchedule | None = None, *, t_max: float | None = None,
           t_min: float | None = None) -> Tensor:
    """Uniform in the half log-SNR lambda = log(alpha / sigma) (geometric in sigma for EDM)."""
    steps, schedule = _check_steps(steps), _check_schedule(schedule or EDM())
    hi, lo = _endpoints(schedule, t_max, t_min)
    l_hi, l_lo = float(schedule.lambda_(_t(hi))), float(schedule.lambda_(_t(lo)))
    if not (math.isfinite(l_hi) and math.isfinite(l_lo)):
        raise InputError(f"logsnr needs a finite log-SNR at t_max={hi} and t_min={lo} (flow matching: 0 < t < 1)")
    return _finish(schedule.t_from_lambda(l_hi + _ramp(steps) * (l_lo - l_hi)), hi, lo, "logsnr")


def edm(steps: int, schedule: NoiseSchedule | None = None, *, rho: float = 7.0, t_max: float | None = None,
        t_min: float | None = None) -> Tensor:
    """Karras et al. polynomial spacing of the VE noise level: (s_max^(1/rho) + i/N (s_min^(1/rho) - s_max^(1/rho)))^rho."""
    steps, schedule = _check_steps(steps), _check_schedule(schedule or EDM())
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not math.isfinite(rho) or rho <= 0:
        raise InputError(f"rho must be a finite number > 0 (EDM uses 7), got {rho!r}")
    hi, lo = _endpoints(schedule, t_max, t_min)
    s_hi, s_lo = _edm_sigma(schedule, hi), _edm_sigma(schedule, lo)
    if not math.isfinite(s_hi):
        raise InputError(f"edm needs a finite noise level at t_max={hi} (flow matching: t_max < 1)")
    sig = (s_hi ** (1 / rho) + _ramp(steps) * (s_lo ** (1 / rho) - s_hi ** (1 / rho))) ** rho
    return _finish(_from_sigma(schedule, sig), hi, lo, "edm")


def fitted_vp_betas(sigma_max: float, sigma_min: float, eps: float = 1e-3) -> tuple[float, float]:
    """diff-sampler's virtual VP-linear schedule: (beta_d, beta_min) with sigma(1) = sigma_max, sigma(eps) = sigma_min.

    sigma(tau) = sqrt(exp(beta_d tau^2 / 2 + beta_min tau) - 1). For 80 / 0.002 this gives 17.537957, -0.0047690.
    """
    if not (0 < eps < 1):
        raise InputError(f"eps must lie in (0, 1), got {eps}")
    a, b = math.log1p(sigma_min**2), math.log1p(sigma_max**2)
    beta_d = 2 * (a / eps - b) / (eps - 1)
    return beta_d, b - beta_d / 2


def _vp_fitted(steps: int, schedule: NoiseSchedule | None, rho: float, eps: float, t_max: float | None,
               t_min: float | None, what: str) -> Tensor:
    steps, schedule = _check_steps(steps), _check_schedule(schedule or EDM())
    hi, lo = _endpoints(schedule, t_max, t_min)
    s_hi, s_lo = _edm_sigma(schedule, hi), _edm_sigma(schedule, lo)
    if not math.isfinite(s_hi):
        raise InputError(f"{what} needs a finite noise level at t_max={hi} (flow matching: t_max < 1)")
    beta_d, beta_min = fitted_vp_betas(s_hi, s_lo, eps)
    if beta_d * eps + beta_min <= 0 or beta_d + beta_min <= 0:
        raise InputError(f"{what}: the VP-linear schedule fitted with eps={eps} to the noise range [{s_lo:.4g}, {s_hi:.4g}] "
                         "is not monotone; widen the range (smaller t_min) or lower eps")
    tau = (1 + _ramp(steps) * (eps ** (1 / rho) - 1)) ** rho
    sig = torch.sqrt(torch.expm1(0.5 * beta_d * tau**2 + beta_min * tau))
    return _finish(_from_sigma(schedule, sig), hi, lo, what)


def time_uniform(steps: int, schedule: NoiseSchedule | None = None, *, eps: float = 1e-3, t_max: float | None = None,
                 t_min: float | None = None) -> Tensor:
    """diff-sampler `time_uniform` (rho=1): uniform in the time of a VP-linear schedule fitted to the sigma range."""
    return _vp_fitted(steps, schedule, 1.0, eps, t_max, t_min, "time_uniform")


def time_quadratic(steps: int, schedule: NoiseSchedule | None = None, *, eps: float = 1e-3,
                   t_max: float | None = None, t_min: float | None = None) -> Tensor:
    """diff-sampler `time_uniform` with rho=2 (DEIS/DPM-Solver "time-quadratic") on the fitted VP-linear time."""
    return _vp_fitted(steps, schedule, 2.0, eps, t_max, t_min, "time_quadratic")


# ----------------------------------------------------------------------------------------------------------
# flow-matching shifts
# ----------------------------------------------------------------------------------------------------------
def _to_fm(schedule: NoiseSchedule, t: float) -> float:
    if isinstance(schedule, FlowMatching):
        return t
    s = _edm_sigma(schedule, t)
    return 1.0 if math.isinf(s) else s / (1 + s)


def _from_fm(schedule: NoiseSchedule, tf: Tensor) -> Tensor:
    if isinstance(schedule, FlowMatching):
        return tf
    return _from_sigma(schedule, tf / (1 - tf))


def _shifted(steps: int, schedule: NoiseSchedule, e_mu: float, t_max: float | None, t_min: float | None,
             what: str) -> Tensor:
    """Apply t' = e t / (1 + (e - 1) t) (= exp(mu) / (exp(mu) + 1/t - 1)) to a uniform base whose image is [t_min, t_max]."""
    hi, lo = _endpoints(schedule, t_max, t_min)
    f_hi, f_lo = _to_fm(schedule, hi), _to_fm(schedule, lo)
    inv = lambda v: v / (e_mu - (e_mu - 1) * v)  # noqa: E731  (inverse of the shift)
    base = inv(f_hi) + _ramp(steps) * (inv(f_lo) - inv(f_hi))
    tf = e_mu * base / (1 + (e_mu - 1) * base)
    return _finish(_from_fm(schedule, tf), hi, lo, what)


def flow_shift(steps: int, schedule: NoiseSchedule | None = None, *, shift: float = 3.0, t_max: float | None = None,
               t_min: float | None = None) -> Tensor:
    """Static timestep shift (SD3 / diffusers FlowMatchEulerDiscreteScheduler `shift`): t' = s t / (1 + (s - 1) t).

    The base is uniform in (unshifted) flow-matching time between the pre-images of t_max and t_min, so the
    shifted grid keeps the endpoints; with t_max=1, t_min=0 it equals diffusers' shift(linspace(1, 0, N+1)).
    """
    steps, schedule = _check_steps(steps), _check_schedule(schedule or FlowMatching())
    if not (shift > 0 and math.isfinite(shift)):
        raise InputError(f"shift must be a finite number > 0, got {shift}")
    return _shifted(steps, schedule, float(shift), t_max, t_min, "shift")


def rds_mu(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096, base_shift: float = 0.5,
           max_shift: float = 1.15) -> float:
    """FLUX `calculate_shift`: mu linear in the image token count, base_shift at base_seq_len, max_shift at max_seq_len."""
    if max_seq_len == base_seq_len:
        raise InputError("max_seq_len must differ from base_seq_len")
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return float(image_seq_len * m + (base_shift - m * base_seq_len))


def rds(steps: int, schedule: NoiseSchedule | None = None, *, image_seq_len: int | None = None, mu: float | None = None,
        base_seq_len: int = 256, max_seq_len: int = 4096, base_shift: float = 0.5, max_shift: float = 1.15,
        t_max: float | None = None, t_min: float | None = None) -> Tensor:
    """Resolution-dependent shift (FLUX): t' = exp(mu) / (exp(mu) + 1/t - 1), mu = rds_mu(image_seq_len) or given.

    For FLUX.1, image_seq_len = (height // 16) * (width // 16). With t_max=1, t_min=0 this equals diffusers'
    FLUX schedule time_shift(mu, 1, linspace(1, 1/N, N)) followed by 0.
    """
    steps, schedule = _check_steps(steps), _check_schedule(schedule or FlowMatching())
    if mu is None:
        if image_seq_len is None:
            raise InputError("rds needs image_seq_len (number of image tokens) or mu")
        mu = rds_mu(image_seq_len, base_seq_len, max_seq_len, base_shift, max_shift)
    if not math.isfinite(mu):
        raise InputError(f"mu must be finite, got {mu}")
    return _shifted(steps, schedule, math.exp(mu), t_max, t_min, "rds")


# ----------------------------------------------------------------------------------------------------------
# Align Your Steps presets
# ----------------------------------------------------------------------------------------------------------
#: published 10-step AYS noise levels (11 values incl. the final point); SD1.5/SDXL in full precision
AYS_SIGMAS: dict[str, tuple[float, ...]] = {
    "sd15": (14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
             0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582),
    "sdxl": (14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289,
             0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582),
    "svd": (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}
_AYS_FINAL = ("keep", "zero", "append_zero")


def _loglinear(sig: np.ndarray, n: int) -> np.ndarray:
    """NVIDIA's AYS interpolation: log sigma piecewise linear in a uniform position in [0, 1]; n output points."""
    xs = np.linspace(0, 1, len(sig))
    ys = np.log(sig[::-1])
    return np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1].copy()


def ays_sigmas(steps: int, model: str = "sd15", final: str = "keep") -> Tensor:
    """AYS EDM/VE noise levels for `steps` steps (N+1 values), log-linearly interpolated from the 10-step preset.

    final: "keep" (default) keeps the interpolated last value (e.g. 0.0292 for SD); "zero" replaces it by 0
    (ComfyUI); "append_zero" interpolates N points and appends 0 (A1111/Forge).
    """
    steps = _check_steps(steps)
    if model not in AYS_SIGMAS:
        raise InputError(f"unknown AYS model {model!r}; choose one of {', '.join(AYS_SIGMAS)}")
    if final not in _AYS_FINAL:
        raise InputError(f"final must be one of {', '.join(_AYS_FINAL)}, got {final!r}")
    sig = np.asarray(AYS_SIGMAS[model], dtype=np.float64)
    if final == "append_zero":
        if steps < 2:
            raise InputError("ays with final='append_zero' needs steps >= 2")
        out = np.concatenate([_loglinear(sig, steps), [0.0]])
    else:
        out = _loglinear(sig, steps + 1)
        if final == "zero":
            out[-1] = 0.0
    return torch.from_numpy(out)


def ays(steps: int, schedule: NoiseSchedule | None = None, *, model: str = "sd15", final: str = "keep") -> Tensor:
    """Align Your Steps (Sabour et al. 2024) preset for `model` ("sd15", "sdxl", "svd") mapped to the schedule's time.

    The endpoints are the preset's (e.g. sigma 14.6146 -> 0.0292 for SD), not schedule.t_max/t_min. On a discrete
    VP schedule the times are (fractional) training indices. The preset's noise range must fit the schedule.
    """
    schedule = _check_schedule(schedule or EDM())
    sig = ays_sigmas(steps, model, final)
    d_lo, d_hi = schedule.domain
    s_top = _edm_sigma(schedule, d_hi) if math.isfinite(d_hi) else math.inf
    s_bot = _edm_sigma(schedule, d_lo)
    pos = sig[sig > 0]
    if float(pos.max()) > s_top * (1 + 1e-4) or float(pos.min()) < s_bot * (1 - 1e-4):
        raise InputError(f"the AYS {model} noise levels [{float(pos.min()):.4g}, {float(pos.max()):.4g}] do not fit the "
                         f"{schedule.name} schedule's noise range [{s_bot:.4g}, {s_top:.4g}]; pick another model or schedule")
    t = _from_sigma(schedule, sig)  # sigma = 0 maps to zero noise (t = 0; index 0 for discrete VP)
    if math.isfinite(d_hi):
        t = t.clamp(max=d_hi)
    return _finish(t, float(t[0]), float(t[-1]), f"ays ({model})")


# ----------------------------------------------------------------------------------------------------------
# dispatch
# ----------------------------------------------------------------------------------------------------------
HEURISTICS: dict[str, Callable[..., Tensor]] = {
    "uniform": uniform, "logsnr": logsnr, "edm": edm, "quadratic": quadratic, "time_uniform": time_uniform,
    "time_quadratic": time_quadratic, "shift": flow_shift, "rds": rds, "ays": ays,
}
_ALIASES = {"polynomial": "edm", "karras": "edm", "flow_shift": "shift", "quad": "quadratic", "uniform_t": "uniform"}


def heuristic(name: str, steps: int, schedule: NoiseSchedule | None = None, **kw: Any) -> Tensor:
    """Heuristic schedule `name` with `steps` steps: a decreasing float64 tensor of steps+1 times in the schedule's time.

    Names: uniform, logsnr, edm (rho=7), quadratic, time_uniform, time_quadratic, shift (flow matching, shift=3),
    rds (FLUX resolution-dependent shift; image_seq_len= or mu=), ays (model="sd15"|"sdxl"|"svd").
    Keyword arguments go to the named function (e.g. rho, t_max, t_min).
    """
    key = _ALIASES.get(name, name) if isinstance(name, str) else name
    if key not in HEURISTICS:
        raise InputError(f"unknown heuristic {name!r}; choose one of {', '.join(HEURISTICS)}")
    if schedule is None:
        schedule = FlowMatching() if key in ("shift", "rds") else EDM()
    fn = HEURISTICS[key]
    try:
        inspect.signature(fn).bind(steps, schedule, **kw)
    except TypeError as exc:
        allowed = [p for p in inspect.signature(fn).parameters if p not in ("steps", "schedule")]
        raise InputError(f"bad keyword argument for heuristic {key!r} ({exc}); it accepts {', '.join(allowed)}") from exc
    return fn(steps, schedule, **kw)
