"""Gradient training of any learned discretization (GOD/LD3 global schedules, INDIS phi, per-instance oracle)
on teacher pairs: Adam (or RMSprop) with a cosine learning rate, a validation split with best-checkpoint
keeping, optional gradient checkpointing, DistributedDataParallel when torch.distributed is initialised, and
atomic resumable checkpoints (safetensors for tensors, JSON for the rest; nothing is pickled)."""
from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .denoiser import Denoiser
from .discretizations.base import Discretizer, InstanceOracle
from .errors import InputError
from .io import atomic_write_json, ensure_dir, load_tensors, remove_stale_temps, save_tensors
from .losses import LossFn, get_loss
from .solvers import sample
from .teacher import TeacherSet, _dist, iter_batches


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run."""

    iterations: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.01
    warmup: int = 0
    optimizer: str = "adam"  # adam | rmsprop
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    loss: str = "mse"
    val_fraction: float = 0.1
    val_every: int = 100
    grad_checkpoint: bool = False
    seed: int = 0
    ckpt_every: int = 200
    lr_schedule: str = "cosine"  # cosine | constant
    train_indices: list[int] | None = None
    val_indices: list[int] | None = None
    #: LD3's learnable-noise soft bound: each training prior's standard-normal noise eps may move within an L2 ball
    #: of this radius (LD3: 0.001 * D / N^2) by SGD at `noise_lr` (LD3: 12 / N); 0 turns it off. Validation and
    #: evaluation always use the original noise. LD3 also keeps a move only if that sample's loss went down; here
    #: every projected step is kept.
    noise_radius: float = 0.0
    noise_lr: float = 0.0


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_val: float = math.inf
    best_iter: int = -1
    seconds: float = 0.0


def split_indices(n: int, val_fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Deterministic train/validation split of sample indices."""
    if not 0 <= val_fraction < 1:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 31337))
    nv = int(round(n * val_fraction))
    if val_fraction > 0 and nv == 0 and n > 1:
        nv = 1
    return perm[nv:].sort().values, perm[:nv].sort().values


def _lr_factor(cfg: TrainConfig, it: int) -> float:
    if cfg.warmup and it < cfg.warmup:
        return (it + 1) / cfg.warmup
    if cfg.lr_schedule == "constant":
        return 1.0
    p = min(1.0, (it - cfg.warmup) / max(1, cfg.iterations - cfg.warmup))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def _make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    raise InputError(f"optimizer must be 'adam' or 'rmsprop', got {cfg.optimizer!r}")


# -- checkpoints without pickle --------------------------------------------------------------------------------
def _save_state(path: Path, disc: Discretizer, opt: torch.optim.Optimizer, meta: dict[str, Any], best: dict[str, Tensor] | None,
                noise: Tensor | None = None) -> None:
    tensors: dict[str, Tensor] = {f"model.{k}": v for k, v in disc.state_dict().items()}
    if noise is not None:
        tensors["noise_offsets"] = noise
    if best is not None:
        tensors.update({f"best.{k}": v for k, v in best.items()})
    osd = opt.state_dict()
    scalars: dict[str, Any] = {}
    for pid, st in osd["state"].items():
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"opt.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    meta = {**meta, "opt_scalars": scalars, "opt_groups": osd["param_groups"]}
    save_tensors(path / "train_state.safetensors", tensors, {"meta": json.dumps(meta)})


def _disc_signature(disc: Discretizer) -> dict[str, Any]:
    return {"class": type(disc).__name__, "name": disc.name, "steps": disc.steps, "solver": disc.solver,
            "data_shape": list(disc.data_shape) if disc.data_shape is not None else None, "schedule": disc.schedule.name}


def _load_state(path: Path, disc: Discretizer, opt: torch.optim.Optimizer, cfg: TrainConfig | None = None) -> tuple[dict[str, Any], dict[str, Tensor] | None]:
    f = path / "train_state.safetensors"
    try:
        tensors, md = load_tensors(f)
    except InputError as exc:
        raise InputError(f"training checkpoint '{f}' is corrupt or truncated ({str(exc.__cause__ or exc).splitlines()[0]}); "
                         "delete it to start this run over, or use another --out folder") from exc
    try:
        meta = json.loads(md["meta"])
    except (KeyError, ValueError) as exc:
        raise InputError(f"'{f}' is not an indis training checkpoint (no valid metadata); delete it to start over or use another --out folder") from exc
    other = f"'{path}' holds a training run with other settings"
    fix = "use another --out folder, or the same settings to resume"
    sig, old = _disc_signature(disc), meta.get("disc")
    if old is not None and old != sig:
        diffs = ", ".join(f"{k} {old.get(k)} (not {sig[k]})" for k in sig if old.get(k) != sig[k])
        raise InputError(f"{other}: {diffs}; {fix}")
    if cfg is not None:
        oc = meta.get("config", {})
        diffs = [k for k in ("iterations", "seed", "batch_size", "loss", "optimizer") if oc.get(k) != getattr(cfg, k)]
        if diffs:
            raise InputError(f"{other} ({', '.join(f'{k}={oc.get(k)!r}' for k in diffs)}); {fix}")
    try:
        disc.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError as exc:
        raise InputError(f"{other}: its parameters do not fit this discretization ({str(exc).splitlines()[0]}); {fix}") from exc
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for k, v in meta.pop("opt_scalars").items():
        pid, name = k.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    try:
        opt.load_state_dict({"state": state, "param_groups": meta.pop("opt_groups")})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise InputError(f"{other}: its optimizer state does not fit ({exc}); {fix}") from exc
    return meta, best


