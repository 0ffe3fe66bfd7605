"""Build any discretization method by name, on one footing, for a loaded model.

Fixed: the heuristics (uniform, logsnr, edm, quadratic, time_uniform, time_quadratic, shift, rds, ays), gits,
dmn. Learned: god (global schedule with INDIS's shift/scale freedoms), ld3 (LD3: log-SNR softmax schedule with
a decoupled evaluation time, no scale), indis (instance-aware phi), oracle (per-instance upper bound).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .discretizations.base import (Discretizer, FixedSchedule, GlobalSchedule, InstanceOracle, InstanceSchedule,
                                   load_discretization)
from .discretizations.heuristics import HEURISTICS, heuristic
from .errors import InputError
from .models import ModelHandle

LEARNED = ("god", "ld3", "indis", "oracle")


def default_space(handle: ModelHandle) -> str:
    return "time" if handle.schedule.name == "flow" else "lambda"


def init_times(handle: ModelHandle, steps: int, init: str | None) -> torch.Tensor:
    name = init or handle.default_heuristic
    return heuristic(name, steps, handle.schedule)


def fixed(handle: ModelHandle, method: str, steps: int, solver: str = "ipndm", afs: bool = False, **kw: Any) -> FixedSchedule:
    """A heuristic, GITS or DMN schedule wrapped as a Discretizer."""
    if method == "gits":
        from .discretizations.gits import gits
        from .teacher import prior_noise, prior_std

        n = int(kw.pop("warmup", 256))
        xT = prior_noise(range(n), int(kw.pop("seed", 0)) + 99, handle.data_shape, prior_std(handle.schedule))
        cond = None
        if handle.cond_kind == "class":
            from .teacher import class_labels

            cond = class_labels(range(n), 99, handle.num_classes)
        times = gits(handle.denoiser, xT, steps, cond=cond, **kw)
    elif method == "dmn":
        from .discretizations.dmn import dmn

        times = dmn(steps, handle.schedule, **kw)
    elif method in HEURISTICS or method in ("polynomial", "karras", "flow_shift", "quad", "uniform_t"):
        times = heuristic(method, steps, handle.schedule, **kw)
    else:
        raise InputError(f"unknown schedule method {method!r}; choose one of {', '.join(sorted(HEURISTICS))}, gits, dmn")
    return FixedSchedule(steps, handle.schedule, solver, times=times, afs=afs, data_shape=handle.data_shape, name=method)


def learned(handle: ModelHandle, method: str, steps: int, solver: str = "ipndm", *, afs: bool = False, init: str | None = None,
            space: str | None = None, free_last: bool = False, shift_bound: float = 0.5, scale_bound: float = 0.1,
            shift_mode: str = "relative", learn_shift: bool = True, learn_scale: bool = True, num_samples: int = 0,
            net: dict[str, Any] | None = None, seed: int = 0) -> Discretizer:
    """A trainable discretization; `init` is a heuristic name or the folder of a saved global schedule (warm start)."""
    if method not in LEARNED:
        raise InputError(f"unknown learned method {method!r}; choose one of {', '.join(LEARNED)}")
    space = space or default_space(handle)
    warm: GlobalSchedule | None = None
    if init is not None and Path(init).exists():
        w = load_discretization(init, steps=steps, data_shape=handle.data_shape, schedule=handle.schedule)
        if not isinstance(w, GlobalSchedule):
            raise InputError(f"--init {init} must be a saved global (god/ld3) schedule")
        warm, space, free_last = w, w.space, w.free_last
        it = w(torch.zeros(1, *handle.data_shape, dtype=torch.float64)).times[0].detach()
    else:
        it = init_times(handle, steps, init)
    common = dict(afs=afs, data_shape=handle.data_shape, init_times=it, space=space, free_last=free_last,
                  shift_bound=shift_bound, scale_bound=scale_bound, shift_mode=shift_mode, name=method)
    if method == "ld3":
        d: Discretizer = GlobalSchedule(steps, handle.schedule, solver, **{**common, "learn_shift": True, "learn_scale": False, "shift_bound": 0.5, "shift_mode": "relative"})
    elif method == "god":
        d = GlobalSchedule(steps, handle.schedule, solver, learn_shift=learn_shift, learn_scale=learn_scale, **common)
    elif method == "oracle":
        if num_samples < 1:
            raise InputError("the oracle needs num_samples (the number of priors it is fitted to)")
        d = InstanceOracle(steps, handle.schedule, solver, num_samples=num_samples, learn_shift=learn_shift, learn_scale=learn_scale, **common)
        if warm is not None:
            d = InstanceOracle.from_global(warm, num_samples)
    else:
        netkw = dict(net or {})
        netkw.setdefault("seed", seed)
        if handle.cond_kind == "class":
            netkw.setdefault("num_classes", handle.num_classes)
        elif handle.cond_kind == "table":
            from .discretizations.prior_net import pool_condition

            keys = netkw.get("cond_keys") or handle.meta.get("cond_keys")  # e.g. FLUX: T5 sequence + pooled CLIP
            table = handle.cond_table
            feats = pool_condition({k: v[:1] for k, v in table.items()} if isinstance(table, dict) else table[:1], keys)
            netkw.setdefault("cond_dim", int(feats.shape[-1]))
            if keys is not None:
                netkw.setdefault("cond_keys", list(keys))
        d = InstanceSchedule(steps, handle.schedule, solver, learn_shift=learn_shift, learn_scale=learn_scale, net=netkw, **common)
        if warm is not None:
            d.warm_start(warm)
    return d
