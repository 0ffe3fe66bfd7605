"""Monotone timestep parameterizations (LD3 / INDIS eq. 6-7) and their inverses for warm starts."""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InputError
from ..schedules import NoiseSchedule

SPACES = ("time", "lambda")
MIN_GAP = 1e-5  # smallest gap, as a fraction of the range: keeps the grid strictly decreasing in float32
SHIFT_MODES = ("relative", "absolute")


def _to_space(schedule: NoiseSchedule, t: Tensor, space: str) -> Tensor:
    return t if space == "time" else schedule.lambda_(t)


def _from_space(schedule: NoiseSchedule, v: Tensor, space: str) -> Tensor:
    return v if space == "time" else schedule.t_from_lambda(v)


def logits_to_times(logits: Tensor, schedule: NoiseSchedule, t_max: float, t_min: float, space: str = "time",
                    free_last: bool = False) -> Tensor:
    """Map gap logits [..., N] (or [..., N+1] with `free_last`) to decreasing times [..., N+1].

    INDIS eq. 7: the softmax of the logits gives positive gaps that sum to one; their cumulative sum places
    t_0 = t_max and t_N = t_min in the chosen space ("time" or "lambda" = log-SNR), so the grid is monotone
    with fixed endpoints. With `free_last`, one extra logit is the gap between t_N and t_min, so t_N is free.
    Each gap is at least MIN_GAP of the range (p = MIN_GAP + (1 - K MIN_GAP) softmax), so a training step that
    drives one softmax weight to zero still leaves a strictly decreasing grid in float32.
    """
    if space not in SPACES:
        raise InputError(f"space must be one of {SPACES}, got {space!r}")
    k = logits.shape[-1]
    p = MIN_GAP + (1 - k * MIN_GAP) * torch.softmax(logits, -1)
    frac = torch.cumsum(p, -1)  # fraction of the way from t_max to t_min after each gap
    if free_last:
        frac = frac[..., :-1]
    else:
        frac = torch.cat([frac[..., :-1], torch.ones_like(frac[..., -1:])], -1)  # exact endpoint
    hi = torch.as_tensor(t_max, dtype=logits.dtype, device=logits.device)
    lo = torch.as_tensor(t_min, dtype=logits.dtype, device=logits.device)
    a, b = _to_space(schedule, hi, space), _to_space(schedule, lo, space)
    v = a + frac * (b - a)
    inner = _from_space(schedule, v, space)
    first = hi.expand(*inner.shape[:-1], 1)
    return torch.cat([first, inner], -1)


def times_to_logits(times: Tensor, schedule: NoiseSchedule, space: str = "time", free_last: bool = False,
                    t_min: float | None = None) -> Tensor:
    """Inverse of `logits_to_times` (up to an additive constant): logits = log(gaps)."""
    times = torch.as_tensor(times, dtype=torch.float64)
    v = _to_space(schedule, times, space)
    if free_last:
        if t_min is None:
            raise InputError("times_to_logits with free_last needs t_min")
        v = torch.cat([v, _to_space(schedule, torch.as_tensor(t_min, dtype=v.dtype).reshape(1).expand(*v.shape[:-1], 1), space)], -1)
    gaps = (v[..., 1:] - v[..., :-1]).abs()
    if free_last:  # a last time at t_min leaves a zero final gap: start it just above t_min instead
        gaps = torch.cat([gaps[..., :-1], gaps[..., -1:].clamp_min(1e-3 * float(gaps.sum()))], -1)
    if bool((gaps <= 0).any()):
        raise InputError("warm-start times must be strictly decreasing")
    k = gaps.shape[-1]
    p = gaps / gaps.sum(-1, keepdim=True)
    return torch.log(((p - MIN_GAP) / (1 - k * MIN_GAP)).clamp_min(1e-30))  # inverts the gap floor


def bounded(o: Tensor, bound: float) -> Tensor:
    """INDIS eq. 6: bound * tanh(o / 2)."""
    return bound * torch.tanh(o / 2)


def shift_from_logits(o: Tensor, times: Tensor, bound: float, mode: str = "relative") -> Tensor:
    """Per-step evaluation-time shift. "absolute": b tanh(o/2) in time units (eq. 6);
    "relative": the same as a fraction of the step, b tanh(o/2) (t_n - t_{n+1}), scale-free across schedules."""
    if mode == "absolute":
        return bounded(o, bound)
    if mode == "relative":
        return bounded(o, bound) * (times[..., :-1] - times[..., 1:])
    raise InputError(f"shift mode must be one of {SHIFT_MODES}, got {mode!r}")


def scale_from_logits(o: Tensor, bound: float) -> Tensor:
    """INDIS eq. 6: gamma = 1 + b tanh(o/2)."""
    return 1 + bounded(o, bound)