class _DeferredInterrupt:
    """Turn Ctrl-C (SIGINT) and SIGTERM (schedulers, torchrun shutting down) into a flag checked between iterations,
    so the run stops at a clean iteration boundary and saves. In a single process a second Ctrl-C interrupts at
    once (the last checkpoint is kept); under torchrun, which forwards the terminal's Ctrl-C to the workers a
    second time, repeated signals are ignored and every rank stops at the same iteration."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, hard_on_second: bool = True) -> None:
        self.flag = False
        self.hard_on_second = hard_on_second
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_DeferredInterrupt":
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


def evaluate_loss(disc: Discretizer, denoiser: Denoiser, teacher: TeacherSet, indices: Tensor, loss_fn: LossFn,
                  batch_size: int = 256, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """Mean loss of `disc` against the teacher endpoints over `indices` (no gradients)."""
    total, n = 0.0, 0
    with torch.no_grad():
        for b in iter_batches(indices, batch_size, 0, 0, shuffle=False):
            idx, xT, c, x0 = teacher.batch(b, dtype, device)
            out = disc.sample(denoiser, xT, c, idx.to(device))
            total += float(loss_fn(out, x0).sum())
            n += len(b)
    return total / max(n, 1)


def train_discretizer(
    disc: Discretizer,
    denoiser: Denoiser,
    teacher: TeacherSet,
    cfg: TrainConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    loss_fn: LossFn | None = None,
    callback: Callable[[int, float], None] | None = None,
    stop_at: int | None = None,
) -> TrainResult:
    """Train `disc` so that few-step samples match the teacher endpoints (paper eq. 8, Algorithm 1).

    With `out_dir`, the run checkpoints atomically every `ckpt_every` iterations and on Ctrl-C, resumes from
    `out_dir/train_state.safetensors`, and saves the best-validation discretization to `out_dir/best`.
    Under torch.distributed each rank takes an equal slice of every global batch (DDP averages gradients).
    """
    cfg = cfg or TrainConfig()
    if cfg.iterations < 1 or cfg.batch_size < 1:
        raise InputError("iterations and batch_size must be >= 1")
    if not teacher.is_complete():
        raise InputError(f"teacher set '{teacher.path}' is incomplete; finish it with `indis teacher` first")
    disc.check_compatible(denoiser.schedule, teacher.config.data_shape)
    loss_fn = loss_fn or get_loss(cfg.loss)
    rank, world = _dist()
    torch.manual_seed(cfg.seed)
    disc.to(device)
    oracle = isinstance(disc, InstanceOracle)
    if cfg.train_indices is not None:
        tr = torch.as_tensor(cfg.train_indices, dtype=torch.long)
        va = torch.as_tensor(cfg.val_indices if cfg.val_indices is not None else [], dtype=torch.long)
    elif oracle:  # the oracle is fitted and judged on the same priors
        tr = torch.arange(teacher.num_samples)
        va = tr
    else:
        tr, va = split_indices(teacher.num_samples, cfg.val_fraction, cfg.seed)
    if oracle and int(tr.max()) >= disc.num_samples:
        raise InputError(f"oracle has {disc.num_samples} per-sample schedules but the teacher set has {teacher.num_samples} samples")
    if cfg.batch_size % world:
        raise InputError(f"batch_size {cfg.batch_size} must be divisible by the number of processes {world}")
    params = [p for p in disc.parameters() if p.requires_grad]
    if not params:
        raise InputError(f"{disc.method} has no trainable parameters")
    noise = None
    if cfg.noise_radius < 0 or cfg.noise_lr < 0:
        raise InputError("noise_radius and noise_lr must be >= 0")
    if cfg.noise_radius > 0:
        if world > 1:
            raise InputError("LD3's learnable noise (noise_radius > 0) runs in a single process; drop it or run without torchrun")
        noise = torch.zeros(teacher.num_samples, *teacher.config.data_shape, dtype=dtype, device=device)
        noise_lr = cfg.noise_lr or 12.0 / disc.steps
    model: nn.Module = disc
    if world > 1:
        model = nn.parallel.DistributedDataParallel(disc)
    opt = _make_optimizer(params, cfg)
    result = TrainResult()
    start, best_state = 0, None
    out = ensure_dir(out_dir) if out_dir is not None else None
    if out is not None and rank == 0:
        for name in ("train_state.safetensors", "history.json"):
            remove_stale_temps(out, name)  # left by a killed run; never read
    if out is not None and (out / "train_state.safetensors").is_file():
        meta, best_state = _load_state(out, disc, opt, cfg)
        if noise is not None:
            saved, _ = load_tensors(out / "train_state.safetensors")
            if "noise_offsets" in saved:
                noise.copy_(saved["noise_offsets"])
        start = int(meta["iteration"])
        result.history = meta.get("history", [])
        result.best_val, result.best_iter = float(meta.get("best_val", math.inf)), int(meta.get("best_iter", -1))
    per_epoch = max(1, math.ceil(len(tr) / cfg.batch_size))
    bar = None
    if progress and rank == 0 and start < cfg.iterations:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.iterations, initial=start, desc=f"train {disc.name} (N={disc.steps})", unit="it")
    t0 = time.time()

    def checkpoint(it: int) -> None:
        if out is None or rank != 0:
            return
        meta = {"iteration": it, "config": asdict(cfg), "disc": _disc_signature(disc), "history": result.history,
                "best_val": result.best_val, "best_iter": result.best_iter}
        _save_state(out, disc, opt, meta, best_state, noise)
        atomic_write_json(out / "history.json", {"iteration": it, "world_size": world, "history": result.history,
                                                 "best_val": result.best_val, "best_iter": result.best_iter})

    def stop_requested() -> bool:
        if world == 1:
            return intr.flag
        f = torch.tensor([1.0 if intr.flag else 0.0])
        torch.distributed.all_reduce(f, op=torch.distributed.ReduceOp.MAX)  # every rank stops at the same iteration
        return bool(f.item())

    it = start
    clean = True  # False while an update is half applied (params stepped, bookkeeping not yet done)
    intr = _DeferredInterrupt(hard_on_second=world == 1)
    try:
        intr.__enter__()
        while it < cfg.iterations:
            epoch, pos = divmod(it, per_epoch)
            batches = list(iter_batches(tr, cfg.batch_size, cfg.seed, epoch))
            for b in batches[pos:]:
                if it >= cfg.iterations or (stop_at is not None and it >= stop_at):
                    break
                if stop_requested():
                    raise KeyboardInterrupt
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * _lr_factor(cfg, it)
                local = b.tensor_split(world)[rank] if world > 1 else b
                idx, xT, c, x0 = teacher.batch(local, dtype, device)
                if noise is not None:
                    off = noise[idx.to(device)].clone().requires_grad_(True)
                    xT = xT + teacher.config.prior_std * off  # x_T = sigma_T (eps + offset)
                disc.train()
                s = model(xT, c, idx.to(device))
                x = sample(denoiser, xT, s.times, solver=disc.solver, shift=s.shift, scale=s.scale, cond=c,
                           afs=disc.afs, checkpoint=cfg.grad_checkpoint)
                per = loss_fn(x, x0)
                # DDP averages gradients over ranks, so each rank scales by world / global count: the average is then
                # the mean over the global batch even when the slices are unequal (a short last batch); the oracle's
                # per-sample losses are summed, so only the averaging is undone there
                loss = per.sum() * world / len(b) if not oracle else per.sum() * world
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip and not oracle:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                clean = False
                opt.step()
                if noise is not None:
                    with torch.no_grad():  # SGD on eps, projected onto the ball ||offset|| <= radius
                        new = off - noise_lr * off.grad
                        norm = new.flatten(1).norm(dim=1).clamp_min(1e-30)
                        noise[idx.to(device)] = new * (cfg.noise_radius / norm).clamp(max=1.0).view(-1, *[1] * (new.dim() - 1))
                it += 1
                tot = per.detach().sum().double().reshape(1)
                if world > 1:
                    torch.distributed.all_reduce(tot)
                lv = float(tot) / len(b)  # mean over the global batch, identical on every rank
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{lv:.4g}", best_val=f"{result.best_val:.4g}")
                if callback is not None:
                    callback(it, lv)
                rec: dict[str, float] = {"iteration": it, "loss": lv}
                if len(va) and (it % cfg.val_every == 0 or it == cfg.iterations):
                    disc.eval()
                    v = evaluate_loss(disc, denoiser, teacher, va, loss_fn, max(cfg.batch_size, 256), device, dtype)
                    rec["val"] = v
                    if v < result.best_val:
                        result.best_val, result.best_iter = v, it
                        best_state = {k: t.detach().clone() for k, t in disc.state_dict().items()}
                result.history.append(rec)
                clean = True
                if it % cfg.ckpt_every == 0:
                    checkpoint(it)
            else:
                continue
            break
    except KeyboardInterrupt:
        if clean:  # at an iteration boundary: save exactly where we stopped
            checkpoint(it)
        raise
    finally:
        intr.__exit__()
        if bar is not None:
            bar.close()
    result.seconds = time.time() - t0
    checkpoint(it)
    if it >= cfg.iterations and best_state is not None:
        disc.load_state_dict(best_state)  # keep the best-validation parameters
    disc.extra.update({"train": {"iterations": it, "best_val": result.best_val, "best_iter": result.best_iter,
                                 "seconds": round(result.seconds, 2), "loss": cfg.loss}})
    if out is not None and rank == 0 and it >= cfg.iterations:
        disc.save(out / "best")
    if world > 1:
        torch.distributed.barrier()  # no rank tears the process group down while rank 0 is still saving
    return result
