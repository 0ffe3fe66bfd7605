"""EPD, Ensemble Parallel Directions (Zhu et al., ICCV 2025, "Distilling Parallel Gradients for Fast ODE Solvers of
Diffusion Models"; public code BeierZhu/EPD at its ICCV release).

Each step [t_n, t_{n+1}] of a base schedule evaluates the model at K intermediate times u_k = u_{n+1}^{r_k} u_n^(1-r_k)
in parallel (one batched call) and moves along a simplex-weighted mix of those directions:

    y_k = y_n + (u_k - u_n) d_n;  d_k = d(y_k at a_k u_k);  y_{n+1} = y_n + (u_{n+1} - u_n) sum_k w_k c_k d_k

with r = sigmoid(.), w = softmax(.), and direction/time scales c, a = 1 + s (2 sigmoid(o/2) - 1). The parameters are
learned per step and shared by all samples. NFE as published: the K parallel evaluations of a step count once, so
NFE = 2N (2N - 1 with AFS); the model is evaluated N (1 + K) (- 1) times in total. solver="ipndm" is the EPD plugin:
the moves to the intermediate points use iPNDM's Adams-Bashforth slope (order <= 3, as in the released runs), whose
history holds the (detached) model calls at the step starts t_n.

Training as the reference trains it (`REFERENCE_TRAINING`, the CIFAR-10 options of its released runs):
- objective "endpoint": the student runs its own trajectory with the graph kept from step to step and the loss is
  taken on the final sample only (the reference: Inception-feature MSE, weight 10, for fewer than 6 timestamps;
  the training loss given to `train_loss`, e.g. "digits-features", plays that role here);
- teacher: Heun with M = 3 extra points per interval of the base schedule of the same type, each interval taken in
  two substeps polynomial (rho = 7) in time (`heun_sampler(inner_steps=3)`);
- Adam lr 0.2 with cosine decay to 0.01, batch 32, 10k priors (~313 updates), no clipping, the final weights;
- scale_dir = scale_time = 0.05 for EPD-Solver (the plugin: 0.05 / 0.2), base schedule time_uniform.
Deviation, on purpose: `init="euler"` (default) starts from an Euler-like point set (r_k from 0.02 to 0.1, uniform
weights, unit scales) instead of the reference's standard-normal logits (`init="randn"`), which make the untrained
solver multiply D by ~5 on the first step and spread the trained result across seeds. objective="per-step" keeps
the earlier AMED-style per-step loss as an option.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..denoiser import bcast
from ..errors import InputError
from ..solvers import SOLVERS
from .amed import amed_steps
from .heuristics import heuristic
from .midpoint import SplitStepDiscretizer, Stepper, ab_update, mid_time

__all__ = ["EPD", "REFERENCE_TRAINING", "epd_steps"]

epd_steps = amed_steps  # the same NFE arithmetic: two (batched) model calls per step

#: BeierZhu/EPD `exps/*-cifar10-*-epd-*/training_options.json`: Adam(lr 0.2), cosine annealing to eta_min 0.01 over
#: total_kimg * 1000 / batch updates, batch 32, total_kimg 10, no clipping, the last snapshot.
REFERENCE_TRAINING = {"lr": 0.2, "min_lr": 0.01, "batch_size": 32, "priors": 10_000, "lr_schedule": "cosine",
                      "grad_clip": 0.0, "keep": "last"}
OBJECTIVES = ("endpoint", "per-step")
INITS = ("euler", "randn")
EULER_R = (0.02, 0.1)  # the Euler-like start's range of r over the K directions


def _logit(p: Tensor) -> Tensor:
    return torch.log(p) - torch.log1p(-p)


class EPD(SplitStepDiscretizer):
    """EPD-Solver (solver="epd") or the EPD plugin on iPNDM (solver="ipndm") with K parallel directions per step."""

    method = "epd"
    SOLVER_CHOICES: ClassVar[tuple[str, ...]] = ("epd", "ipndm")
    MAX_ORDER: ClassVar[int] = 3  # the plugin's Adams-Bashforth order (`max_order` of the released runs)

    def __init__(self, steps: int, schedule, solver: str = "epd", *, num_points: int = 2, base: str = "time_uniform",
                 scale_dir: float = 0.05, scale_time: float | None = None, teacher_M: int = 3,
                 teacher_solver: str = "heun", teacher_substeps: int = 2, objective: str = "endpoint",
                 init: str = "euler", seed: int = 0, **kw: Any):
        super().__init__(steps, schedule, solver, **kw)
        if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
            raise InputError(f"EPD needs K >= 1 parallel directions (num_points), got {num_points!r}")
        scale_time = (0.2 if solver == "ipndm" else 0.05) if scale_time is None else scale_time
        for name, v in (("scale_dir", scale_dir), ("scale_time", scale_time)):
            if not 0 <= v < 1:
                raise InputError(f"EPD {name} must be in [0, 1), got {v}")
        if objective not in OBJECTIVES:
            raise InputError(f"EPD objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        if init not in INITS:
            raise InputError(f"EPD init must be one of {', '.join(INITS)}, got {init!r}")
        if teacher_solver not in SOLVERS:
            raise InputError(f"EPD teacher_solver must be one of {', '.join(SOLVERS)}, got {teacher_solver!r}")
        self.num_points, self.base, self.seed = int(num_points), base, int(seed)
        self.scale_dir, self.scale_time = float(scale_dir), float(scale_time)
        self.teacher_M, self.teacher_solver, self.teacher_substeps = int(teacher_M), teacher_solver, int(teacher_substeps)
        self.objective, self.init = objective, init
        self.register_buffer("times", heuristic(base, steps, schedule, t_max=self.t_max, t_min=self.t_min).clone())
        shape = (steps, self.num_points)
        if init == "randn":  # the reference: torch.randn for r, scale_dir, scale_time, weight, in this order
            g = torch.Generator().manual_seed(self.seed)
            r, sd, st, w = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(4))
        else:
            k = torch.arange(self.num_points, dtype=torch.float64)
            frac = k / (self.num_points - 1) if self.num_points > 1 else torch.full_like(k, 0.5)
            r = _logit(EULER_R[0] + frac * (EULER_R[1] - EULER_R[0])).expand(shape).clone()
            sd, st, w = (torch.zeros(shape, dtype=torch.float64) for _ in range(3))
        self.r_logits = nn.Parameter(r)
        self.dir_logits = nn.Parameter(sd, requires_grad=self.scale_dir > 0)
        self.time_logits = nn.Parameter(st, requires_grad=self.scale_time > 0)
        self.weight_logits = nn.Parameter(w)

    def init_kwargs(self) -> dict[str, Any]:
        return {"num_points": self.num_points, "base": self.base, "scale_dir": self.scale_dir, "scale_time": self.scale_time,
                "teacher_M": self.teacher_M, "teacher_solver": self.teacher_solver, "teacher_substeps": self.teacher_substeps,
                "objective": self.objective, "init": self.init, "seed": self.seed}

    def step_params(self, dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
        """Per-step r [N, K], simplex weights w [N, K], direction scale c [N, K] and time scale a [N, K]."""
        def scale(o: Tensor, s: float) -> Tensor:
            return 1 + s * (2 * torch.sigmoid(0.5 * o) - 1)

        return {"r": torch.sigmoid(self.r_logits).to(dtype), "w": torch.softmax(self.weight_logits, -1).to(dtype),
                "c": scale(self.dir_logits, self.scale_dir).to(dtype), "a": scale(self.time_logits, self.scale_time).to(dtype)}

    def _context(self, dtype: torch.dtype) -> dict[str, Tensor]:
        return self.step_params(dtype)

    def _parallel_directions(self, st: Stepper, y: Tensor, slope: Tensor, n: int, p: dict[str, Tensor]) -> Tensor:
        """sum_k w_k c_k d_k over the K intermediate points of step n, from ONE batched model call."""
        u, B, K = st.u, y.shape[0], self.num_points
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

    def _step(self, st: Stepper, n: int, x: Tensor, hist: list[Tensor], first_afs: bool, ctx: dict[str, Tensor],
              training: bool) -> tuple[Tensor, list[Tensor]]:
        """One EPD step: the model at t_n (or AFS), then K parallel evaluations, then the weighted move."""
        t, u = st.times, st.u
        y = st.to_y(x, t[:, n])
        D = st.afs(x, t[:, n]) if first_afs else st.denoise(x, t[:, n])
        d = st.derivative(y, D, u[:, n])
        plugin = self.solver == "ipndm"
        slope = ab_update(d, hist, max_order=self.MAX_ORDER) if plugin else d
        direction = self._parallel_directions(st, y, slope, n, ctx)
        if plugin:  # only the model call at t_n enters the history, detached (EPD code, `ipndm_sampler`)
            hist = (hist + [d.detach() if training else d])[-3:]
        y_next = y + bcast(u[:, n + 1] - u[:, n], y) * direction
        return st.to_x(y_next, t[:, n + 1]), hist
