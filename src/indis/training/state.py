"""Resumable training state without pickle (safetensors for tensors, JSON for the rest) and deferred Ctrl-C."""
from __future__ import annotations

import json
import math
import signal
import threading
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..discretizations.base import Discretizer
from ..errors import InputError
from ..io import load_tensors, save_tensors
from .config import TrainConfig

STATE_FILE = "train_state.safetensors"


@dataclass
class LoopState:
    """Everything besides tensors that a run needs to continue exactly where it stopped."""

    iteration: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val: float = math.inf
    best_iter: int = -1
    lr_scale: float = 1.0  # product of the plateau cuts so far
    since_best: int = 0  # validations since the last improvement by min_delta
    stop_reason: str | None = None
    seconds: float = 0.0  # training wall time summed over every session of this run


def disc_signature(disc: Discretizer) -> dict[str, Any]:
    return {"class": type(disc).__name__, "name": disc.name, "steps": disc.steps, "solver": disc.solver,
            "data_shape": list(disc.data_shape) if disc.data_shape is not None else None, "schedule": disc.schedule.name}


def save_state(path: Path, disc: Discretizer, opt: torch.optim.Optimizer, cfg: TrainConfig, st: LoopState,
               best: dict[str, Tensor] | None, extra: dict[str, Tensor] | None = None) -> None:
    tensors: dict[str, Tensor] = {f"model.{k}": v for k, v in disc.state_dict().items()}
    tensors.update({f"extra.{k}": v for k, v in (extra or {}).items()})
    if best is not None:
        tensors.update({f"best.{k}": v for k, v in best.items()})
    osd = opt.state_dict()
    scalars: dict[str, Any] = {}
    for pid, s in osd["state"].items():
        for k, v in s.items():
            if isinstance(v, Tensor):
                tensors[f"opt.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    meta = {**asdict(st), "config": cfg.signature(), "iterations_cap": cfg.iterations, "disc": disc_signature(disc),
            "opt_scalars": scalars, "opt_groups": osd["param_groups"]}
    save_tensors(path / STATE_FILE, tensors, {"meta": json.dumps(meta)})


def load_state(path: Path, disc: Discretizer, opt: torch.optim.Optimizer, cfg: TrainConfig
               ) -> tuple[LoopState, dict[str, Tensor] | None, dict[str, Tensor]]:
    """Restore model, optimizer and loop state from `path`; refuse a run made with other settings."""
    f = path / STATE_FILE
    try:
        tensors, md = load_tensors(f)
    except InputError as exc:
        raise InputError(f"training checkpoint '{f}' is corrupt or truncated ({str(exc.__cause__ or exc).splitlines()[0]}); "
                         "delete it to start this run over, or use another --out folder") from exc
    try:
        meta = json.loads(md["meta"])
        st = LoopState(**{k: meta[k] for k in LoopState.__dataclass_fields__ if k in meta})
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"'{f}' is not an indis training checkpoint (no valid metadata); delete it to start over or use another --out folder") from exc
    other = f"'{path}' holds a training run with other settings"
    fix = "use another --out folder, or the same settings to resume"
    sig, old = disc_signature(disc), meta.get("disc")
    if old != sig:
        diffs = ", ".join(f"{k} {old.get(k) if isinstance(old, dict) else None} (not {sig[k]})" for k in sig
                          if not isinstance(old, dict) or old.get(k) != sig[k])
        raise InputError(f"{other}: {diffs}; {fix}")
    oc, nc = meta.get("config", {}), cfg.signature()
    # a setting missing from a stored signature was added to TrainConfig later: the run used its default
    old_cfg = {**{f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}, **oc}
    diffs = [k for k in nc if old_cfg.get(k) != nc[k]]
    if diffs:
        raise InputError(f"{other} ({', '.join(f'{k}={old_cfg.get(k)!r}, not {nc[k]!r}' for k in diffs)}); {fix}")
    try:
        disc.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError as exc:
        raise InputError(f"{other}: its parameters do not fit this discretization ({str(exc).splitlines()[0]}); {fix}") from exc
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    extra = {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for k, v in meta.get("opt_scalars", {}).items():
        pid, name = k.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    try:
        opt.load_state_dict({"state": state, "param_groups": meta["opt_groups"]})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise InputError(f"{other}: its optimizer state does not fit ({exc}); {fix}") from exc
    return st, best, extra


class DeferredInterrupt:
    """Turn Ctrl-C (SIGINT) and SIGTERM (schedulers, torchrun shutting down) into a flag checked between iterations,
    so the run stops at a clean iteration boundary and saves. In a single process a second Ctrl-C interrupts at
    once (the last checkpoint is kept); under torchrun, which forwards the terminal's Ctrl-C to the workers a
    second time, repeated signals are ignored and every rank stops at the same iteration."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, hard_on_second: bool = True) -> None:
        self.flag = False
        self.hard_on_second = hard_on_second
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is None:
                    continue
                try:
                    self._old[sig] = signal.signal(sig, self._handler)
                except (ValueError, OSError):  # not supported here (embedded interpreter)
                    pass
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        if self.flag and self.hard_on_second:
            self.__exit__()
            raise KeyboardInterrupt
        self.flag = True

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            try:
                signal.signal(sig, old if old is not None else signal.SIG_DFL)
            except (ValueError, OSError):
                pass
        self._old = {}
