"""EPD, Ensemble Parallel Directions (Zhu et al., ICCV 2025, "Distilling Parallel Gradients for Fast ODE Solvers of
Diffusion Models"; public code BeierZhu/EPD).

Each step [t_n, t_{n+1}] of a base schedule evaluates the model at K intermediate times u_k = u_{n+1}^{r_k} u_n^(1-r_k)
in parallel (one batched call) and moves along a simplex-weighted mix of those directions:

    y_k = y_n + (u_k - u_n) d_n;  d_k = d(y_k at a_k u_k);  y_{n+1} = y_n + (u_{n+1} - u_n) sum_k w_k c_k d_k

with r = sigmoid(.), w = softmax(.), and optional direction/time scales c, a = 1 + s (2 sigmoid(o/2) - 1) (s = 0 by
default, as in the reference). The parameters are learned per step and shared by all samples. NFE as published:
the K parallel evaluations of a step count once, so NFE = 2N (2N - 1 with AFS); the model is evaluated
N (1 + K) (- 1) times in total. solver="ipndm" is the EPD plugin: the moves to the intermediate points use iPNDM's
Adams-Bashforth slope, whose history holds the model calls at the step starts t_n. Distillation loss: as AMED's (the
EPD code's `EPD_loss`), per-step squared error to a teacher run on the base schedule refined by M extra points per
interval; parameters start from a seeded standard normal, as in the reference.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..denoiser import Cond, Denoiser, bcast
from ..errors import InputError
from .amed import amed_steps
from .heuristics import heuristic
from .midpoint import SplitStepDiscretizer, Stepper, ab_update, mid_time

__all__ = ["EPD", "epd_steps"]

epd_steps = amed_steps  # the same NFE arithmetic: two (batched) model calls per step


class EPD(SplitStepDiscretizer):
    """EPD-Solver (solver="epd") or the EPD plugin on iPNDM (solver="ipndm") with K parallel directions per step."""

    method = "epd"
    SOLVER_CHOICES: ClassVar[tuple[str, ...]] = ("epd", "ipndm")

    def __init__(self, steps: int, schedule, solver: str = "epd", *, num_points: int = 2, base: str = "edm",
                 scale_dir: float = 0.0, scale_time: float = 0.0, teacher_M: int = 2, teacher_solver: str = "heun",
                 seed: int = 0, **kw: Any):
        super().__init__(steps, schedule, solver, **kw)
        if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
            raise InputError(f"EPD needs K >= 1 parallel directions (num_points), got {num_points!r}")
        for name, v in (("scale_dir", scale_dir), ("scale_time", scale_time)):
            if not 0 <= v < 1:
                raise InputError(f"EPD {name} must be in [0, 1), got {v}")
        self.num_points, self.base, self.seed = int(num_points), base, int(seed)
        self.scale_dir, self.scale_time = float(scale_dir), float(scale_time)
        self.teacher_M, self.teacher_solver = int(teacher_M), teacher_solver
        self.register_buffer("times", heuristic(base, steps, schedule, t_max=self.t_max, t_min=self.t_min).clone())
        g = torch.Generator().manual_seed(self.seed)
        shape = (steps, self.num_points)
        self.r_logits = nn.Parameter(torch.randn(shape, generator=g, dtype=torch.float64))
        self.weight_logits = nn.Parameter(torch.randn(shape, generator=g, dtype=torch.float64))
        self.dir_logits = nn.Parameter(torch.randn(shape, generator=g, dtype=torch.float64), requires_grad=self.scale_dir > 0)
        self.time_logits = nn.Parameter(torch.randn(shape, generator=g, dtype=torch.float64), requires_grad=self.scale_time > 0)

    def init_kwargs(self) -> dict[str, Any]:
        return {"num_points": self.num_points, "base": self.base, "scale_dir": self.scale_dir, "scale_time": self.scale_time,
                "teacher_M": self.teacher_M, "teacher_solver": self.teacher_solver, "seed": self.seed}

    def step_params(self, dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
        """Per-step r [N, K], simplex weights w [N, K], direction scale c [N, K] and time scale a [N, K]."""
        def scale(o: Tensor, s: float) -> Tensor:
            return 1 + s * (2 * torch.sigmoid(0.5 * o) - 1)

        return {"r": torch.sigmoid(self.r_logits).to(dtype), "w": torch.softmax(self.weight_logits, -1).to(dtype),
                "c": scale(self.dir_logits, self.scale_dir).to(dtype), "a": scale(self.time_logits, self.scale_time).to(dtype)}

    def _parallel_directions(self, st: Stepper, y: Tensor, slope: Tensor, n: int, u: Tensor, p: dict[str, Tensor],
                             t_n: Tensor) -> Tensor:
        """sum_k w_k c_k d_k over the K intermediate points of step n, from ONE batched model call."""
        B, K = y.shape[0], self.num_points
        uk = mid_time(u[:, n:n + 1], u[:, n + 1:n + 2], p["r"][n][None])  # [B, K]
        ones = [1] * (y.dim() - 1)
        yk = y[:, None] + (uk - u[:, n:n + 1]).view(B, K, *ones) * slope[:, None]  # [B, K, ...]
        tk = st.sched.t_from_ode_time(uk)
        xk = st.to_x(yk.flatten(0, 1), tk.flatten())
        cond = st.cond
        if cond is not None:
            cond = {k: v.repeat_interleave(K, 0) for k, v in cond.items()} if isinstance(cond, dict) else cond.repeat_interleave(K, 0)
        Dk = st.denoise(xk, tk.flatten(), t_eval=st.sched.t_from_ode_time(p["a"][n][None] * uk).flatten(), cond=cond)
        dk = st.derivative(yk.flatten(0, 1), Dk, uk.flatten()).view(B, K, *y.shape[1:])
        wc = (p["w"][n] * p["c"][n]).view(1, K, *ones)
        return (wc * dk).sum(1)

    def _run(self, den: Denoiser, x_T: Tensor, cond: Cond, *, afs: bool, checkpoint: bool,
             targets: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
        t = self.forward(x_T).times.to(x_T.device)
        st = Stepper(den, cond, t, checkpoint)
        p = self.step_params(x_T.dtype)
        plugin, u, B = self.solver == "ipndm", st.u, x_T.shape[0]
        x, hist, loss = x_T, [], torch.zeros(B, dtype=x_T.dtype, device=x_T.device)
        for n in range(self.steps):
            tn = t[:, n]
            y = st.to_y(x, tn)
            D = st.afs(x, tn) if (afs and n == 0) else st.denoise(x, tn)
            d = st.derivative(y, D, u[:, n])
            slope = ab_update(d, hist) if plugin else d
            direction = self._parallel_directions(st, y, slope, n, u, p, tn)
            if plugin:  # only the model call at t_n enters the history (EPD code, `ipndm_sampler`)
                hist = (hist + [d.detach() if targets is not None else d])[-3:]
            y_next = y + bcast(u[:, n + 1] - u[:, n], y) * direction
            x = st.to_x(y_next, t[:, n + 1])
            if targets is not None:
                loss = loss + (x - targets[n]).pow(2).flatten(1).mean(1)
                x = (x if plugin else targets[n]).detach()
        return x, loss
