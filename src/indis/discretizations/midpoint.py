"""What AMED and EPD share: solvers that split every step of a coarse base schedule at learned intermediate times.

Both work in the schedule's EDM-form ODE coordinates (y = x / c(t), u = ode_time(t), dy/du = d = (y - D) / u; plain
x and sigma for EDM). The intermediate ODE time of a step from u_n to u_{n+1} is the geometric interpolation
u_mid = u_{n+1}^r u_n^(1-r), r in (0, 1). Their distillation loss (AMED / EPD code) compares the student state after
every step with the state of a teacher run on the same base schedule refined by M extra points per interval.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ..denoiser import Cond, Denoiser, bcast
from ..errors import InputError
from ..solvers import _AB, _Coords, _Evaluator, sample
from .base import Discretizer, Steps

__all__ = ["SplitStepDiscretizer", "Stepper", "TargetCache", "ab_update", "refined_teacher_states", "mid_time"]


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


def refined_teacher_states(denoiser: Denoiser, x_T: Tensor, cond: Cond, times: Tensor, M: int, solver: str) -> list[Tensor]:
    """States of `solver` on `times` refined by M extra points per interval (geometric in ODE time), at the coarse
    times t_1..t_N: the per-step targets of AMED / EPD distillation."""
    if M < 0:
        raise InputError(f"M (extra teacher points per interval) must be >= 0, got {M}")
    s = denoiser.schedule
    u = s.ode_time(times)
    frac = torch.arange(M + 2, dtype=times.dtype, device=times.device)[:-1] / (M + 1)
    fine_u = torch.cat([mid_time(u[:, n:n + 1], u[:, n + 1:n + 2], frac) for n in range(times.shape[1] - 1)] + [u[:, -1:]], 1)
    fine = s.t_from_ode_time(fine_u)
    fine[:, 0], fine[:, -1] = times[:, 0], times[:, -1]
    with torch.no_grad():
        _, traj = sample(denoiser, x_T, fine, solver=solver, cond=cond, return_trajectory=True)
    return [traj.states[(M + 1) * k] for k in range(1, times.shape[1])]


class TargetCache:
    """Per-step teacher states by (teacher set, sample index): the refined teacher is deterministic in x_T, so a
    training run computes each prior's targets once instead of every epoch (kept up to `max_bytes`)."""

    def __init__(self, max_bytes: int = 512 << 20):
        self.max_bytes, self.used, self.store = max_bytes, 0, {}

    def get(self, key: tuple[str, Tensor] | None, compute: Callable[[Tensor | None], list[Tensor]]) -> list[Tensor]:
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
                item = [s[j].detach() for s in states]
                fresh[ids[k]] = item
                size = sum(t.numel() * t.element_size() for t in item)
                if self.used + size <= self.max_bytes:
                    self.store[(src, ids[k])] = item
                    self.used += size
        items = [fresh[i] if i in fresh else self.store[(src, i)] for i in ids]
        return [torch.stack([it[n] for it in items]) for n in range(len(items[0]))]


class SplitStepDiscretizer(Discretizer):
    """What AMED and EPD share as discretizations: a base grid `times` (buffer), two model calls per step (2N NFE,
    2N - 1 with AFS), their own sampling loop `_run`, and the per-step distillation loss against the refined
    teacher (`train_loss`, targets cached per prior)."""

    @property
    def nfe(self) -> int:
        return 2 * self.steps - int(self.afs)

    def forward(self, x_T: Tensor, cond: Cond = None, index: Tensor | None = None) -> Steps:
        """The base times [B, N+1]; the intermediate times come from the method's rule inside `sample`."""
        return Steps(self.times.to(x_T.dtype).unsqueeze(0).expand(x_T.shape[0], -1))

    def sample(self, denoiser: Denoiser, x_T: Tensor, cond: Cond = None, index: Tensor | None = None, **kw: Any) -> Tensor:
        self.check_compatible(denoiser.schedule, tuple(x_T.shape[1:]))
        return self._run(denoiser, x_T, cond, afs=kw.get("afs", self.afs), checkpoint=kw.get("checkpoint", False))[0]

    def train_loss(self, denoiser: Denoiser, x_T: Tensor, cond: Cond, x0: Tensor, loss_fn: Any = None,
                   checkpoint: bool = False, index: tuple[str, Tensor] | None = None) -> Tensor:
        """Per-sample sum over steps of the mean squared error to the refined teacher's state (AMED/EPD loss)."""
        t = self.forward(x_T).times.to(x_T.device)

        def compute(rows: Tensor | None) -> list[Tensor]:
            if rows is None:
                return refined_teacher_states(denoiser, x_T, cond, t, self.teacher_M, self.teacher_solver)
            c = None if cond is None else ({k: v[rows] for k, v in cond.items()} if isinstance(cond, dict) else cond[rows])
            return refined_teacher_states(denoiser, x_T[rows], c, t[rows], self.teacher_M, self.teacher_solver)

        if not hasattr(self, "_targets"):
            self._targets = TargetCache()
        targets = self._targets.get(index, compute)
        return self._run(denoiser, x_T, cond, afs=self.afs, checkpoint=checkpoint, targets=targets)[1]

    def _run(self, den: Denoiser, x_T: Tensor, cond: Cond, *, afs: bool, checkpoint: bool,
             targets: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError
