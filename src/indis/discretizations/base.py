"""The common discretization object.

Every method (heuristic, GITS, DMN, GOD/LD3, INDIS, the per-instance oracle) is a `Discretizer`: given x_T
(and cond) it returns `Steps` = per-sample times [B, N+1], shift [B, N] and scale [B, N], which go straight into
`indis.sample`. Discretizers save to a folder (model.safetensors + config.json + README.md model card, see
`persist`) and load back with checks against the model, shape and N they are used with.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..denoiser import Cond, Denoiser
from ..errors import InputError
from ..schedules import NoiseSchedule
from ..solvers import SOLVERS, check_times, sample, solver_nfe
from .param import SHIFT_MODES, SPACES, logits_to_times, scale_from_logits, shift_from_logits, times_to_logits
from . import registry
from .prior_net import PriorNet



@dataclass
class Steps:
    """Per-sample discretization: times [B, N+1], shift [B, N] or None, scale [B, N] or None."""

    times: Tensor
    shift: Tensor | None = None
    scale: Tensor | None = None

    @property
    def steps(self) -> int:
        return self.times.shape[-1] - 1

    def detach(self) -> "Steps":
        return Steps(self.times.detach(), None if self.shift is None else self.shift.detach(),
                     None if self.scale is None else self.scale.detach())


class Discretizer(nn.Module):
    """Base class: holds N, the solver, the schedule, the data shape; subclasses implement `forward`."""

    method: ClassVar[str] = "base"
    registry: ClassVar[dict[str, type]] = registry.CLASSES
    SOLVER_CHOICES: ClassVar[tuple[str, ...]] = SOLVERS  # AMED / EPD bring their own step rules

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        registry.register(cls)

    def __init__(self, steps: int, schedule: NoiseSchedule, solver: str = "ipndm", *, afs: bool = False,
                 data_shape: Sequence[int] | None = None, t_max: float | None = None, t_min: float | None = None,
                 name: str | None = None):
        super().__init__()
        if not isinstance(steps, int) or steps < 1:
            raise InputError(f"steps (N) must be an integer >= 1, got {steps!r}")
        if solver not in self.SOLVER_CHOICES:
            raise InputError(f"unknown solver {solver!r} for {self.method}; choose one of {', '.join(self.SOLVER_CHOICES)}")
        if not isinstance(schedule, NoiseSchedule):
            raise InputError("schedule must be an indis noise schedule (indis.EDM(), indis.VP(), indis.FlowMatching())")
        self.steps, self.schedule, self.solver, self.afs = steps, schedule, solver, bool(afs)
        self.data_shape = tuple(int(s) for s in data_shape) if data_shape is not None else None
        self.t_max = float(schedule.t_max if t_max is None else t_max)
        self.t_min = float(schedule.t_min if t_min is None else t_min)
        lo, hi = schedule.domain
        if not (math.isfinite(self.t_max) and math.isfinite(self.t_min) and self.t_min < self.t_max
                and self.t_max <= hi and (self.t_min >= lo or self.t_min == 0.0)):
            raise InputError(f"t_min and t_max must be finite with t_min < t_max inside the {schedule.name} schedule's "
                             f"range [{lo}, {hi}], got t_min={self.t_min}, t_max={self.t_max}")
        self.name = name or self.method
        self.extra: dict[str, Any] = {}  # free-form provenance (teacher, metrics, training time)

    @property
    def nfe(self) -> int:
        """Model calls of one sample (AFS saves the first; heun makes two per step)."""
        return solver_nfe(self.solver, self.steps, self.afs)

    # -- interface
    def forward(self, x_T: Tensor, cond: Cond = None, index: Tensor | None = None) -> Steps:
        raise NotImplementedError

    def first_output(self, denoiser: Denoiser, x_T: Tensor, cond: Cond = None) -> Tensor | None:
        """The model output this discretization reads before choosing its steps (None: it reads only x_T and c)."""
        return None

    def plan(self, denoiser: Denoiser, x_T: Tensor, cond: Cond = None, index: Tensor | None = None) -> tuple[Steps, Tensor | None]:
        """(steps for x_T, the model's first output when the discretization read it; the solver then reuses it)."""
        first = self.first_output(denoiser, x_T, cond)
        return (self(x_T, cond, index) if first is None else self(x_T, cond, index, denoised=first)), first

    def sample(self, denoiser: Denoiser, x_T: Tensor, cond: Cond = None, index: Tensor | None = None, **kw: Any) -> Tensor:
        """Compute this discretization for x_T and run `indis.sample` with it."""
        self.check_compatible(denoiser.schedule, tuple(x_T.shape[1:]))
        s, first = self.plan(denoiser, x_T, cond, index)
        kw.setdefault("afs", self.afs)
        return sample(denoiser, x_T, s.times, solver=self.solver, shift=s.shift, scale=s.scale, cond=cond,
                      first_denoised=first, **kw)

    def init_kwargs(self) -> dict[str, Any]:
        """Constructor keyword arguments beyond the common ones (for save/load)."""
        return {}

    # -- compatibility checks
    def check_compatible(self, schedule: NoiseSchedule | None = None, data_shape: Sequence[int] | None = None,
                         steps: int | None = None, where: str = "this discretization") -> None:
        if steps is not None and steps != self.steps:
            raise InputError(f"{where} has N={self.steps} steps but N={steps} was requested; train or load one for N={steps}")
        if data_shape is not None and self.data_shape is not None and tuple(data_shape) != self.data_shape:
            raise InputError(f"{where} was made for data of shape {list(self.data_shape)} but the model's data has shape {list(data_shape)}; use one made for this model")
        if schedule is not None and schedule.name != self.schedule.name:
            raise InputError(f"{where} was made for the {self.schedule.name} schedule but the model uses {schedule.name}")

    # -- persistence (see `persist`)
    def config(self) -> dict[str, Any]:
        from .persist import config

        return config(self)

    def save(self, path: str | Path) -> Path:
        """Write `path/model.safetensors`, `path/config.json` and a `path/README.md` model card (atomically)."""
        from .persist import save

        return save(self, path)

    save_pretrained = save

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kw: Any) -> "Discretizer":
        """Load from a local folder or, online, a Hub repo id (`indis.from_pretrained`)."""
        from .persist import from_pretrained

        return from_pretrained(name_or_path, **kw)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Discretizer":
        return registry.build_from_config(cfg)


