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
forward output is hooked; the shipped digits U-Net and diffusers UNets do); for any other model the documented
fallback is the channel mean of the denoised estimate D(x_n), average-pooled to at most 4x4 (vectors: D itself).
At the AFS step the feature is zero, as in the reference. Training (`train_loss`): per-step squared error to a
teacher run on the base schedule refined by M extra points per interval (Heun, M=1, for the solver; iPNDM, M=2,
for the plugin); single-step students restart each step from the teacher state, the plugin continues from its own
(detached) state and history. The reference takes one optimiser step per step index; here the per-step losses of a
batch are summed into one step (each step's input is detached, so the gradients are the same per step).
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..denoiser import Cond, Denoiser, bcast
from ..errors import InputError
from .heuristics import heuristic
from .midpoint import SplitStepDiscretizer, Stepper, ab_update, mid_time

__all__ = ["AMED", "AMEDPredictor", "amed_steps"]


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
        self.fc = nn.Linear(4 + 16, 3)

    def forward(self, feature: Tensor, u_n: Tensor, u_next: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = torch.cat([self.enc(feature), self.emb(u_n), self.emb(u_next)], 1)
        o = self.fc(h)
        r = torch.sigmoid(o[:, 0])
        c = 1 + self.scale_dir * (2 * torch.sigmoid(o[:, 1]) - 1)
        a = 1 + self.scale_time * (2 * torch.sigmoid(o[:, 2]) - 1)
        return r, c, a


def _pooled(x: Tensor) -> Tensor:
    """Channel mean, average-pooled to at most 4x4 (images/latents), flattened; vectors as they are."""
    if x.dim() <= 3:
        return x.reshape(x.shape[0], -1)
    m = x.mean(1)  # [B, (F,) H, W]
    m = F.adaptive_avg_pool2d(m if m.dim() == 4 else m[:, None], tuple(min(4, s) for s in m.shape[-2:]))
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
            return _pooled(D.detach())
        if self.value is None:
            raise InputError("the model's bottleneck module did not run during the model call")
        return _pooled(self.value[:B].float()).to(D.dtype)  # with CFG the first half is the conditional branch


class AMED(SplitStepDiscretizer):
    """AMED-Solver (solver="amed") or AMED-Plugin on iPNDM (solver="ipndm") over N base steps."""

    method = "amed"
    SOLVER_CHOICES: ClassVar[tuple[str, ...]] = ("amed", "ipndm")

    def __init__(self, steps: int, schedule, solver: str = "amed", *, feature_dim: int = 16, feature: str = "denoised",
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
        self.seed = int(seed)
        self.register_buffer("times", heuristic(self.base, steps, schedule, t_max=self.t_max, t_min=self.t_min).clone())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.predictor = AMEDPredictor(self.feature_dim, self.hidden, self.scale_dir, self.scale_time)

    def init_kwargs(self) -> dict[str, Any]:
        return {"feature_dim": self.feature_dim, "feature": self.feature, "base": self.base, "scale_dir": self.scale_dir,
                "scale_time": self.scale_time, "hidden": self.hidden, "teacher_M": self.teacher_M,
                "teacher_solver": self.teacher_solver, "seed": self.seed}

    def _run(self, den: Denoiser, x_T: Tensor, cond: Cond, *, afs: bool, checkpoint: bool,
             targets: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
        t = self.forward(x_T).times.to(x_T.device)
        st = Stepper(den, cond, t, checkpoint)
        plugin, u, B = self.solver == "ipndm", st.u, x_T.shape[0]
        x, hist, loss = x_T, [], torch.zeros(B, dtype=x_T.dtype, device=x_T.device)
        for n in range(self.steps):
            tn, tn1 = t[:, n], t[:, n + 1]
            y = st.to_y(x, tn)
            first_afs = afs and n == 0
            with _Feature(den, self.feature) as feat:
                D = st.afs(x, tn) if first_afs else st.denoise(x, tn)
            f = torch.zeros(B, self.feature_dim, dtype=x.dtype, device=x.device) if first_afs else feat.get(B, D)
            if f.shape[1] != self.feature_dim:
                raise InputError(f"AMED was built for {self.feature_dim} feature values but this model gives {f.shape[1]}")
            r, c, a = self.predictor(f, u[:, n], u[:, n + 1])
            d = st.derivative(y, D, u[:, n])
            um = mid_time(u[:, n], u[:, n + 1], r)
            tm = den.schedule.t_from_ode_time(um)
            slope = ab_update(d, hist) if plugin else d
            ym = y + bcast(um - u[:, n], y) * slope
            hist = (hist + [d.detach() if targets is not None else d])[-3:]
            xm = st.to_x(ym, tm)
            Dm = st.denoise(xm, tm, t_eval=den.schedule.t_from_ode_time(a * um))
            dm = st.derivative(ym, Dm, um)
            if plugin:
                y_next = ym + bcast(c * (u[:, n + 1] - um), y) * ab_update(dm, hist)
                hist = (hist + [dm.detach() if targets is not None else dm])[-3:]
            else:
                y_next = y + bcast(c * (u[:, n + 1] - u[:, n]), y) * dm
            x = st.to_x(y_next, tn1)
            if targets is not None:
                loss = loss + (x - targets[n]).pow(2).flatten(1).mean(1)
                x = (x if plugin else targets[n]).detach()  # single-step students restart from the teacher state
        return x, loss
