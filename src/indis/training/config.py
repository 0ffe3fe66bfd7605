"""Settings of one training run, the validation split and the learning-rate schedule."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError

LR_SCHEDULES = ("plateau", "cosine", "constant")
KEEP = ("best", "last")
OPTIMIZERS = ("adam", "rmsprop")


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run.

    Budget rule (the same for every learned method): validate every `val_every` iterations; with `patience` > 0 the
    run stops once `patience` validations in a row failed to improve the best validation loss by a relative
    `min_delta`, or at the `iterations` cap, whichever comes first (`TrainResult.stop_reason` says which).
    `lr_schedule="plateau"` keeps the learning rate constant and multiplies it by `plateau_factor` after every
    `plateau_patience` validations without improvement, so the times are not frozen before they converge;
    "cosine" decays to `min_lr_ratio` over `iterations`; "constant" never changes it. `keep="best"` returns the
    parameters of the best validation; "last" the final ones (fixed-budget references such as AMED and EPD).
    """

    iterations: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    lr_schedule: str = "plateau"
    min_lr_ratio: float = 0.01
    warmup: int = 0
    optimizer: str = "adam"
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    loss: str = "mse"
    val_fraction: float = 0.1
    val_every: int = 100
    patience: int = 0
    min_delta: float = 1e-3
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    grad_checkpoint: bool = False
    seed: int = 0
    ckpt_every: int = 200
    train_indices: list[int] | None = None
    val_indices: list[int] | None = None
    #: LD3's learnable-noise soft bound: each training prior's standard-normal noise eps may move within an L2 ball
    #: of this radius (LD3: 0.001 * D / N^2) by SGD at `noise_lr` (LD3: 12 / N); a move is kept only for the samples
    #: whose loss it lowered (LD3's rule). 0 turns it off. Validation and evaluation always use the original noise.
    noise_radius: float = 0.0
    noise_lr: float = 0.0
    #: decay of an exponential moving average of the trained weights (0: off). With it, validation, the best
    #: checkpoint and the result use the averaged weights; the optimizer keeps stepping the raw ones.
    ema: float = 0.0
    keep: str = "best"

    def check(self) -> "TrainConfig":
        """Raise InputError naming the first field that is out of range."""
        ints = {"iterations": 1, "batch_size": 1, "val_every": 1, "ckpt_every": 1, "warmup": 0, "patience": 0,
                "plateau_patience": 1, "seed": 0}
        for name, lo in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise InputError(f"TrainConfig.{name} must be an integer >= {lo}, got {v!r}")
        pos = {"lr": (0, False), "min_lr_ratio": (0, True), "weight_decay": (0, True), "grad_clip": (0, True),
               "min_delta": (0, True), "noise_radius": (0, True), "noise_lr": (0, True)}
        for name, (lo, closed) in pos.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo or (v == lo and not closed):
                raise InputError(f"TrainConfig.{name} must be a finite number {'>=' if closed else '>'} {lo}, got {v!r}")
        if self.seed > 2**63 - 1:
            raise InputError(f"TrainConfig.seed must be <= 2^63 - 1, got {self.seed}")
        if isinstance(self.ema, bool) or not isinstance(self.ema, (int, float)) or not 0 <= self.ema < 1:
            raise InputError(f"TrainConfig.ema must be a decay in [0, 1) (0: off), got {self.ema!r}")
        if not 0 < self.plateau_factor < 1:
            raise InputError(f"TrainConfig.plateau_factor must be in (0, 1), got {self.plateau_factor!r}")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"TrainConfig.val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(f"TrainConfig.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.keep not in KEEP:
            raise InputError(f"TrainConfig.keep must be one of {', '.join(KEEP)}, got {self.keep!r}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"TrainConfig.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        return self

    def signature(self) -> dict[str, Any]:
        """The fields that must match to resume a run (the iteration cap may grow: more iterations extend a run)."""
        skip = {"iterations", "ckpt_every", "train_indices", "val_indices"}
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        for name in ("train_indices", "val_indices"):
            v = getattr(self, name)
            out[name] = None if v is None else [len(v), sum(int(i) * (k + 1) for k, i in enumerate(v)) % 1_000_000_007]
        return out


@dataclass
class TrainResult:
    """What a run did: per-iteration history, the best validation loss and where, wall time, why it stopped."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_val: float = math.inf
    best_iter: int = -1
    seconds: float = 0.0
    iterations: int = 0
    stop_reason: str | None = None  # "patience" | "cap" | None (interrupted or stopped early by the caller)
    reused: bool = False  # a finished run found in out_dir: nothing was trained this time
    starts: list[dict[str, Any]] = field(default_factory=list)  # multi-start: each start's validation loss
    final_val: float = math.inf  # the last validation (the kept result's with TrainConfig.keep="last")


def split_indices(n: int, val_fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Deterministic train/validation split of sample indices."""
    if not 0 <= val_fraction < 1:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 31337))
    nv = int(round(n * val_fraction))
    if val_fraction > 0 and nv == 0 and n > 1:
        nv = 1
    return perm[nv:].sort().values, perm[:nv].sort().values


def train_seed(seed: int, run: int) -> int:
    """The training seed of run `run` of a training of seed `seed` (several runs that differ only in initial weights and
    batch order): `seed` itself for run 0, else a hash of (seed, run) below 2^63 (torch keeps only part of a large
    seed, and seed + run would make run 1 of seed 0 run 0 of seed 1)."""
    if run < 0 or seed < 0:
        raise InputError(f"train_seed: seed and run must be >= 0, got seed={seed}, run={run}")
    if run == 0:
        return int(seed)
    hi, lo = np.random.SeedSequence([int(seed), int(run)]).generate_state(2, dtype=np.uint32)
    return int(((int(hi) << 32) | int(lo)) & (2**63 - 1))


def lr_factor(cfg: TrainConfig, it: int) -> float:
    """Warm-up and the cosine/constant shape of the learning rate at iteration `it` (plateau cuts come on top)."""
    if cfg.warmup and it < cfg.warmup:
        return (it + 1) / cfg.warmup
    if cfg.lr_schedule != "cosine":
        return 1.0
    p = min(1.0, (it - cfg.warmup) / max(1, cfg.iterations - cfg.warmup))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
