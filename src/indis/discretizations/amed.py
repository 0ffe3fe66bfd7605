"""AMED (Zhou et al., CVPR 2024, "Fast ODE-based sampling for diffusion models in around 5 steps").

Each step [t_n, t_{n+1}] of a base schedule is split at t_mid = t_{n+1}^r t_n^(1-r) (in ODE time), where a small
predictor reads a feature of the current model call and outputs, per sample and per step, r in (0, 1), a direction
scale c_n and a time scale a_n (zju-pi/diff-sampler `amed-solver-main`):

    AMED-Solver (solver="amed"):  y_mid = y_n + (u_mid - u_n) d_n;  d_mid = d(y_mid at a_n t_mid);
                                  y_{n+1} = y_n + c_n (u_{n+1} - u_n) d_mid
    AMED-Plugin on iPNDM (solver="ipndm"): an iPNDM step to u_mid, then one to u_{n+1} scaled by c_n, both model
                                  calls entering the Adams-Bashforth history.

Two model calls per step: NFE = 2N, or 2N - 1 with AFS (the reference applies AFS at odd NFE). The predictor's input
is the channel mean of the model's U-Net bottleneck when the model exposes one (`Denoiser.bottleneck`, a module whose
forward output is hooked; the shipped digits U-Net and diffusers UNets do), every spatial position kept as in the
reference (its CIFAR-10 EDM bottleneck is 8x8: 64 values); for any other model the documented fallback is the
channel mean of the denoised estimate D(x_n), average-pooled to at most 8x8 (vectors: D itself). At the AFS step the
feature is zero, as in the reference. The predictor's linear layers start as the reference's (kaiming-normal
weights, zero biases; the time embedding's layer xavier-uniform).

Training (`train_loss`, the reference's `AMED_loss` and training loop): per-step squared error to a teacher run on
the base schedule of the same type with (M+1)N+1 points (Heun, M=1, for the solver; iPNDM, M=2, for the plugin);
single-step students restart each step from the teacher state, the plugin continues from its own (detached) state
and history; with an `update` callback the optimiser steps after every step, as the reference does. The reference
budget: Adam lr 5e-3, batch 128, 10k priors, no clipping, the final weights (`REFERENCE_TRAINING`).
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..denoiser import Denoiser, bcast
from ..errors import InputError
from ..solvers import SOLVERS
from .heuristics import heuristic
from .midpoint import SplitStepDiscretizer, Stepper, ab_update, mid_time

__all__ = ["AMED", "AMEDPredictor", "REFERENCE_TRAINING", "amed_steps"]

#: diff-sampler `amed-solver-main` (launch.sh, CIFAR-10): Adam(lr 5e-3, betas 0.9/0.999), batch 128, total_kimg 10,
#: constant learning rate, no gradient clipping, the last snapshot.
REFERENCE_TRAINING = {"lr": 5e-3, "batch_size": 128, "priors": 10_000, "lr_schedule": "constant", "grad_clip": 0.0,
                      "keep": "last"}


def amed_steps(nfe: int, afs: bool) -> int:
    """Steps N such that 2N - afs = nfe; InputError when the NFE cannot be reached that way."""
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise InputError(f"AMED NFE must be an integer >= 1, got {nfe!r}")
    if (nfe + int(afs)) % 2:
        raise InputError(f"AMED makes 2 model calls per step (2N, or 2N-1 with AFS): NFE {nfe} needs "
                         f"{'AFS off' if afs else 'AFS on'}")
    n = (nfe + int(afs)) // 2
    if n < 1 or (afs and n < 1):
        raise InputError(f"AMED cannot reach NFE {nfe}")
    return n


class _Embed(nn.Module):
    """EDM's positional embedding of a time value (cos/sin, endpoint frequencies), then Linear + SiLU."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.channels = channels
        self.lin = nn.Linear(channels, channels)
        nn.init.xavier_uniform_(self.lin.weight)
        nn.init.zeros_(self.lin.bias)

    def forward(self, t: Tensor) -> Tensor:
        half = self.channels // 2
        freqs = (1 / 10000) ** (torch.arange(half, dtype=t.dtype, device=t.device) / (half - 1))
        a = t[:, None] * freqs[None]
        return F.silu(self.lin(torch.cat([a.sin(), a.cos()], 1)))


