"""Build any discretization method by name, on one footing, for a loaded model.

Fixed: the heuristics (uniform, logsnr, edm, quadratic, time_uniform, time_quadratic, shift, rds, ays), gits,
dmn. Learned: god (global schedule with INDIS's shift/scale freedoms), ld3 (LD3: log-SNR softmax schedule started
at uniform log-SNR, a decoupled evaluation time, no scale), indis (instance-aware phi), oracle (per-instance upper
bound). Learned methods start from an `init` spec: a heuristic name, "dmn", a saved global schedule folder (warm
start), or "NAME~K" (NAME's log-gaps perturbed by seed K); `global_starts` lists the default starts of multi-start
training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .discretizations.base import (Discretizer, FixedSchedule, GlobalSchedule, InstanceOracle, InstanceSchedule,
                                   load_discretization)
from .discretizations.heuristics import HEURISTICS, heuristic
from .discretizations.param import logits_to_times, times_to_logits
from .errors import InputError
from .models import ModelHandle

LEARNED = ("god", "ld3", "indis", "oracle", "amed", "epd")
PERTURB_STD = 0.5  # std of the log-gap perturbation of a "NAME~K" start


def default_space(handle: ModelHandle) -> str:
    return "time" if handle.schedule.name == "flow" else "lambda"


def global_starts(handle: ModelHandle, n: int, first: str | None = None) -> list[str]:
    """`n` start specs for multi-start training of a global schedule: distinct heuristics first (and DMN), then
    perturbations of the first one."""
    if n < 1:
        raise InputError(f"the number of starts must be >= 1, got {n}")
    base = ["uniform", "logsnr", "edm", "quadratic"] if handle.schedule.name == "flow" else ["logsnr", "edm", "dmn", "time_uniform", "quadratic"]
    if first is not None:
        base = [first] + [b for b in base if b != first]
    out = base[:n]
    out += [f"{base[0]}~{k}" for k in range(1, n - len(out) + 1)]
    return out


def init_times(handle: ModelHandle, steps: int, init: str | None, space: str | None = None) -> torch.Tensor:
    """N+1 starting times for a learned schedule from an init spec (see the module docstring)."""
    name = init or handle.default_heuristic
    if "~" in name:
        base, _, k = name.partition("~")
        if not k.isdigit():
            raise InputError(f"perturbed start must look like NAME~K with an integer K, got {name!r}")
        t = init_times(handle, steps, base)
        sp = space or default_space(handle)
        logits = times_to_logits(t, handle.schedule, sp)
        g = torch.Generator().manual_seed(int(k))
        logits = logits + PERTURB_STD * torch.randn(logits.shape, generator=g, dtype=logits.dtype)
        return logits_to_times(logits, handle.schedule, float(t[0]), float(t[-1]), sp).detach()
    if name == "dmn":
        from .discretizations.dmn import dmn

        return dmn(steps, handle.schedule)
    if name not in HEURISTICS:
        if "/" in name or name.startswith("."):
            raise InputError(f"--init {name}: no such folder (a warm start needs the folder of a saved global schedule)")
        raise InputError(f"unknown start {name!r}: give a heuristic ({', '.join(sorted(HEURISTICS))}), dmn, NAME~K, "
                         "or the folder of a saved global schedule")
    return heuristic(name, steps, handle.schedule)


def fixed(handle: ModelHandle, method: str, steps: int, solver: str = "ipndm", afs: bool = False, **kw: Any) -> FixedSchedule:
    """A heuristic, GITS or DMN schedule wrapped as a Discretizer."""
    if method == "gits":
        from .discretizations.gits import gits
        from .priors import class_labels, prior_noise, prior_std

        # GITS' warm-up trajectories start from priors 0..warmup-1 of base seed `seed` (pass the training priors' seed);
        # `cache`: a dict kept by the caller for this handle, holding GITS' cost matrices per warm-up set
        n, seed, cache = int(kw.pop("warmup", 256)), int(kw.pop("seed", 0)), kw.pop("cache", None)
        dev = handle.denoiser.device
        xT = prior_noise(range(n), seed, handle.data_shape, prior_std(handle.schedule), device=dev)
        cond = class_labels(range(n), seed, handle.num_classes).to(dev) if handle.cond_kind == "class" else None
        g = handle.denoiser.guidance_scale  # mutable on a handle (`with_guidance`): part of the key, a tensor by value
        gkey = tuple(g.reshape(-1).tolist()) if isinstance(g, torch.Tensor) else g
        sub = None if cache is None else cache.setdefault(("gits", n, seed, gkey), {})
        times = gits(handle.denoiser, xT, steps, cond=cond, cache=sub, **kw)
    elif method == "dmn":
        from .discretizations.dmn import dmn

        times = dmn(steps, handle.schedule, **kw)
    elif method in HEURISTICS or method in ("polynomial", "karras", "flow_shift", "quad", "uniform_t"):
        times = heuristic(method, steps, handle.schedule, **kw)
    else:
        raise InputError(f"unknown schedule method {method!r}; choose one of {', '.join(sorted(HEURISTICS))}, gits, dmn")
    return FixedSchedule(steps, handle.schedule, solver, times=times, afs=afs, data_shape=handle.data_shape, name=method)


def _warm(handle: ModelHandle, steps: int, init: str | None) -> GlobalSchedule | None:
    if init is None or not Path(init).exists():
        return None
    w = load_discretization(init, steps=steps, data_shape=handle.data_shape, schedule=handle.schedule)
    if not isinstance(w, GlobalSchedule):
        raise InputError(f"--init {init} must be a saved global (god/ld3) schedule")
    return w


def _phi_net(handle: ModelHandle, net: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    netkw = dict(net or {})
    netkw.setdefault("seed", seed)
    if handle.cond_kind == "class":
        netkw.setdefault("num_classes", handle.num_classes)
        if handle.meta.get("guidance_range") is not None:
            netkw.setdefault("guidance_range", list(handle.meta["guidance_range"]))
    elif handle.cond_kind == "table":
        from .discretizations.prior_net import pool_condition

        keys = netkw.get("cond_keys") or handle.meta.get("cond_keys")  # e.g. FLUX: T5 sequence + pooled CLIP
        table = handle.cond_table
        feats = pool_condition({k: v[:1] for k, v in table.items()} if isinstance(table, dict) else table[:1], keys)
        netkw.setdefault("cond_dim", int(feats.shape[-1]))
        if keys is not None:
            netkw.setdefault("cond_keys", list(keys))
    return netkw


def amed_feature(handle: ModelHandle) -> tuple[str, int]:
    """AMED's predictor input for this model: its U-Net bottleneck when it exposes one, else pooled D(x_n); and the
    number of feature values (one probe call)."""
    from .discretizations.amed import _Feature

    kind = "bottleneck" if getattr(handle.denoiser, "bottleneck", None) is not None else "denoised"
    dev = handle.denoiser.device
    x = torch.zeros(1, *handle.data_shape, device=dev)
    t = torch.full((1,), float(handle.schedule.t_max), device=dev)
    cond = None
    if handle.cond_kind == "class":
        cond = torch.zeros(1, dtype=torch.long, device=dev)
    elif handle.cond_kind == "table":
        from .priors import cond_to, index_cond

        cond = cond_to(index_cond(handle.cond_table, torch.zeros(1, dtype=torch.long)), dev)
    with torch.no_grad(), _Feature(handle.denoiser, kind) as f:
        D, _ = handle.denoiser(x, t, cond)
    return kind, int(f.get(1, D).shape[1])


def learned_solver(handle: ModelHandle, method: str, steps: int, solver: str | None = None, *, afs: bool = False,
                   num_points: int = 2, seed: int = 0, base: str | None = None) -> Discretizer:
    """AMED (solver "amed" = AMED-Solver, "ipndm" = AMED-Plugin) or EPD (solver "epd" or "ipndm") on the heuristic
    base schedule `base` (None: each reference's default)."""
    from .discretizations import AMED, EPD
    from .discretizations.heuristics import HEURISTICS

    if base is not None and base not in HEURISTICS:
        raise InputError(f"base schedule must be one of {', '.join(HEURISTICS)}, got {base!r}")

    if method == "amed":
        kind, dim = amed_feature(handle)
        return AMED(steps, handle.schedule, solver or "amed", afs=afs, data_shape=handle.data_shape, feature=kind,
                    feature_dim=dim, seed=seed, name="amed", base=base)
    return EPD(steps, handle.schedule, solver or "epd", afs=afs, data_shape=handle.data_shape, num_points=num_points,
               seed=seed, name="epd", **({} if base is None else {"base": base}))


def learned(handle: ModelHandle, method: str, steps: int, solver: str = "ipndm", *, afs: bool = False, init: str | None = None,
            space: str | None = None, free_last: bool = False, shift_bound: float = 0.5, scale_bound: float = 0.1,
            shift_mode: str = "relative", learn_shift: bool = True, learn_scale: bool = True, num_samples: int = 0,
            net: dict[str, Any] | None = None, seed: int = 0, num_points: int = 2, base: str | None = None) -> Discretizer:
    """A trainable discretization; `init` is a start spec or the folder of a saved global schedule (warm start)."""
    if method not in LEARNED:
        raise InputError(f"unknown learned method {method!r}; choose one of {', '.join(LEARNED)}")
    if method in ("amed", "epd"):
        return learned_solver(handle, method, steps, solver, afs=afs, num_points=num_points, seed=seed, base=base)
    space = space or default_space(handle)
    warm = _warm(handle, steps, init)
    if warm is not None:
        space, free_last = warm.space, warm.free_last
        it = warm(torch.zeros(1, *handle.data_shape, dtype=torch.float64)).times[0].detach()
    else:
        it = init_times(handle, steps, init if init is not None or method != "ld3" else "logsnr", space)
    common = dict(afs=afs, data_shape=handle.data_shape, init_times=it, space=space, free_last=free_last,
                  shift_bound=shift_bound, scale_bound=scale_bound, shift_mode=shift_mode, name=method)
    if method == "ld3":  # LD3: times in log-SNR, a decoupled evaluation time within half a step, no scale, no first shift
        return GlobalSchedule(steps, handle.schedule, solver, **{**common, "learn_shift": True, "learn_scale": False,
                                                                  "shift_bound": 0.5, "shift_mode": "relative", "shift_first": False})
    if method == "god":
        d: Discretizer = GlobalSchedule(steps, handle.schedule, solver, learn_shift=learn_shift, learn_scale=learn_scale, **common)
        if warm is not None:
            d.load_state_dict(warm.state_dict())
        return d
    if method == "oracle":
        if num_samples < 1:
            raise InputError("the oracle needs num_samples (the number of priors it is fitted to)")
        if warm is not None:
            return InstanceOracle.from_global(warm, num_samples)
        return InstanceOracle(steps, handle.schedule, solver, num_samples=num_samples, learn_shift=learn_shift,
                              learn_scale=learn_scale, **common)
    d = InstanceSchedule(steps, handle.schedule, solver, learn_shift=learn_shift, learn_scale=learn_scale,
                         net=_phi_net(handle, net, seed), **common)
    if warm is not None:
        d.warm_start(warm)
    if d.denoised_input:
        d.to(handle.denoiser.device).calibrate(handle.denoiser, *calibration_priors(handle))
    return d


CALIBRATION_SEED = 7_777_777  # a stream of its own: calibration priors are none of the experiment's priors


def calibration_priors(handle: ModelHandle, n: int = 256) -> tuple[torch.Tensor, Any]:
    """n priors and conditions drawn as teacher samples are (prior std of the schedule, the handle's condition kind),
    from their own seed: what an INDIS with denoised_input standardises its input on."""
    from .priors import class_cond, cond_to, index_cond, prior_noise, prior_std, table_rows

    dev = handle.denoiser.device
    x_T = prior_noise(range(n), CALIBRATION_SEED, handle.data_shape, prior_std(handle.schedule), torch.float64, dev)
    if handle.cond_kind == "class":
        cond = class_cond(range(n), CALIBRATION_SEED, handle.cond_spec())
    elif handle.cond_kind == "table":
        cond = index_cond(handle.cond_table, torch.arange(n) % table_rows(handle.cond_table))
    else:
        cond = None
    return x_T, cond_to(cond, dev)
