"""What AMED and EPD share: solvers that split every step of a coarse base schedule at learned intermediate times.

Both work in the schedule's EDM-form ODE coordinates (y = x / c(t), u = ode_time(t), dy/du = d = (y - D) / u; plain
x and sigma for EDM). The intermediate ODE time of a step from u_n to u_{n+1} is the geometric interpolation
u_mid = u_{n+1}^r u_n^(1-r), r in (0, 1). Both distil a teacher run on the base schedule of the same type with
(M+1)N+1 points (AMED / EPD code, `get_teacher_traj`); AMED compares every step's state, EPD the final sample.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import Tensor

from ..denoiser import Cond, Denoiser, bcast
from ..errors import InputError
from ..solvers import _AB, _Coords, _Evaluator, sample
from .base import Discretizer, Steps

__all__ = ["SplitStepDiscretizer", "Stepper", "TargetCache", "ab_update", "mid_time", "refined_teacher_states", "teacher_grid"]


def mid_time(u_n: Tensor, u_next: Tensor, r: Tensor) -> Tensor:
    """u_mid = u_next^r u_n^(1-r) (AMED eq.; r and u broadcast)."""
    return torch.exp(r * torch.log(u_next) + (1 - r) * torch.log(u_n))


def ab_update(d: Tensor, history: Sequence[Tensor], max_order: int = 4) -> Tensor:
    """iPNDM's fixed Adams-Bashforth slope from the newest derivative `d` and `history` (oldest first)."""
    order = min(max_order, len(history) + 1)
    ds = [d] + list(history)[::-1][: order - 1]
    return sum(w * x for w, x in zip(_AB[order], ds))


class Stepper:
    """Model calls in ODE coordinates for a batch: D at (x, t) evaluated at another time, AFS, and an optional
    bottleneck-feature hook (AMED's predictor input)."""

    def __init__(self, denoiser: Denoiser, cond: Cond, times: Tensor, checkpoint: bool = False):
        s = denoiser.schedule
        if bool((times[:, -1] <= 0).any()):
            raise InputError("AMED/EPD need a final time above 0 (their intermediate times are geometric means)")
        self.den, self.cond, self.sched, self.times = denoiser, cond, s, times
        self.k = _Coords(s, times)
        self.u = self.k.u
        self.checkpoint = checkpoint
        self.nfe = 0

    def to_y(self, x: Tensor, t: Tensor) -> Tensor:
        return x if self.k.c is None else x / bcast(self.sched.ode_scale(t), x)

    def to_x(self, y: Tensor, t: Tensor) -> Tensor:
        return y if self.k.c is None else y * bcast(self.sched.ode_scale(t), y)

    def denoise(self, x: Tensor, t: Tensor, t_eval: Tensor | None = None, cond: Cond = None, count: bool = True) -> Tensor:
        """x0-hat at time t from a model call at t_eval (default t), as in INDIS's time shift (`indis.solvers`)."""
        shift = None if t_eval is None else (t_eval - t)[:, None]
        ev = _Evaluator(self.den, self.cond if cond is None else cond, shift, None, self.checkpoint, True, None)
        out = ev(x, t, 0)
        self.nfe += int(count)
        return out

    def afs(self, x: Tensor, t: Tensor) -> Tensor:
        ev = _Evaluator(self.den, self.cond, None, None, False, True, None)
        return ev.afs(x, t, 0)

    def derivative(self, y: Tensor, D: Tensor, u: Tensor) -> Tensor:
        return (y - D) / bcast(u, y)


def teacher_grid(base: str, steps: int, M: int, schedule, t_max: float, t_min: float, substeps: int = 1) -> tuple[Tensor, int]:
    """The reference teachers' grid (AMED / EPD code, `get_teacher_traj`): the base schedule of the same type with
    (M+1)N+1 points, each interval optionally split into `substeps` steps polynomial in u^(1/7) (EPD's Heun teacher,
    `inner_steps=3`: two rho = 7 substeps). Returns the times [(M+1) N substeps + 1] and the stride between the
    coarse times t_1..t_N in it."""
    from .heuristics import heuristic

    if isinstance(M, bool) or not isinstance(M, int) or M < 0:
        raise InputError(f"M (extra teacher points per interval) must be an integer >= 0, got {M!r}")
    if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
        raise InputError(f"teacher substeps must be an integer >= 1, got {substeps!r}")
    fine = heuristic(base, (M + 1) * steps, schedule, t_max=t_max, t_min=t_min).to(torch.float64)
    if substeps == 1:
        return fine, M + 1
    u = schedule.ode_time(fine)
    ramp = torch.arange(substeps + 1, dtype=torch.float64) / substeps
    rho = 7.0
    pieces = [(u[i] ** (1 / rho) + ramp[:-1] * (u[i + 1] ** (1 / rho) - u[i] ** (1 / rho))) ** rho for i in range(len(u) - 1)]
    grid = schedule.t_from_ode_time(torch.cat(pieces + [u[-1:]]))
    stride = (M + 1) * substeps
    grid[::substeps] = fine  # the refined points themselves, exactly
    return grid, stride


