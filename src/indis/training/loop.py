"""The training loop (paper eq. 8, Algorithm 1) for every learned discretization: GOD/LD3 global schedules, INDIS
phi, the per-instance oracle, AMED and EPD. A `TrainRun` is built once (indices, optimizer, resume state) and
offers `step`, `validate` and `checkpoint`; `run` is the driver loop. DistributedDataParallel is used when
torch.distributed is initialised; checkpoints are atomic and resumable (nothing is pickled)."""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from ..denoiser import Cond, Denoiser
from ..discretizations.base import Discretizer, InstanceOracle
from ..errors import InputError
from ..io import atomic_write_json, ensure_dir, remove_stale_temps
from ..losses import LossFn, get_loss
from ..solvers import sample
from ..teacher import TeacherSet, _dist, iter_batches
from .config import TrainConfig, TrainResult, lr_factor, make_optimizer, split_indices
from .state import STATE_FILE, DeferredInterrupt, LoopState, load_state, save_state


def evaluate_loss(disc: Discretizer, denoiser: Denoiser, teacher: TeacherSet, indices: Tensor, loss_fn: LossFn,
                  batch_size: int = 256, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """Mean loss of `disc` against the teacher endpoints over `indices` (no gradients)."""
    total, n = 0.0, 0
    with torch.no_grad():
        for b in iter_batches(torch.as_tensor(indices), batch_size, 0, 0, shuffle=False):
            idx, xT, c, x0 = teacher.batch(b, dtype, device)
            out = disc.sample(denoiser, xT, c, idx.to(device))
            total += float(loss_fn(out, x0).sum())
            n += len(b)
    return total / max(n, 1)


def schedule_stats(disc: Discretizer, denoiser: Denoiser, xT: Tensor, cond: Cond, index: Tensor) -> dict[str, list[float]]:
    """Mean and spread over priors of the log EDM-sigma of each interior time: shows whether a learned schedule
    (and phi's mean schedule) moves during training, and how much it differs per instance."""
    with torch.no_grad():
        t = disc.plan(denoiser, xT, cond, index)[0].times[:, 1:-1].double()
    if t.shape[1] == 0:
        return {}
    lt = torch.log(disc.schedule.to_edm_sigma(t))
    return {"log_sigma_mean": [round(float(v), 5) for v in lt.mean(0)],
            "log_sigma_std": [round(float(v), 5) for v in lt.std(0, unbiased=False)]}


def _assign(dst: list[Tensor], src: list[Tensor]) -> None:
    """Copy each tensor of `src` into its counterpart in `dst` in place (parameters, their moving average)."""
    with torch.no_grad():
        for d, s in zip(dst, src):
            d.copy_(s)


class NoiseBall:
    """LD3's learnable noise: per-prior offsets of the standard-normal noise, moved by SGD inside an L2 ball of
    `radius`; a move is kept only for the samples whose loss it lowered."""

    def __init__(self, num: int, shape: tuple[int, ...], radius: float, lr: float, std: float, dtype: torch.dtype, device: Any):
        self.offsets = torch.zeros(num, *shape, dtype=dtype, device=device)
        self.radius, self.lr, self.std = radius, lr, std

    def perturb(self, idx: Tensor, xT: Tensor) -> tuple[Tensor, Tensor]:
        off = self.offsets[idx].clone().requires_grad_(True)
        return xT + self.std * off, off  # x_T = sigma_T (eps + offset)

    def update(self, idx: Tensor, xT: Tensor, off: Tensor, loss_before: Tensor, resolve: Callable[[Tensor], Tensor]) -> None:
        if off.grad is None:
            return
        with torch.no_grad():
            new = off - self.lr * off.grad
            norm = new.flatten(1).norm(dim=1).clamp_min(1e-30)
            new = new * (self.radius / norm).clamp(max=1.0).view(-1, *[1] * (new.dim() - 1))
            keep = resolve(xT + self.std * new) < loss_before.detach()
            self.offsets[idx] = torch.where(keep.view(-1, *[1] * (new.dim() - 1)), new, off.detach())


BASIS_ENDPOINTS = 4096  # at most this many training endpoints fit phi's projection basis (input_basis)


class TrainRun:
    """One training run of `disc` against a teacher set, resumable from `out_dir`."""

    def __init__(self, disc: Discretizer, denoiser: Denoiser, teacher: TeacherSet, cfg: TrainConfig | None = None, *,
                 out_dir: str | Path | None = None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 loss_fn: LossFn | None = None, val_teacher: TeacherSet | None = None):
        self.cfg = cfg = (cfg or TrainConfig()).check()
        for name, ts in (("teacher", teacher), ("val_teacher", val_teacher)):
            if ts is None and name == "val_teacher":
                continue
            if not isinstance(ts, TeacherSet):
                raise InputError(f"{name} must be an indis.TeacherSet, got {type(ts).__name__}")
            if not ts.is_complete():
                raise InputError(f"teacher set '{ts.path}' is incomplete; finish it with `indis teacher` first")
        self.val_teacher = val_teacher or teacher
        for ts in {id(teacher): teacher, id(self.val_teacher): self.val_teacher}.values():
            if disc.data_shape is not None and list(ts.config.data_shape) != list(disc.data_shape):
                raise InputError(f"teacher set '{ts.path}' holds data of shape {ts.config.data_shape} but the discretization is "
                                 f"for shape {list(disc.data_shape)}: a teacher set of another model?")
            ts.check_model(denoiser, ts.config.data_shape, device=device)  # schedule and model fingerprint, naming the set
        disc.check_compatible(denoiser.schedule, teacher.config.data_shape, where=f"{disc.name} (trained on '{teacher.path}')")
        self.disc, self.den, self.teacher, self.device, self.dtype = disc, denoiser, teacher, device, dtype
        self.loss_fn = loss_fn or get_loss(cfg.loss)
        self.rank, self.world = _dist()
        disc.to(device)
        self.oracle = isinstance(disc, InstanceOracle)
        self.tr, self.va = self._split()
        if getattr(disc, "needs_basis", False):  # phi reads x_T projected on the data's principal directions
            disc.fit_basis(self.teacher.x0()[self.tr[:BASIS_ENDPOINTS]])
        if cfg.batch_size % self.world:
            raise InputError(f"batch_size {cfg.batch_size} must be divisible by the number of processes {self.world}")
        self.params = [p for p in disc.parameters() if p.requires_grad]
        if not self.params:
            raise InputError(f"{disc.method} has no trainable parameters")
        self.noise = self._noise_ball()
        custom = getattr(disc, "train_loss", None)
        if self.world > 1 and custom is not None:
            raise InputError(f"{disc.method} trains in a single process; run it without torchrun")
        self.model: nn.Module = nn.parallel.DistributedDataParallel(disc) if self.world > 1 else disc
        self.opt = make_optimizer(self.params, cfg)
        self.st, self.best_state = LoopState(), None
        self.ema = [p.detach().clone() for p in self.params] if cfg.ema else None
        self.out = ensure_dir(out_dir) if out_dir is not None else None
        if self.out is not None and self.rank == 0:
            for name in (STATE_FILE, "history.json"):
                remove_stale_temps(self.out, name)  # left by a killed run; never read
        if self.out is not None and (self.out / STATE_FILE).is_file():
            self.st, self.best_state, extra = load_state(self.out, disc, self.opt, cfg)
            if self.noise is not None and "noise_offsets" in extra:
                self.noise.offsets.copy_(extra["noise_offsets"])
            if self.ema is not None:
                _assign(self.ema, [extra[f"ema.{i}"] for i in range(len(self.ema))])
        n_stats = min(256, len(self.va))
        self.stats_idx = self.va[:n_stats]

    def _split(self) -> tuple[Tensor, Tensor]:
        cfg, n = self.cfg, self.teacher.num_samples
        if self.val_teacher is not self.teacher:  # validation priors come from their own teacher set
            m = self.val_teacher.num_samples
            tr = torch.as_tensor(cfg.train_indices if cfg.train_indices is not None else range(n), dtype=torch.long)
            va = torch.as_tensor(cfg.val_indices if cfg.val_indices is not None else range(m), dtype=torch.long)
            if (len(tr) and int(tr.max()) >= n) or (len(va) and int(va.max()) >= m) or len(tr) == 0:
                raise InputError(f"train_indices must lie in 0..{n - 1} (non-empty) and val_indices in 0..{m - 1}")
            return tr, va
        if cfg.train_indices is not None:
            tr = torch.as_tensor(cfg.train_indices, dtype=torch.long)
            va = torch.as_tensor(cfg.val_indices if cfg.val_indices is not None else [], dtype=torch.long)
            for name, ix in (("train_indices", tr), ("val_indices", va)):
                if len(ix) and (int(ix.min()) < 0 or int(ix.max()) >= n):
                    raise InputError(f"TrainConfig.{name} must lie in 0..{n - 1} (the teacher set has {n} samples)")
            if len(tr) == 0:
                raise InputError("TrainConfig.train_indices is empty")
        elif self.oracle:  # the oracle is fitted and judged on the same priors
            tr = va = torch.arange(n)
        else:
            tr, va = split_indices(n, cfg.val_fraction, cfg.seed)
        if self.oracle and int(tr.max()) >= self.disc.num_samples:
            raise InputError(f"oracle has {self.disc.num_samples} per-sample schedules but the teacher set has {n} samples")
        return tr, va

    def _noise_ball(self) -> NoiseBall | None:
        cfg = self.cfg
        if cfg.noise_radius <= 0:
            return None
        if self.world > 1:
            raise InputError("LD3's learnable noise (noise_radius > 0) runs in a single process; drop it or run without torchrun")
        lr = cfg.noise_lr or 12.0 / self.disc.steps
        return NoiseBall(self.teacher.num_samples, tuple(self.teacher.config.data_shape), cfg.noise_radius, lr,
                         self.teacher.config.prior_std, self.dtype, self.device)

    # -- the pieces of one iteration
    def lr(self) -> float:
        return self.cfg.lr * self.st.lr_scale * lr_factor(self.cfg, self.st.iteration)

    def _per_sample_loss(self, xT: Tensor, c: Cond, idx: Tensor, x0: Tensor,
                         update: Callable[[Tensor], None] | None = None) -> Tensor:
        custom = getattr(self.disc, "train_loss", None)
        if custom is not None:  # AMED / EPD: their own distillation loss (AMED steps the optimiser per step: `update`)
            return custom(self.den, xT, c, x0, self.loss_fn, checkpoint=self.cfg.grad_checkpoint,
                          index=(str(self.teacher.path), idx) if self.noise is None else None, update=update)
        first = self.disc.first_output(self.den, xT, c)  # through self.model below, so DDP sees phi's forward
        s = self.model(xT, c, idx) if first is None else self.model(xT, c, idx, denoised=first)
        x = sample(self.den, xT, s.times, solver=self.disc.solver, shift=s.shift, scale=s.scale, cond=c,
                   afs=self.disc.afs, checkpoint=self.cfg.grad_checkpoint, first_denoised=first)
        return self.loss_fn(x, x0)

    def _apply(self, loss: Tensor) -> None:
        """Backward pass, clipping and one optimiser step (and the moving average) for a scalar loss."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip and not self.oracle:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        if self.ema is not None:
            with torch.no_grad():
                for e, p in zip(self.ema, self.params):
                    e.lerp_(p.detach(), 1.0 - self.cfg.ema)

    def step(self, b: Tensor) -> float:
        """One optimisation step on the global batch of sample indices `b` (one per solver step for methods whose
        reference updates step by step, e.g. AMED); returns its mean loss."""
        for g in self.opt.param_groups:
            g["lr"] = self.lr()
        local = b.tensor_split(self.world)[self.rank] if self.world > 1 else b
        idx, xT, c, x0 = self.teacher.batch(local, self.dtype, self.device)
        idx = idx.to(self.device)
        base, off = xT, None
        if self.noise is not None:
            xT, off = self.noise.perturb(idx, xT)
        self.disc.train()
        # DDP averages gradients over ranks, so each rank scales by world / global count: the average is then the mean
        # over the global batch even when the slices are unequal; the oracle's per-sample losses are summed instead
        def scalar(per: Tensor) -> Tensor:
            return per.sum() * self.world / len(b) if not self.oracle else per.sum() * self.world

        if getattr(self.disc, "stepwise_updates", False):
            per = self._per_sample_loss(xT, c, idx, x0, update=lambda p: self._apply(scalar(p)))
        else:
            per = self._per_sample_loss(xT, c, idx, x0)
            self._apply(scalar(per))
        if self.noise is not None:
            def resolve(x: Tensor) -> Tensor:
                with torch.no_grad():
                    return self._per_sample_loss(x, c, idx, x0)
            self.noise.update(idx, base, off, per, resolve)
        tot = per.detach().sum().double().reshape(1)
        if self.world > 1:
            torch.distributed.all_reduce(tot)
        return float(tot) / len(b)  # mean over the global batch, identical on every rank

    @contextlib.contextmanager
    def averaged(self) -> Iterator[None]:
        """Inside: the parameters hold their moving average (when TrainConfig.ema is on)."""
        if self.ema is None:
            yield
            return
        raw = [p.detach().clone() for p in self.params]
        _assign(self.params, self.ema)
        try:
            yield
        finally:
            _assign(self.params, raw)

    def validate(self) -> dict[str, Any]:
        self.disc.eval()
        v = evaluate_loss(self.disc, self.den, self.val_teacher, self.va, self.loss_fn, max(self.cfg.batch_size, 256),
                          self.device, self.dtype)
        idx, xT, c, _ = self.val_teacher.batch(self.stats_idx, self.dtype, self.device)
        return {"val": v, **schedule_stats(self.disc, self.den, xT, c, idx.to(self.device))}

    def _after_validation(self, v: float) -> None:
        """Best-checkpoint keeping, plateau learning-rate cuts and the patience stop."""
        cfg, st = self.cfg, self.st
        if v < st.best_val:
            improved = not math.isfinite(st.best_val) or v < st.best_val * (1 - cfg.min_delta)
            st.best_val, st.best_iter = v, st.iteration
            self.best_state = {k: t.detach().clone() for k, t in self.disc.state_dict().items()}
            st.since_best = 0 if improved else st.since_best + 1
        else:
            st.since_best += 1
        if cfg.lr_schedule == "plateau" and st.since_best and st.since_best % cfg.plateau_patience == 0:
            st.lr_scale *= cfg.plateau_factor
        if cfg.patience and st.since_best >= cfg.patience:
            st.stop_reason = "patience"

    def checkpoint(self) -> None:
        if self.out is None or self.rank != 0:
            return
        extra = {"noise_offsets": self.noise.offsets} if self.noise is not None else {}
        extra.update({f"ema.{i}": e for i, e in enumerate(self.ema or [])})
        save_state(self.out, self.disc, self.opt, self.cfg, self.st, self.best_state, extra)
        atomic_write_json(self.out / "history.json", {
            "iteration": self.st.iteration, "world_size": self.world, "history": self.st.history, "best_val": self.st.best_val,
            "best_iter": self.st.best_iter, "stop_reason": self.st.stop_reason, "seconds": round(self.st.seconds, 2)})

    def _stop_requested(self, intr: DeferredInterrupt) -> bool:
        if self.world == 1:
            return intr.flag
        f = torch.tensor([1.0 if intr.flag else 0.0])
        torch.distributed.all_reduce(f, op=torch.distributed.ReduceOp.MAX)  # every rank stops at the same iteration
        return bool(f.item())

    def finished(self) -> bool:
        st = self.st
        if st.stop_reason == "cap" and self.cfg.iterations > st.iteration:
            st.stop_reason = None  # a larger cap extends a run that stopped at the old one
        return st.stop_reason is not None

    def result(self, reused: bool = False) -> TrainResult:
        st = self.st
        vals = [r["val"] for r in st.history if "val" in r]
        return TrainResult(history=st.history, best_val=st.best_val, best_iter=st.best_iter, seconds=st.seconds,
                           iterations=st.iteration, stop_reason=st.stop_reason, reused=reused,
                           final_val=vals[-1] if vals else math.inf)

    def _finalize(self, save: bool = True) -> None:
        if self.cfg.keep == "last":  # fixed-budget references keep the final weights (their moving average with EMA)
            if self.ema is not None:
                _assign(self.params, self.ema)
        elif self.best_state is not None:
            self.disc.load_state_dict(self.best_state)  # keep the best-validation parameters
        elif self.ema is not None:  # no validation set: the result is the final average
            _assign(self.params, self.ema)
        st = self.st
        self.disc.extra.update({"train": {"iterations": st.iteration, "best_val": st.best_val, "best_iter": st.best_iter,
                                          "seconds": round(st.seconds, 2), "loss": self.cfg.loss, "stop_reason": st.stop_reason,
                                          "keep": self.cfg.keep}})
        if save and self.out is not None and self.rank == 0:
            self.disc.save(self.out / "best")

    def run(self, progress: bool = True, callback: Callable[[int, float], None] | None = None,
            stop_at: int | None = None) -> TrainResult:
        """Train until the patience rule or the iteration cap stops the run (or `stop_at`, or Ctrl-C); the output
        folder is locked meanwhile, so a second process cannot write into it."""
        from ..io import FolderLock

        lock = FolderLock(self.out, "training run") if self.out is not None and self.rank == 0 else contextlib.nullcontext()
        with lock:
            return self._run(progress, callback, stop_at)

    def _run(self, progress: bool, callback: Callable[[int, float], None] | None, stop_at: int | None) -> TrainResult:
        if self.finished():  # nothing to train: keep best/ as it is unless it went missing
            self._finalize(save=self.out is not None and not (self.out / "best" / "config.json").is_file())
            return self.result(reused=True)
        cfg, st = self.cfg, self.st
        bar = None
        if progress and self.rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.iterations, initial=st.iteration, desc=f"train {self.disc.name} (N={self.disc.steps})", unit="it")
        per_epoch = max(1, math.ceil(len(self.tr) / cfg.batch_size))
        if st.iteration == 0 and not st.history and len(self.va):  # the start is a candidate too: never end worse
            rec = {"iteration": 0, **self.validate()}
            st.best_val, st.best_iter = rec["val"], 0
            self.best_state = {k: t.detach().clone() for k, t in self.disc.state_dict().items()}
            st.history.append(rec)
        clean, t0, intr = True, time.time(), DeferredInterrupt(hard_on_second=self.world == 1)
        try:
            intr.__enter__()
            while st.stop_reason is None and st.iteration < cfg.iterations and (stop_at is None or st.iteration < stop_at):
                epoch, pos = divmod(st.iteration, per_epoch)
                for b in list(iter_batches(self.tr, cfg.batch_size, cfg.seed, epoch))[pos:]:
                    if st.stop_reason is not None or st.iteration >= cfg.iterations or (stop_at is not None and st.iteration >= stop_at):
                        break
                    if self._stop_requested(intr):
                        raise KeyboardInterrupt
                    clean = False  # an update is half applied until the bookkeeping below is done
                    lv = self.step(b)
                    st.iteration += 1
                    rec: dict[str, Any] = {"iteration": st.iteration, "loss": lv, "lr": self.opt.param_groups[0]["lr"]}
                    if len(self.va) and (st.iteration % cfg.val_every == 0 or st.iteration == cfg.iterations):
                        with self.averaged():  # best_state then holds the averaged weights too
                            rec.update(self.validate())
                            self._after_validation(rec["val"])
                    if st.iteration >= cfg.iterations and st.stop_reason is None:
                        st.stop_reason = "cap"
                    st.history.append(rec)
                    st.seconds += time.time() - t0
                    t0 = time.time()
                    clean = True
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{lv:.4g}", best_val=f"{st.best_val:.4g}")
                    if callback is not None:
                        callback(st.iteration, lv)
                    if st.iteration % cfg.ckpt_every == 0:
                        self.checkpoint()
        except KeyboardInterrupt:
            if clean:  # at an iteration boundary: save exactly where we stopped
                self.checkpoint()
            raise
        finally:
            intr.__exit__()
            if bar is not None:
                bar.close()
        self.checkpoint()
        if st.stop_reason is not None:
            self._finalize()
        if self.world > 1:
            torch.distributed.barrier()  # no rank tears the process group down while rank 0 is still saving
        return self.result()


def train_discretizer(disc: Discretizer, denoiser: Denoiser, teacher: TeacherSet, cfg: TrainConfig | None = None, *,
                      out_dir: str | Path | None = None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                      progress: bool = True, loss_fn: LossFn | None = None, callback: Callable[[int, float], None] | None = None,
                      stop_at: int | None = None, val_teacher: TeacherSet | None = None) -> TrainResult:
    """Train `disc` so that few-step samples match the teacher endpoints (paper eq. 8, Algorithm 1).

    With `out_dir`, the run checkpoints atomically every `ckpt_every` iterations and on Ctrl-C, resumes from
    `out_dir/train_state.safetensors`, and saves the best-validation discretization to `out_dir/best`; a finished
    run is reused (`TrainResult.reused`), and a larger `iterations` cap extends a run that stopped at the old cap.
    Under torch.distributed each rank takes an equal slice of every global batch (DDP averages gradients).
    `val_teacher`: validate on the priors of another teacher set (a separate validation split).
    """
    run = TrainRun(disc, denoiser, teacher, cfg, out_dir=out_dir, device=device, dtype=dtype, loss_fn=loss_fn,
                   val_teacher=val_teacher)
    return run.run(progress=progress, callback=callback, stop_at=stop_at)