def load_discretization(path: str | Path, *, steps: int | None = None, data_shape: Sequence[int] | None = None,
                        schedule: NoiseSchedule | None = None, map_location: str | torch.device = "cpu",
                        model: Any = None, force: bool = False) -> Discretizer:
    """Load a saved discretization and check it against the N, data shape, schedule (and `model`, a ModelHandle: the
    model it was trained for, unless `force`) it will be used with."""
    from .persist import load

    return load(path, steps=steps, data_shape=data_shape, schedule=schedule, map_location=map_location, model=model, force=force)


def _batch(v: Tensor, B: int) -> Tensor:
    return v.unsqueeze(0).expand(B, *v.shape)


class FixedSchedule(Discretizer):
    """One fixed schedule for all samples (heuristics, AYS, GITS, DMN), optionally with fixed shift/scale."""

    method = "fixed"

    def __init__(self, steps: int, schedule: NoiseSchedule, solver: str = "ipndm", *, times: Tensor | Sequence[float] | None = None,
                 shift: Tensor | Sequence[float] | None = None, scale: Tensor | Sequence[float] | None = None, **kw: Any):
        super().__init__(steps, schedule, solver, **kw)
        t = torch.zeros(steps + 1, dtype=torch.float64) if times is None else torch.as_tensor(times, dtype=torch.float64)
        if times is not None:
            check_times(t, schedule)
        if t.shape != (steps + 1,):
            raise InputError(f"times must have N+1 = {steps + 1} entries, got {list(t.shape)}")
        self.register_buffer("times", t.clone())
        self.register_buffer("shift_v", torch.as_tensor(shift if shift is not None else torch.zeros(steps), dtype=torch.float64).clone())
        self.register_buffer("scale_v", torch.as_tensor(scale if scale is not None else torch.ones(steps), dtype=torch.float64).clone())
        self._has_shift, self._has_scale = shift is not None, scale is not None

    def init_kwargs(self) -> dict[str, Any]:
        return {"times": self.times.tolist(), "shift": self.shift_v.tolist() if self._has_shift else None,
                "scale": self.scale_v.tolist() if self._has_scale else None}

    def forward(self, x_T: Tensor, cond: Cond = None, index: Tensor | None = None) -> Steps:
        B, dt = x_T.shape[0], x_T.dtype
        return Steps(_batch(self.times.to(dt), B), _batch(self.shift_v.to(dt), B) if self._has_shift else None,
                     _batch(self.scale_v.to(dt), B) if self._has_scale else None)


