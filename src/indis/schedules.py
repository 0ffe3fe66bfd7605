"""Noise schedules x_t = alpha(t) * x_0 + sigma(t) * eps.

Every schedule gives alpha, sigma, their time derivatives, lambda = log(alpha/sigma) and its inverse, and
conversions to the EDM (VE) noise level sigma_edm = sigma/alpha. It also names the coordinates in which the
"EDM-form" solvers (Euler, Heun, iPNDM) integrate: a state y = x / c(t) and an ODE time u(t) such that the
probability-flow ODE reads dy/du = (y - D(x, t)) / u. The VE-equivalent choice c = alpha, u = sigma/alpha works
for every schedule; flow matching uses c = 1, u = t, where dy/du is the velocity itself.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .errors import InputError


def _finite(name: str, v: Any, what: str) -> float:
    """A constructor argument as a finite float, or InputError naming it."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InputError(f"{what} {name} must be a finite number, got {v!r}")
    return float(v)


def _as_tensor(t: Tensor | float) -> Tensor:
    return t if isinstance(t, Tensor) else torch.tensor(float(t), dtype=torch.float64)


class NoiseSchedule:
    """Base class. Subclasses implement alpha, sigma, their derivatives, lambda_ and t_from_lambda."""

    name = "base"
    t_max: float
    t_min: float
    #: closed interval of times at which the model may be evaluated (evaluation times are clamped into it)
    domain: tuple[float, float] = (0.0, math.inf)

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def alpha_dot(self, t: Tensor) -> Tensor:
        """d alpha / dt."""
        raise NotImplementedError

    def sigma_dot(self, t: Tensor) -> Tensor:
        """d sigma / dt."""
        raise NotImplementedError

    def lambda_(self, t: Tensor) -> Tensor:
        """Half log-SNR, lambda = log(alpha / sigma); decreasing in t."""
        t = _as_tensor(t)
        return torch.log(self.alpha(t)) - torch.log(self.sigma(t))

    def t_from_lambda(self, lam: Tensor) -> Tensor:
        """Inverse of lambda_."""
        raise NotImplementedError

    def to_edm_sigma(self, t: Tensor) -> Tensor:
        """EDM/VE noise level sigma/alpha at time t."""
        t = _as_tensor(t)
        return self.sigma(t) / self.alpha(t)

    def from_edm_sigma(self, s: Tensor) -> Tensor:
        """Time t at which sigma/alpha equals the EDM noise level s."""
        return self.t_from_lambda(-torch.log(_as_tensor(s)))

    # --- coordinates of the EDM-form solvers -------------------------------------------------------------
    def ode_scale(self, t: Tensor) -> Tensor:
        """c(t): the EDM-form solvers integrate y = x / c(t)."""
        return self.alpha(t)

    def ode_time(self, t: Tensor) -> Tensor:
        """u(t): the EDM-form solvers step in u, with dy/du = (y - D) / u."""
        return self.to_edm_sigma(t)

    def t_from_ode_time(self, u: Tensor) -> Tensor:
        """Inverse of `ode_time`: the schedule's time at ODE time u (intermediate times of AMED/EPD)."""
        return self.from_edm_sigma(u)

    def clamp_eval(self, t: Tensor) -> Tensor:
        """Clamp (shifted) evaluation times into the interval where the model is defined."""
        lo, hi = self.domain
        return t.clamp(min=lo, max=hi if math.isfinite(hi) else None)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description; `schedule_from_config` rebuilds the schedule."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NoiseSchedule) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, str(v)) for k, v in self.config().items())))


class EDM(NoiseSchedule):
    """Variance exploding EDM schedule: alpha = 1, sigma = t (Karras et al. 2022)."""

    name = "edm"

    def __init__(self, t_max: float = 80.0, t_min: float = 0.002):
        t_max, t_min = _finite("t_max", t_max, "EDM"), _finite("t_min", t_min, "EDM")
        if not (0 < t_min < t_max):
            raise InputError(f"EDM schedule needs 0 < t_min < t_max, got t_min={t_min}, t_max={t_max}")
        self.t_max, self.t_min = float(t_max), float(t_min)
        self.domain = (1e-12, math.inf)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(_as_tensor(t))

    def sigma(self, t: Tensor) -> Tensor:
        return _as_tensor(t)

    def alpha_dot(self, t: Tensor) -> Tensor:
        return torch.zeros_like(_as_tensor(t))

    def sigma_dot(self, t: Tensor) -> Tensor:
        return torch.ones_like(_as_tensor(t))

    def lambda_(self, t: Tensor) -> Tensor:
        return -torch.log(_as_tensor(t))

    def t_from_lambda(self, lam: Tensor) -> Tensor:
        return torch.exp(-_as_tensor(lam))

    def ode_scale(self, t: Tensor) -> Tensor:
        return torch.ones_like(_as_tensor(t))

    def ode_time(self, t: Tensor) -> Tensor:
        return _as_tensor(t)

    def config(self) -> dict[str, Any]:
        return {"type": "edm", "t_max": self.t_max, "t_min": self.t_min}


