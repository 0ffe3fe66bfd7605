"""One experiment layer for `indis demo` and `indis bench`: a model, three disjoint prior splits with their teacher
sets, and runs (a method at some steps, solver and AFS, with options) that are trained and sampled once, cached
under a hash of everything they depend on, and resumed after an interruption.

    exp = Experiment("runs/x", handle, ExperimentConfig(model="zoo:digits", seed=0, sizes={"train": 10000, ...}))
    ts = exp.teacher("train")                       # generated once (resumable shards)
    d, info = exp.train(spec, build, cfg, starts)   # trained once under runs/<method>-<hash>/
    x = exp.samples(spec, d, "test")                # sampled once, cached as safetensors

Splits draw their priors from distinct base seeds (`split_seed`), so no prior of one split appears in another.
Metrics, selection rules, tables and figures live with the callers (bench/demo), not here.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .discretizations.base import Discretizer, load_discretization
from .errors import InputError
from .io import atomic_write_json, ensure_dir, load_json, load_tensors, save_tensors
from .models import ModelHandle
from .discretizations.persist import model_info
from .priors import MAX_SEED, check_seed
from .teacher import MANIFEST, TeacherSet, generate_teacher, teacher_info
from .training import TrainConfig, train_with_starts

SPLITS = ("train", "val", "test")
_SPLIT_STREAM = {"train": 11, "val": 12, "test": 13}
ADOPTED = "adopted-from.txt"  # in a teacher folder copied from another experiment: where from


def split_seed(seed: int, split: str) -> int:
    """Base seed of the priors of `split` under experiment seed `seed` (a hash: distinct for every pair)."""
    if split not in _SPLIT_STREAM:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    state = np.random.SeedSequence([check_seed(seed), _SPLIT_STREAM[split]]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) % (MAX_SEED + 1)


def best_rate(lrs: Sequence[float], train: Callable[[float], tuple[Any, Any, dict[str, Any]]]
              ) -> tuple[Any, Any, dict[str, Any], dict[str, float]]:
    """train(lr) -> (spec, discretization, info) at each learning rate: the run with the lowest validation loss
    (info["best_val"]) and each rate's validation loss, keyed by the rate."""
    runs = [train(lr) for lr in lrs]
    sp, d, info = min(runs, key=lambda r: r[2]["best_val"])
    return sp, d, info, {f"{lr:g}": r[2]["best_val"] for lr, r in zip(lrs, runs)}


def settings_hash(obj: Any, n: int = 12) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


@dataclass
class ExperimentConfig:
    """What defines the data of an experiment (the teacher sets); runs add their own settings to the hash."""

    model: str
    seed: int = 0
    sizes: dict[str, int] = field(default_factory=lambda: {"train": 10_000, "val": 2_000, "test": 5_000})
    teacher_steps: int = 30
    teacher_solver: str = "ipndm"
    teacher_schedule: str = "edm"
    guidance: float | None = None
    dtype: str = "float32"

    def check(self) -> "ExperimentConfig":
        check_seed(self.seed, "seed")
        missing = [s for s in SPLITS if s not in self.sizes]
        if missing or any(int(self.sizes[s]) < 1 for s in SPLITS):
            raise InputError(f"experiment sizes need train, val and test >= 1, got {self.sizes}")
        return self


def teacher_folder(root: Path, cfg: ExperimentConfig, split: str) -> Path:
    """Folder of the teacher set of `split` in the experiment at `root` (keyed by its data settings and the split)."""
    return root / "teachers" / f"{split}-{settings_hash([asdict(cfg), split])}"