class AMEDPredictor(nn.Module):
    """feature [B, F] and ODE times u_n, u_{n+1} [B] -> r, direction scale c, time scale a (each [B])."""

    def __init__(self, feature_dim: int, hidden: int = 128, scale_dir: float = 0.01, scale_time: float = 0.0):
        super().__init__()
        self.scale_dir, self.scale_time = float(scale_dir), float(scale_time)
        self.enc = nn.Sequential(nn.Linear(feature_dim, hidden), nn.SiLU(), nn.Linear(hidden, 4))
        self.emb = _Embed(8)
        self.fc = nn.Linear(4 + 16, 3)  # rows: r, direction scale, time scale (the reference's fc_r, fc_scale_*)
        for lin in (self.enc[0], self.enc[2], self.fc):  # EDM `Linear` default: kaiming-normal, zero bias
            nn.init.normal_(lin.weight, std=lin.in_features ** -0.5)
            nn.init.zeros_(lin.bias)

    def forward(self, feature: Tensor, u_n: Tensor, u_next: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = torch.cat([self.enc(feature), self.emb(u_n), self.emb(u_next)], 1)
        o = self.fc(h)
        r = torch.sigmoid(o[:, 0])
        c = 1 + self.scale_dir * (2 * torch.sigmoid(o[:, 1]) - 1)
        a = 1 + self.scale_time * (2 * torch.sigmoid(o[:, 2]) - 1)
        return r, c, a


def _channel_mean(x: Tensor, pool: int | None = None) -> Tensor:
    """Channel mean of a feature map, flattened (the reference's bottleneck feature), average-pooled to at most
    pool x pool first when `pool` is given; vectors as they are."""
    if x.dim() <= 3:
        return x.reshape(x.shape[0], -1)
    m = x.mean(1)  # [B, (F,) H, W]
    if pool is not None:
        m = F.adaptive_avg_pool2d(m if m.dim() == 4 else m[:, None], tuple(min(pool, s) for s in m.shape[-2:]))
    return m.reshape(x.shape[0], -1)


class _Feature:
    """Captures the predictor's input during one model call: the hooked bottleneck output, or pooled D."""

    def __init__(self, denoiser: Denoiser, kind: str):
        self.kind = kind
        self.module = getattr(denoiser, "bottleneck", None) if kind == "bottleneck" else None
        if kind == "bottleneck" and self.module is None:
            raise InputError("this AMED was built on a model bottleneck but the model has none (Denoiser.bottleneck); "
                             "rebuild it with feature='denoised'")
        self.value: Tensor | None = None

    def __enter__(self) -> "_Feature":
        self.value = None
        if self.module is not None:
            self._h = self.module.register_forward_hook(lambda m, i, o: setattr(self, "value", o.detach()))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.module is not None:
            self._h.remove()

    def get(self, B: int, D: Tensor) -> Tensor:
        if self.kind == "denoised":
            return _channel_mean(D.detach(), pool=8)
        if self.value is None:
            raise InputError("the model's bottleneck module did not run during the model call")
        return _channel_mean(self.value[:B].float()).to(D.dtype)  # with CFG the first half is the conditional branch


class AMED(SplitStepDiscretizer):
    """AMED-Solver (solver="amed") or AMED-Plugin on iPNDM (solver="ipndm") over N base steps."""

    method = "amed"
    SOLVER_CHOICES: ClassVar[tuple[str, ...]] = ("amed", "ipndm")
    objective = "per-step"
    stepwise_updates = True  # the reference takes one optimiser step per step index (`train_loss(update=...)`)

    def __init__(self, steps: int, schedule, solver: str = "amed", *, feature_dim: int = 64, feature: str = "denoised",
                 base: str | None = None, scale_dir: float = 0.01, scale_time: float | None = None, hidden: int = 128,
                 teacher_M: int | None = None, teacher_solver: str | None = None, seed: int = 0, **kw: Any):
        super().__init__(steps, schedule, solver, **kw)
        if feature not in ("bottleneck", "denoised"):
            raise InputError(f"AMED feature must be 'bottleneck' or 'denoised', got {feature!r}")
        plugin = solver == "ipndm"
        self.feature, self.feature_dim, self.hidden = feature, int(feature_dim), int(hidden)
        self.base = base or ("edm" if plugin else "time_uniform")  # the reference's recommended base schedules
        self.scale_dir = float(scale_dir)
        self.scale_time = float((0.2 if plugin else 0.0) if scale_time is None else scale_time)
        self.teacher_M = int((2 if plugin else 1) if teacher_M is None else teacher_M)
        self.teacher_solver = teacher_solver or ("ipndm" if plugin else "heun")
        if self.teacher_solver not in SOLVERS:
            raise InputError(f"AMED teacher_solver must be one of {', '.join(SOLVERS)}, got {self.teacher_solver!r}")
        self.seed = int(seed)
        self.register_buffer("times", heuristic(self.base, steps, schedule, t_max=self.t_max, t_min=self.t_min).clone())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.predictor = AMEDPredictor(self.feature_dim, self.hidden, self.scale_dir, self.scale_time)

    def init_kwargs(self) -> dict[str, Any]:
        return {"feature_dim": self.feature_dim, "feature": self.feature, "base": self.base, "scale_dir": self.scale_dir,
                "scale_time": self.scale_time, "hidden": self.hidden, "teacher_M": self.teacher_M,
                "teacher_solver": self.teacher_solver, "seed": self.seed}

    def _step(self, st: Stepper, n: int, x: Tensor, hist: list[Tensor], first_afs: bool, ctx: Any,
              training: bool) -> tuple[Tensor, list[Tensor]]:
        """One AMED step from t_n to t_{n+1} (two model calls; the first is AFS's analytic one at n = 0 with AFS)."""
        den, t, u, B = st.den, st.times, st.u, x.shape[0]
        plugin = self.solver == "ipndm"
        keep = (lambda v: v.detach()) if training else (lambda v: v)  # noqa: E731  the history carries no graph
        y = st.to_y(x, t[:, n])
        with _Feature(den, self.feature) as feat:
            D = st.afs(x, t[:, n]) if first_afs else st.denoise(x, t[:, n])
        f = torch.zeros(B, self.feature_dim, dtype=x.dtype, device=x.device) if first_afs else feat.get(B, D)
        if f.shape[1] != self.feature_dim:
            raise InputError(f"AMED was built for {self.feature_dim} feature values but this model gives {f.shape[1]}")
        r, c, a = self.predictor(f, u[:, n], u[:, n + 1])
        d = st.derivative(y, D, u[:, n])
        um = mid_time(u[:, n], u[:, n + 1], r)
        tm = den.schedule.t_from_ode_time(um)
        ym = y + bcast(um - u[:, n], y) * (ab_update(d, hist) if plugin else d)
        hist = (hist + [keep(d)])[-3:]
        Dm = st.denoise(st.to_x(ym, tm), tm, t_eval=den.schedule.t_from_ode_time(a * um))
        dm = st.derivative(ym, Dm, um)
        if plugin:
            y_next = ym + bcast(c * (u[:, n + 1] - um), y) * ab_update(dm, hist)
            hist = (hist + [keep(dm)])[-3:]
        else:
            y_next = y + bcast(c * (u[:, n + 1] - u[:, n]), y) * dm
        return st.to_x(y_next, t[:, n + 1]), hist