class FlowMatching(NoiseSchedule):
    """Optimal-transport flow matching / rectified flow: alpha = 1 - t, sigma = t, t in [0, 1]."""

    name = "flow"

    def __init__(self, t_max: float = 0.988, t_min: float = 0.002):
        t_max, t_min = _finite("t_max", t_max, "FlowMatching"), _finite("t_min", t_min, "FlowMatching")
        if not (0 <= t_min < t_max <= 1):
            raise InputError(f"FlowMatching needs 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
        self.t_max, self.t_min = float(t_max), float(t_min)
        self.domain = (0.0, 1.0)

    def clamp_eval(self, t: Tensor) -> Tensor:
        # shifted evaluation times stay inside (0, 1]: the velocity form divides by t
        return t.clamp(min=1e-5, max=1.0)

    def alpha(self, t: Tensor) -> Tensor:
        return 1 - _as_tensor(t)

    def sigma(self, t: Tensor) -> Tensor:
        return _as_tensor(t)

    def alpha_dot(self, t: Tensor) -> Tensor:
        return -torch.ones_like(_as_tensor(t))

    def sigma_dot(self, t: Tensor) -> Tensor:
        return torch.ones_like(_as_tensor(t))

    def lambda_(self, t: Tensor) -> Tensor:
        t = _as_tensor(t)
        return torch.log1p(-t) - torch.log(t)

    def t_from_lambda(self, lam: Tensor) -> Tensor:
        return torch.sigmoid(-_as_tensor(lam))

    def to_edm_sigma(self, t: Tensor) -> Tensor:
        t = _as_tensor(t)
        return t / (1 - t)

    def from_edm_sigma(self, s: Tensor) -> Tensor:
        s = _as_tensor(s)
        return s / (1 + s)

    def ode_scale(self, t: Tensor) -> Tensor:
        return torch.ones_like(_as_tensor(t))

    def ode_time(self, t: Tensor) -> Tensor:
        return _as_tensor(t)

    def t_from_ode_time(self, u: Tensor) -> Tensor:
        return _as_tensor(u)

    def config(self) -> dict[str, Any]:
        return {"type": "flow", "t_max": self.t_max, "t_min": self.t_min}


class VP(NoiseSchedule):
    """Variance preserving DDPM schedule, alpha^2 + sigma^2 = 1.

    Continuous form (default): t in [t_min, 1], log alpha(t) = -(beta_max - beta_min) t^2 / 4 - beta_min t / 2
    (Song et al. 2021, beta_min = 0.1, beta_max = 20).

    Discrete form (`discrete=True`): t is the (continuous-valued) index n of a `num_train_timesteps`-step DDPM
    with betas `linear` (linspace(beta_start, beta_end)) or `scaled_linear` (Stable Diffusion), and
    alpha(n)^2 = prod_{i<=n} (1 - beta_i) as in diffusers' `alphas_cumprod[n]`; log alpha is interpolated
    linearly between integer indices, so alpha is continuous and differentiable almost everywhere.
    """

    name = "vp"

    def __init__(
        self,
        t_max: float | None = None,
        t_min: float | None = None,
        *,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        discrete: bool = False,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
    ):
        self.discrete = bool(discrete)
        self.beta_min, self.beta_max = _finite("beta_min", beta_min, "VP"), _finite("beta_max", beta_max, "VP")
        self.beta_start, self.beta_end = _finite("beta_start", beta_start, "VP"), _finite("beta_end", beta_end, "VP")
        if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
            raise InputError(f"VP num_train_timesteps must be an integer >= 2, got {num_train_timesteps!r}")
        if self.discrete and not 0 < self.beta_start < self.beta_end < 1:
            raise InputError(f"VP needs 0 < beta_start < beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}")
        if not self.discrete and not 0 <= self.beta_min < self.beta_max:
            raise InputError(f"VP needs 0 <= beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}")
        for name, v in (("t_max", t_max), ("t_min", t_min)):
            if v is not None:
                _finite(name, v, "VP")
        self.num_train_timesteps, self.beta_schedule = num_train_timesteps, beta_schedule
        if self.discrete:
            if beta_schedule == "linear":
                betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
            elif beta_schedule == "scaled_linear":
                betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
            else:
                raise InputError(f"VP beta_schedule must be 'linear' or 'scaled_linear', got {beta_schedule!r}")
            self._log_alpha = 0.5 * torch.cumsum(torch.log1p(-betas), 0)  # log alpha at integer indices
            hi = float(num_train_timesteps - 1)
            self.t_max = hi if t_max is None else float(t_max)
            self.t_min = 0.0 if t_min is None else float(t_min)
            self.domain = (0.0, hi)
        else:
            self.t_max = 1.0 if t_max is None else float(t_max)
            self.t_min = 1e-3 if t_min is None else float(t_min)
            self.domain = (1e-8, 1.0)
        if not (self.domain[0] <= self.t_min < self.t_max <= self.domain[1]):
            raise InputError(f"VP times must satisfy {self.domain[0]} <= t_min < t_max <= {self.domain[1]}, got t_min={self.t_min}, t_max={self.t_max}")

    # -- discrete helpers
    def _interp(self, table: Tensor, t: Tensor) -> Tensor:
        table = table.to(device=t.device, dtype=t.dtype if t.is_floating_point() else torch.float64)
        tc = t.clamp(0, table.numel() - 1)
        i0 = tc.detach().floor().long().clamp(max=table.numel() - 2)
        w = tc - i0.to(tc.dtype)
        return table[i0] * (1 - w) + table[i0 + 1] * w

    def log_alpha(self, t: Tensor) -> Tensor:
        t = _as_tensor(t)
        if self.discrete:
            return self._interp(self._log_alpha, t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(2 * self.log_alpha(t)))

    def _dlog_alpha(self, t: Tensor) -> Tensor:
        t = _as_tensor(t)
        if self.discrete:
            tab = self._log_alpha.to(device=t.device, dtype=t.dtype)
            i0 = t.detach().clamp(0, tab.numel() - 2).floor().long()
            return tab[i0 + 1] - tab[i0]
        return -0.5 * t * (self.beta_max - self.beta_min) - 0.5 * self.beta_min

    def alpha_dot(self, t: Tensor) -> Tensor:
        return self.alpha(t) * self._dlog_alpha(t)

    def sigma_dot(self, t: Tensor) -> Tensor:
        a2 = torch.exp(2 * self.log_alpha(t))
        return -a2 * self._dlog_alpha(t) / self.sigma(t)

    def lambda_(self, t: Tensor) -> Tensor:
        t = _as_tensor(t)
        la = self.log_alpha(t)
        return la - 0.5 * torch.log(-torch.expm1(2 * la))

    def t_from_lambda(self, lam: Tensor) -> Tensor:
        lam = _as_tensor(lam)
        # alpha^2 + sigma^2 = 1 gives log alpha = -softplus(-2 lambda) / 2
        la = -0.5 * torch.nn.functional.softplus(-2 * lam)
        if self.discrete:
            # invert the piecewise-linear (decreasing) table of log alpha over the index
            inc = self._log_alpha.to(device=lam.device, dtype=lam.dtype).flip(0)  # increasing
            lc = la.clamp(float(inc[0]), float(inc[-1]))
            j = torch.searchsorted(inc, lc.detach().contiguous()).clamp(1, inc.numel() - 1)
            lo, hi = inc[j - 1], inc[j]
            idx_inc = (j - 1).to(lam.dtype) + (lc - lo) / (hi - lo)
            return (inc.numel() - 1) - idx_inc
        # log alpha^2 = -softplus(-2 lambda) solves a quadratic in t
        b = -2 * la
        d = self.beta_max - self.beta_min
        return (-self.beta_min + torch.sqrt(self.beta_min**2 + 2 * d * b)) / d

    def config(self) -> dict[str, Any]:
        if self.discrete:
            return {"type": "vp", "discrete": True, "t_max": self.t_max, "t_min": self.t_min,
                    "num_train_timesteps": self.num_train_timesteps, "beta_start": self.beta_start,
                    "beta_end": self.beta_end, "beta_schedule": self.beta_schedule}
        return {"type": "vp", "discrete": False, "t_max": self.t_max, "t_min": self.t_min,
                "beta_min": self.beta_min, "beta_max": self.beta_max}


def schedule_from_config(cfg: dict[str, Any]) -> NoiseSchedule:
    """Rebuild a schedule from `schedule.config()`."""
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    if kind == "edm":
        return EDM(**cfg)
    if kind == "flow":
        return FlowMatching(**cfg)
    if kind == "vp":
        return VP(**cfg)
    raise InputError(f"unknown schedule type {kind!r} in config; expected 'edm', 'flow' or 'vp'")


def get_schedule(name: str | NoiseSchedule, **kwargs: Any) -> NoiseSchedule:
    """Look a schedule up by name: 'edm', 'vp', 'vp-discrete', 'flow'."""
    if isinstance(name, NoiseSchedule):
        return name
    table = {"edm": EDM, "ve": EDM, "vp": VP, "flow": FlowMatching, "fm": FlowMatching, "flow-matching": FlowMatching}
    if name == "vp-discrete":
        return VP(discrete=True, **kwargs)
    if name not in table:
        raise InputError(f"unknown noise schedule {name!r}; choose one of edm, vp, vp-discrete, flow")
    return table[name](**kwargs)