def refined_teacher_states(denoiser: Denoiser, x_T: Tensor, cond: Cond, grid: Tensor, stride: int, solver: str) -> list[Tensor]:
    """States of `solver` run on `grid` (one grid for the batch, `teacher_grid`) at every `stride`-th time after the
    first: the teacher states at the coarse times t_1..t_N, the targets of AMED / EPD distillation."""
    times = grid.to(x_T.dtype).to(x_T.device).unsqueeze(0).expand(x_T.shape[0], -1)
    with torch.no_grad():
        _, traj = sample(denoiser, x_T, times, solver=solver, cond=cond, return_trajectory=True)
    return [traj.states[k] for k in range(stride, times.shape[1], stride)]


class TargetCache:
    """Per-step teacher states by (teacher key, sample index): the refined teacher is deterministic in x_T, so a
    training run computes each prior's targets once instead of every epoch. Holds up to `max_bytes`; the oldest
    entries make room for new ones."""

    def __init__(self, max_bytes: int = 512 << 20):
        self.max_bytes, self.used, self.store = max_bytes, 0, OrderedDict()

    def get(self, key: tuple[Any, Tensor] | None, compute: Callable[[Tensor | None], list[Tensor]]) -> list[Tensor]:
        """Targets [N entries of [B, ...]] for the batch; `compute(rows)` makes them for the given batch rows."""
        if key is None:
            return compute(None)
        src, idx = key
        ids = [int(i) for i in idx.tolist()]
        missing = [k for k, i in enumerate(ids) if (src, i) not in self.store]
        fresh: dict[int, list[Tensor]] = {}
        if missing:
            states = compute(torch.tensor(missing, device=idx.device))
            for j, k in enumerate(missing):
                fresh[ids[k]] = [s[j].detach() for s in states]
        items = [fresh[i] if i in fresh else self.store[(src, i)] for i in ids]
        for i, item in fresh.items():
            self._put((src, i), item)
        return [torch.stack([it[n] for it in items]) for n in range(len(items[0]))]

    def _put(self, key: tuple[Any, int], item: list[Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in item)
        if size > self.max_bytes:
            return
        while self.used + size > self.max_bytes:
            self.used -= sum(t.numel() * t.element_size() for t in self.store.popitem(last=False)[1])
        self.store[key] = item
        self.used += size


#: one process-wide cache: the targets depend only on the teacher set (model, guidance, priors), grid and solver
SHARED_TARGETS = TargetCache()


class SplitStepDiscretizer(Discretizer):
    """What AMED and EPD share as discretizations: a base grid `times` (buffer), two model calls per step (2N NFE,
    2N - 1 with AFS), a step rule `_step`, and distillation against the reference teacher (`train_loss`, targets
    cached per prior) with one of two objectives:

    - "per-step" (AMED; EPD's earlier variant): squared error to the teacher state after every step; single-step
      solvers restart each step from the teacher state, the iPNDM plugin continues from its own (detached) state.
      With `update`, the optimiser steps after every step, as the AMED reference does.
    - "endpoint" (EPD reference, `EPD_loss` with the CIFAR/FFHQ/ImageNet training loop): the student runs its own
      trajectory with the graph kept from step to step and only the final sample is compared, by the training loss
      (the reference: Inception-feature MSE); with N >= 5 steps the reference adds the per-step squared error of
      the earlier steps (`ENDPOINT_ONLY_BELOW`), here summed into one update.
    """

    ENDPOINT_ONLY_BELOW: ClassVar[int] = 5  # EPD training loop: `loss_fn.num_steps < 6` timestamps -> final step only
    objective: str = "per-step"

    @property
    def nfe(self) -> int:
        return 2 * self.steps - int(self.afs)

    def forward(self, x_T: Tensor, cond: Cond = None, index: Tensor | None = None) -> Steps:
        """The base times [B, N+1]; the intermediate times come from the method's rule inside `sample`."""
        return Steps(self.times.to(x_T.dtype).unsqueeze(0).expand(x_T.shape[0], -1))

    def sample(self, denoiser: Denoiser, x_T: Tensor, cond: Cond = None, index: Tensor | None = None, **kw: Any) -> Tensor:
        self.check_compatible(denoiser.schedule, tuple(x_T.shape[1:]))
        return self._loop(denoiser, x_T, cond, afs=kw.get("afs", self.afs), checkpoint=kw.get("checkpoint", False))[0]

    def teacher_grid(self) -> tuple[Tensor, int]:
        """The reference teacher's grid and the stride of the coarse times in it (`midpoint.teacher_grid`)."""
        return teacher_grid(self.base, self.steps, self.teacher_M, self.schedule, self.t_max, self.t_min,
                            getattr(self, "teacher_substeps", 1))

    def teacher_states(self, denoiser: Denoiser, x_T: Tensor, cond: Cond) -> list[Tensor]:
        """The reference teacher's states at t_1..t_N for a batch of priors."""
        grid, stride = self.teacher_grid()
        return refined_teacher_states(denoiser, x_T, cond, grid, stride, self.teacher_solver)

    def train_loss(self, denoiser: Denoiser, x_T: Tensor, cond: Cond, x0: Tensor, loss_fn: Any = None,
                   checkpoint: bool = False, index: tuple[str, Tensor] | None = None,
                   update: Callable[[Tensor], None] | None = None) -> Tensor:
        """Per-sample distillation loss against the reference teacher's states (see the class docstring); `x0`
        (the many-step teacher's endpoint) is not used: these methods distil their own teacher."""
        def compute(rows: Tensor | None) -> list[Tensor]:
            if rows is None:
                return self.teacher_states(denoiser, x_T, cond)
            c = None if cond is None else ({k: v[rows] for k, v in cond.items()} if isinstance(cond, dict) else cond[rows])
            return self.teacher_states(denoiser, x_T[rows], c)

        if index is not None:  # runs with the same teacher grid (e.g. EPD's own solver and its iPNDM plugin) share
            grid, stride = self.teacher_grid()
            sig = (index[0], self.teacher_solver, stride, tuple(grid.tolist()), str(x_T.dtype), str(x_T.device))
            index = (sig, index[1])
        targets = SHARED_TARGETS.get(index, compute)
        return self._loop(denoiser, x_T, cond, afs=self.afs, checkpoint=checkpoint, targets=targets,
                          loss_fn=loss_fn, update=update)[1]

    def _loop(self, den: Denoiser, x_T: Tensor, cond: Cond, *, afs: bool, checkpoint: bool,
              targets: list[Tensor] | None = None, loss_fn: Any = None,
              update: Callable[[Tensor], None] | None = None) -> tuple[Tensor, Tensor]:
        """Run the N steps; with `targets`, also the per-sample training loss of `self.objective`."""
        t = self.forward(x_T).times.to(x_T.device)
        st = Stepper(den, cond, t, checkpoint)
        training = targets is not None
        ctx = self._context(x_T.dtype)
        x, hist = x_T, []
        loss = torch.zeros(x_T.shape[0], dtype=x_T.dtype, device=x_T.device)
        for n in range(self.steps):
            x, hist = self._step(st, n, x, hist, afs and n == 0, ctx, training)
            if not training:
                continue
            if self.objective == "endpoint":
                if n == self.steps - 1:
                    loss = loss + (loss_fn or _mse)(x, targets[n])
                elif self.steps >= self.ENDPOINT_ONLY_BELOW:
                    loss = loss + _mse(x, targets[n])
                continue
            step_loss = _mse(x, targets[n])
            if update is not None:
                update(step_loss)
                step_loss = step_loss.detach()
            loss = loss + step_loss
            x = (x if self.solver == "ipndm" else targets[n]).detach()  # single-step students restart from the teacher
        return x, loss

    def _context(self, dtype: torch.dtype) -> Any:
        """Anything the step rule needs once per run (EPD: its per-step parameters)."""
        return None

    def _step(self, st: Stepper, n: int, x: Tensor, hist: list[Tensor], first_afs: bool, ctx: Any,
              training: bool) -> tuple[Tensor, list[Tensor]]:
        raise NotImplementedError


def _mse(x: Tensor, y: Tensor) -> Tensor:
    return (x - y).pow(2).flatten(1).mean(1)