class _Parameterized(Discretizer):
    """Shared logic of learned discretizations: logits -> times (eq. 7), shift and scale (eq. 6)."""

    def __init__(self, steps: int, schedule: NoiseSchedule, solver: str = "ipndm", *, init_times: Sequence[float] | Tensor | None = None,
                 space: str = "time", free_last: bool = False, learn_shift: bool = True, learn_scale: bool = True,
                 shift_bound: float = 0.5, shift_mode: str = "relative", scale_bound: float = 0.1, shift_first: bool = True,
                 **kw: Any):
        super().__init__(steps, schedule, solver, **kw)
        if space not in SPACES:
            raise InputError(f"space must be one of {SPACES}, got {space!r}")
        if shift_mode not in SHIFT_MODES:
            raise InputError(f"shift_mode must be one of {SHIFT_MODES}, got {shift_mode!r}")
        for name, v in (("shift_bound", shift_bound), ("scale_bound", scale_bound)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InputError(f"{name} must be a finite number >= 0, got {v!r}")
        if scale_bound >= 1:
            raise InputError(f"scale_bound must be < 1 (the scale 1 + b tanh(o/2) must stay positive), got {scale_bound}")
        self.space, self.free_last = space, bool(free_last)
        self.learn_shift, self.learn_scale = bool(learn_shift), bool(learn_scale)
        self.shift_bound, self.shift_mode, self.scale_bound = float(shift_bound), shift_mode, float(scale_bound)
        self.shift_first = bool(shift_first)  # LD3 evaluates the first step at its own time (no shift there)
        if init_times is None:
            from .param import _from_space, _to_space

            a, b = (_to_space(schedule, torch.tensor(v, dtype=torch.float64), space) for v in (self.t_max, self.t_min))
            init_times = _from_space(schedule, a + torch.linspace(0, 1, steps + 1, dtype=torch.float64) * (b - a), space)
        it = torch.as_tensor(init_times, dtype=torch.float64)
        if it.shape != (steps + 1,):
            raise InputError(f"init_times must have N+1 = {steps + 1} entries, got {list(it.shape)}")
        self.init_times = it.tolist()
        self.n_tau = steps + (1 if self.free_last else 0)
        self._init_logits = times_to_logits(it, schedule, space, self.free_last, self.t_min if self.free_last else None)

    def common_kwargs(self) -> dict[str, Any]:
        return {"init_times": self.init_times, "space": self.space, "free_last": self.free_last,
                "learn_shift": self.learn_shift, "learn_scale": self.learn_scale, "shift_bound": self.shift_bound,
                "shift_mode": self.shift_mode, "scale_bound": self.scale_bound, "shift_first": self.shift_first}

    def steps_from_outputs(self, o_tau: Tensor, o_shift: Tensor | None, o_scale: Tensor | None,
                           times: Tensor | None = None) -> Steps:
        """Steps from raw outputs (times from o_tau unless given)."""
        if times is None:
            times = logits_to_times(o_tau, self.schedule, self.t_max, self.t_min, self.space, self.free_last)
        shift = shift_from_logits(o_shift, times, self.shift_bound, self.shift_mode) if (self.learn_shift and o_shift is not None) else None
        if shift is not None and not self.shift_first:
            shift = torch.cat([torch.zeros_like(shift[..., :1]), shift[..., 1:]], -1)
        scale = scale_from_logits(o_scale, self.scale_bound) if (self.learn_scale and o_scale is not None) else None
        return Steps(times, shift, scale)


class GlobalSchedule(_Parameterized):
    """GOD / LD3: one learned schedule (plus optional shift and scale) shared by all samples."""

    method = "global"

    def __init__(self, steps: int, schedule: NoiseSchedule, solver: str = "ipndm", **kw: Any):
        super().__init__(steps, schedule, solver, **kw)
        self.logits = nn.Parameter(self._init_logits.clone())
        self.shift_logits = nn.Parameter(torch.zeros(steps, dtype=torch.float64), requires_grad=self.learn_shift)
        self.scale_logits = nn.Parameter(torch.zeros(steps, dtype=torch.float64), requires_grad=self.learn_scale)

    def init_kwargs(self) -> dict[str, Any]:
        return self.common_kwargs()

    def forward(self, x_T: Tensor, cond: Cond = None, index: Tensor | None = None) -> Steps:
        B, dt = x_T.shape[0], x_T.dtype
        s = self.steps_from_outputs(self.logits.to(dt), self.shift_logits.to(dt), self.scale_logits.to(dt))
        return Steps(_batch(s.times, B), None if s.shift is None else _batch(s.shift, B), None if s.scale is None else _batch(s.scale, B))


class InstanceOracle(_Parameterized):
    """The per-instance "overfitted" upper bound: separate parameters for each of `num_samples` training priors,
    selected by the sample index; optimised jointly (the losses are independent) in one batched run."""

    method = "instance-oracle"

    def __init__(self, steps: int, schedule: NoiseSchedule, solver: str = "ipndm", *, num_samples: int = 1, **kw: Any):
        super().__init__(steps, schedule, solver, **kw)
        if num_samples < 1:
            raise InputError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples = int(num_samples)
        self.logits = nn.Parameter(self._init_logits.clone().repeat(num_samples, 1))
        self.shift_logits = nn.Parameter(torch.zeros(num_samples, steps, dtype=torch.float64), requires_grad=self.learn_shift)
        self.scale_logits = nn.Parameter(torch.zeros(num_samples, steps, dtype=torch.float64), requires_grad=self.learn_scale)

    def init_kwargs(self) -> dict[str, Any]:
        return {**self.common_kwargs(), "num_samples": self.num_samples}

    @classmethod
    def from_global(cls, g: "GlobalSchedule", num_samples: int) -> "InstanceOracle":
        kw = g.init_kwargs()
        o = cls(g.steps, g.schedule, g.solver, afs=g.afs, data_shape=g.data_shape, t_max=g.t_max, t_min=g.t_min, num_samples=num_samples, **kw)
        with torch.no_grad():
            o.logits.copy_(g.logits.detach().expand_as(o.logits))
            o.shift_logits.copy_(g.shift_logits.detach().expand_as(o.shift_logits))
            o.scale_logits.copy_(g.scale_logits.detach().expand_as(o.scale_logits))
        return o.to(g.logits.device)

    def forward(self, x_T: Tensor, cond: Cond = None, index: Tensor | None = None) -> Steps:
        if index is None:
            raise InputError("the per-instance oracle needs the sample index of each x_T (it has one schedule per training prior)")
        index = index.to(self.logits.device).long()
        if bool((index < 0).any()) or bool((index >= self.num_samples).any()):
            raise InputError(f"sample index out of range for an oracle of {self.num_samples} samples")
        dt = x_T.dtype
        return self.steps_from_outputs(self.logits[index].to(dt), self.shift_logits[index].to(dt), self.scale_logits[index].to(dt))


class InstanceSchedule(_Parameterized):
    """INDIS: phi(x_T, c) -> O in R^{3 x N} -> per-sample times (eq. 7), shift and scale (eq. 6).

    The head starts at zero weight with bias = warm-start logits, so an untrained phi reproduces the warm-start
    schedule exactly (heuristic or a trained global one) with zero shift and unit scale.
    """

    method = "indis"

    def __init__(self, steps: int, schedule: NoiseSchedule, solver: str = "ipndm", *, net: Mapping[str, Any] | None = None, **kw: Any):
        super().__init__(steps, schedule, solver, **kw)
        if self.data_shape is None:
            raise InputError("InstanceSchedule needs data_shape (the shape of one x_T)")
        self.net_kwargs = dict(net or {})
        if "input_scale" not in self.net_kwargs:
            self.net_kwargs["input_scale"] = 1.0 / float(schedule.sigma(torch.tensor(self.t_max, dtype=torch.float64)))
        self.denoised_input = bool(self.net_kwargs.get("denoised_input", False))
        if self.denoised_input:
            if self.afs and (self.solver == "heun" or steps < 2):
                raise InputError("denoised_input with AFS reads the model call after the analytic first step: it needs "
                                 "steps >= 2 and a solver whose first step makes no call (euler, ipndm, dpmpp_*, unipc), "
                                 f"got {self.solver} with {steps} steps")
            # the first evaluation happens before phi has spoken: its time offset is the warm start's, for every sample
            self.register_buffer("first_shift", torch.zeros((), dtype=torch.float64))
            # the first shift the standardisation was measured at (NaN: never calibrated); phi refuses to run on a stale one
            self.register_buffer("calibrated_shift", torch.full((), math.nan, dtype=torch.float64))
            self.register_buffer("d_mean", torch.zeros(self.data_shape, dtype=torch.float64))
            self.register_buffer("d_std", torch.ones(self.data_shape, dtype=torch.float64))
            if self.afs:  # the first call follows the analytic step to t_1: t_1 and that step's scale are shared too
                self.register_buffer("first_time", torch.tensor(self.init_times[1], dtype=torch.float64))
                self.register_buffer("first_scale", torch.ones((), dtype=torch.float64))
                self.register_buffer("calibrated_first", torch.full((2,), math.nan, dtype=torch.float64))
        self.phi = PriorNet(self.data_shape, self.n_tau + 2 * steps, **self.net_kwargs)
        with torch.no_grad():
            self.phi.head.bias[: self.n_tau].copy_(self._tau_bias(torch.tensor(self.init_times, dtype=torch.float64)).float())

    @property
    def _after_afs(self) -> bool:
        """phi reads the model call that follows the analytic first step (AFS), at x_1 and the shared t_1."""
        return self.denoised_input and self.afs

    def _tau_bias(self, times: Tensor) -> Tensor:
        """Head bias for the time logits that reproduce `times` [N+1]; after AFS the logits place t_2..t_N in [t_1,
        t_min] (the first is unused: t_1 is shared)."""
        kw = {"free_last": self.free_last, "t_min": self.t_min if self.free_last else None}
        if not self._after_afs:
            return times_to_logits(times, self.schedule, self.space, **kw)
        return torch.cat([torch.zeros(1, dtype=torch.float64), times_to_logits(times[1:], self.schedule, self.space, **kw)])

    def _first_point(self, denoiser: Denoiser, x_T: Tensor, cond: Cond) -> tuple[Tensor, Tensor]:
        """Where the first model call happens, the same for every sample's steps: (x_T, t_max + first shift), or
        after AFS (x_1, t_1 + first shift), x_1 the analytic first step (a first-order step, that of every solver
        allowed here) from x_T to the shared t_1 with the shared first scale."""
        B, s = x_T.shape[0], self.schedule
        if not self._after_afs:
            t = torch.full((B,), self.t_max, dtype=x_T.dtype, device=x_T.device)
            return x_T, s.clamp_eval(t + self.first_shift.to(x_T))
        t1 = self.first_time.to(x_T)
        times = torch.stack([torch.full_like(t1, self.t_max), t1]).expand(B, 2)
        x1 = sample(denoiser, x_T, times, "euler", scale=self.first_scale.to(x_T).expand(B, 1), cond=cond, afs=True)
        return x1, s.clamp_eval(t1.expand(B) + self.first_shift.to(x_T))

    def _first_state(self) -> Tensor:
        """What the standardisation depends on: the first call's shift (and after AFS its time and the first scale)."""
        parts = [self.first_shift.reshape(1)] + ([self.first_time.reshape(1), self.first_scale.reshape(1)] if self._after_afs else [])
        return torch.cat(parts)

    def _calibrated_state(self) -> Tensor:
        return torch.cat([self.calibrated_shift.reshape(1)] + ([self.calibrated_first] if self._after_afs else []))

    def first_output(self, denoiser: Denoiser, x_T: Tensor, cond: Cond = None) -> Tensor | None:
        if not self.denoised_input:
            return None
        x, t = self._first_point(denoiser, x_T, cond)
        return denoiser(x, t, cond)[0]

    def calibrate(self, denoiser: Denoiser, x_T: Tensor, cond: Cond = None) -> "InstanceSchedule":
        """Set the standardisation of phi's denoised input from priors x_T (needs at least 2 of them)."""
        if not self.denoised_input:
            raise InputError("calibrate is for an INDIS built with net={'denoised_input': True}")
        if x_T.shape[0] < 2:
            raise InputError(f"calibrate needs at least 2 priors, got {x_T.shape[0]}")
        from ..priors import index_cond

        with torch.no_grad():  # in chunks: a large model need not take every calibration prior at once
            rows = torch.arange(x_T.shape[0]).split(64)
            d = torch.cat([self.first_output(denoiser, x_T[r], index_cond(cond, r)).double() for r in rows])
            std = d.std(0)
            self.d_mean.copy_(d.mean(0))
            self.d_std.copy_(std.clamp_min(1e-3 * float(std.max()) + 1e-12))  # constant pixels: no division by ~0
            self.calibrated_shift.copy_(self.first_shift)
            if self._after_afs:
                self.calibrated_first.copy_(self._first_state()[1:])
        return self

    def init_kwargs(self) -> dict[str, Any]:
        return {**self.common_kwargs(), "net": self.net_kwargs}

    @property
    def needs_basis(self) -> bool:
        """phi reads a projection of x_T (net={'input_basis': k}) whose basis is not fitted yet (training fits it)."""
        return self.phi.needs_basis

    def fit_basis(self, endpoints: Tensor) -> "InstanceSchedule":
        """Fit phi's projection basis to samples of the data (the training priors' teacher endpoints)."""
        self.phi.fit_basis(endpoints, seed=int(self.net_kwargs.get("seed", 0)))
        return self

    def warm_start(self, g: GlobalSchedule) -> "InstanceSchedule":
        """Start phi at a trained global schedule: its logits, shift and scale become the head's bias."""
        if g.steps != self.steps or g.free_last != self.free_last or g.space != self.space:
            raise InputError("warm start needs a global schedule with the same N, space and free_last")
        with torch.no_grad():
            b = self.phi.head.bias
            st = g(torch.zeros(1, *self.data_shape, dtype=torch.float64))
            b[: self.n_tau].copy_(g.logits.detach().to(b.dtype) if not self._after_afs else self._tau_bias(st.times[0].detach()).to(b.dtype))
            shift = g.shift_logits.detach().clone() if g.learn_shift else torch.zeros_like(g.shift_logits)
            if not g.shift_first:  # LD3 leaves the first evaluation unshifted: so does the warm-started phi
                shift[0] = 0.0
            b[self.n_tau : self.n_tau + self.steps].copy_(shift.to(b.dtype))
            scale = g.scale_logits.detach() if g.learn_scale else torch.zeros_like(g.scale_logits)
            b[self.n_tau + self.steps :].copy_(scale.to(b.dtype))
            self.phi.head.weight.zero_()
            if self.denoised_input:  # then calibrate: phi's input is read at this first evaluation point
                k = 1 if self.afs else 0
                self.first_shift.fill_(0.0 if st.shift is None or not self.learn_shift else float(st.shift[0, k]))
                if self._after_afs:
                    self.first_time.fill_(float(st.times[0, 1]))
                    self.first_scale.fill_(1.0 if st.scale is None or not self.learn_scale else float(st.scale[0, 0]))
        return self

    def forward(self, x_T: Tensor, cond: Cond = None, index: Tensor | None = None, denoised: Tensor | None = None) -> Steps:
        z = None
        if self.denoised_input:
            if denoised is None:
                raise InputError("this INDIS (denoised_input) chooses its steps from the model's first output D(x_T, t_max): "
                                 "use .sample(denoiser, x_T, cond) or .plan(denoiser, x_T, cond)")
            if not bool((self._calibrated_state() == self._first_state()).all()):
                raise InputError("this INDIS (denoised_input) is not calibrated at its first evaluation point: call "
                                 ".calibrate(denoiser, x_T, cond) after warm_start (indis.methods.learned does both)")
            z = ((denoised - self.d_mean.to(denoised)) / self.d_std.to(denoised)).to(self.phi.head.weight.dtype)
        o = self.phi(x_T.to(self.phi.head.weight.dtype), cond, z).to(x_T.dtype)
        n, N = self.n_tau, self.steps
        o_tau, o_shift, o_scale = o[:, :n], o[:, n : n + N], o[:, n + N :]
        if not self.denoised_input:
            return self.steps_from_outputs(o_tau, o_shift, o_scale)
        return self._shared_first(o_tau, o_shift, o_scale)

    def _shared_first(self, o_tau: Tensor, o_shift: Tensor, o_scale: Tensor) -> Steps:
        """Steps that keep what the first model call was made with, before phi spoke: its shift, and after AFS t_1
        (phi's time logits then place t_2..t_N in [t_1, t_min]) and the analytic step's scale."""
        B, k = o_tau.shape[0], 1 if self.afs else 0

        def put(v: Tensor, col: int, val: Tensor) -> Tensor:
            return torch.cat([v[:, :col], val.to(v).expand(B, 1), v[:, col + 1 :]], 1)

        times = None
        if self._after_afs:
            rest = logits_to_times(o_tau[:, 1:], self.schedule, float(self.first_time), self.t_min, self.space, self.free_last)
            times = torch.cat([torch.full_like(rest[:, :1], self.t_max), rest], 1)
        s = self.steps_from_outputs(o_tau, o_shift, o_scale, times)
        if s.shift is not None:
            s.shift = put(s.shift, k, self.first_shift)
        if self._after_afs and s.scale is not None:
            s.scale = put(s.scale, 0, self.first_scale)
        return s