class Experiment:
    """Teacher sets of three disjoint prior splits and a cache of trained / sampled runs under `root`."""

    def __init__(self, root: str | Path, handle: ModelHandle, cfg: ExperimentConfig, *, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, progress: bool = True, log: Callable[[str], None] | None = None,
                 teacher_batch: int = 500, eval_batch: int = 500):
        self.root, self.h, self.cfg = ensure_dir(root), handle, cfg.check()
        self.device, self.dtype, self.progress = device, dtype, progress
        handle.denoiser.to(device)  # teachers, training and sampling all run where the priors are
        self.log = log or (lambda m: None)
        self.teacher_batch, self.eval_batch = teacher_batch, eval_batch
        self.key = settings_hash(asdict(cfg))
        self._teachers: dict[str, TeacherSet] = {}
        self._data: dict[str, tuple[Tensor, Tensor, Any, Tensor]] = {}

    # -- data ---------------------------------------------------------------------------------------------------
    def teacher_path(self, split: str) -> Path:
        """Folder of the teacher set of `split`."""
        return teacher_folder(self.root, self.cfg, split)

    def teacher(self, split: str) -> TeacherSet:
        """The teacher set of `split` (generated on first use; shards resume after an interruption). A set adopted
        from another experiment (`adopt_teachers`) that fails the resume checks is dropped and made afresh."""
        if split not in self._teachers:
            folder = self.teacher_path(split)
            t0 = time.time()
            try:
                self._teachers[split] = self._generate(split, folder)
            except InputError:
                if not (folder / ADOPTED).is_file():
                    raise
                self.log(f"teacher {split}: the adopted set does not match this model or its settings; made afresh")
                shutil.rmtree(folder)
                self._teachers[split] = self._generate(split, folder)
            self.log(f"teacher {split}: {self.cfg.sizes[split]} pairs ({time.time() - t0:.0f} s) -> {folder}")
        return self._teachers[split]

    def _generate(self, split: str, folder: Path) -> TeacherSet:
        from .discretizations.heuristics import heuristic

        c, n = self.cfg, int(self.cfg.sizes[split])
        times = heuristic(c.teacher_schedule, c.teacher_steps, self.h.schedule)
        return generate_teacher(
            self.h.denoiser, folder, self.h.data_shape, n, times=times, solver=c.teacher_solver, seed=split_seed(c.seed, split),
            shard_size=min(n, 2000), batch_size=self.teacher_batch, cond=self.h.cond_spec(), cond_table=self.h.cond_table,
            model=self.h.spec, device=self.device, dtype=self.dtype, progress=self.progress)

    def adopt_teachers(self, root: str | Path, cfg: ExperimentConfig) -> list[str]:
        """Copy in the complete teacher sets of the experiment (`root`, `cfg`) that differs from this one only in its
        model's name (a study's cells that share a model and priors, e.g. the same mixture at another NFE): the
        splits adopted. Only the manifest's model name is rewritten; the first use checks every other setting and the
        model's outputs against the copy as for any resumed set (see `teacher`)."""
        if asdict(cfg) != {**asdict(self.cfg), "model": cfg.model} or cfg.model == self.cfg.model:
            return []
        adopted = []
        for split in SPLITS:
            src, dst = teacher_folder(Path(root), cfg, split), self.teacher_path(split)
            # shards are written atomically: a complete set is safe to copy even while its maker is still running
            if dst.exists() or not (src / MANIFEST).is_file() or not TeacherSet(src).is_complete():
                continue
            tmp = dst.with_name(dst.name + ".adopting")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src, tmp)
            man = load_json(tmp / MANIFEST)
            atomic_write_json(tmp / MANIFEST, {**man, "config": {**man["config"], "model": self.h.spec}})
            (tmp / ADOPTED).write_text(str(src) + "\n")
            os.replace(tmp, dst)
            adopted.append(split)
        return adopted

    def data(self, split: str) -> tuple[Tensor, Tensor, Any, Tensor]:
        """(index, x_T, cond, teacher endpoint) of every prior of `split`, on the experiment's device."""
        if split not in self._data:
            ts = self.teacher(split)
            idx = torch.arange(ts.num_samples)
            _, xT, c, x0 = ts.batch(idx, self.dtype, self.device)
            self._data[split] = (idx, xT, c, x0)
        return self._data[split]

    # -- runs -----------------------------------------------------------------------------------------------------
    def run_path(self, spec: Mapping[str, Any]) -> Path:
        """Folder of one run (not created): named after its method, keyed by the data and every setting in `spec`."""
        name = str(spec.get("name", spec.get("method", "run")))
        return self.root / "runs" / f"{name}-{settings_hash([self.key, dict(spec)])}"

    def adopt(self, spec: Mapping[str, Any], legacy: list[Mapping[str, Any]]) -> None:
        """Move a finished or partial run stored under an older spelling of the same settings (`legacy`) to `spec`'s
        folder, so a change of spelling does not train again. Only when `spec`'s folder holds no work yet."""
        folder = self.run_path(spec)
        if any(p.name != "spec.json" for p in folder.glob("*")):
            return
        for old in map(self.run_path, legacy):
            if (old / "spec.json").is_file() and old != folder:
                if folder.exists():
                    shutil.rmtree(folder)
                os.replace(old, folder)
                atomic_write_json(folder / "spec.json", {"experiment": asdict(self.cfg), "spec": dict(spec)})
                self.log(f"{folder.name}: adopted {old.name} (same settings, older spelling)")
                return

    def run_dir(self, spec: Mapping[str, Any]) -> Path:
        """Folder of one run (created with its spec.json on first use)."""
        folder = self.run_path(spec)
        if not (folder / "spec.json").is_file():
            ensure_dir(folder)
            atomic_write_json(folder / "spec.json", {"experiment": asdict(self.cfg), "spec": dict(spec)})
        return folder

    def load(self, spec: Mapping[str, Any], *, steps: int | None = None) -> Discretizer | None:
        """The discretization a finished run saved, or None."""
        folder = self.run_dir(spec) / "disc"
        if not (folder / "config.json").is_file():
            return None
        return load_discretization(folder, steps=steps, data_shape=self.h.data_shape, schedule=self.h.schedule,
                                   map_location=self.device)

    def fixed(self, spec: Mapping[str, Any], build: Callable[[], Discretizer]) -> tuple[Discretizer, dict[str, Any]]:
        """A discretization that needs no training (heuristic, DMN, GITS), built once; its build time is recorded."""
        folder = self.run_dir(spec)
        d = self.load(spec)
        if d is None:
            t0 = time.time()
            d = build().to(self.device)
            info = {"seconds": round(time.time() - t0, 2)}
            d.save(folder / "disc")
            atomic_write_json(folder / "info.json", info)
        return d, load_json(folder / "info.json")

    def train(self, spec: Mapping[str, Any], build: Callable[[Any], Discretizer], cfg: TrainConfig, starts: Sequence[Any],
              *, probe_iterations: int = 100, teacher: str = "train", val: str = "val") -> tuple[Discretizer, dict[str, Any]]:
        """Train (or reuse) a learned discretization on `teacher` pairs with early stopping on `val` priors; the
        result is saved under the run's folder (`disc/`, `info.json`) and resumes after an interruption."""
        folder = self.run_dir(spec)
        if (folder / "info.json").is_file() and self.load(spec) is not None:
            return self.load(spec), load_json(folder / "info.json")
        ts, vs = self.teacher(teacher), self.teacher(val)
        d, r = train_with_starts(build, starts, self.h.denoiser, ts, cfg, probe_iterations=probe_iterations,
                                 out_dir=folder / "train", device=self.device, dtype=self.dtype, progress=self.progress,
                                 describe=str, val_teacher=vs)
        info = {"iterations": r.iterations, "seconds": round(r.seconds, 2), "best_val": r.best_val, "best_iter": r.best_iter,
                "final_val": r.final_val, "keep": cfg.keep, "stop_reason": r.stop_reason, "starts": r.starts, "lr": cfg.lr, "patience": cfg.patience,
                "val_every": cfg.val_every, "cap": cfg.iterations}
        d.extra.update({"model_info": model_info(self.h), "teacher_info": teacher_info(ts)})
        d.save(folder / "disc")
        atomic_write_json(folder / "info.json", info)
        return d, info

    def samples(self, spec: Mapping[str, Any], disc: Discretizer, split: str, *, limit: int | None = None) -> Tensor:
        """Endpoints of `disc` on the priors of `split` (the first `limit` of them), cached in the run's folder."""
        folder = self.run_dir(spec)
        _, xT, c, _ = self.data(split)
        n = xT.shape[0] if limit is None else min(limit, xT.shape[0])
        f = folder / f"samples-{split}-{n}.safetensors"
        if f.is_file():
            return load_tensors(f)[0]["x"].to(self.device)
        disc.eval()
        outs = []
        with torch.no_grad():
            for i in range(0, n, self.eval_batch):
                j = min(i + self.eval_batch, n)
                cc = None if c is None else _rows(c, slice(i, j))
                idx = torch.arange(i, j, device=xT.device)
                outs.append(disc.sample(self.h.denoiser, xT[i:j], cc, idx).detach())
        x = torch.cat(outs)
        save_tensors(f, {"x": x.float() if self.dtype != torch.float64 else x}, {"split": split})
        return x


def _rows(c: Any, sl: slice) -> Any:
    return {k: v[sl] for k, v in c.items()} if isinstance(c, Mapping) else c[sl]
