"""Teacher data (paper Algorithm 1): tuples (c, x_T, x0*) with x0* from a many-step teacher solver.

Only a generator seed per sample is stored, never the noise: x_T is regenerated exactly from it on any device.
Endpoints x0* are written in shards of `shard_size` samples (safetensors, atomic), so generation resumes after
an interruption and can be split across torch.distributed ranks (shard k is made by rank k % world_size); the
result is identical to a single-process run with the same seeds.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .denoiser import Cond, Denoiser
from .errors import InputError, ModelOutputError
from .io import atomic_write_json, check_tensors, ensure_dir, load_json, load_tensors, remove_stale_temps, save_tensors
from .priors import (SEEDING, CondSpec, check_seed, class_cond, class_labels, cond_to, guidance_scales, index_cond, prior_noise,
                     prior_std, table_rows)
from .exact_ode import exact_ode
from .solvers import SOLVERS, sample

EXACT = "exact"  # adaptive DOP853 on the probability-flow ODE (`exact_ode.exact_ode`; the times give only its endpoints)
TEACHER_SOLVERS = SOLVERS + (EXACT,)

MANIFEST = "manifest.json"
FORMAT = "indis-teacher"


@dataclass
class TeacherConfig:
    """Everything that defines a teacher set; stored in the manifest and checked on resume."""

    num_samples: int
    data_shape: list[int]
    schedule: dict[str, Any]
    seed: int = 0
    solver: str = "ipndm"
    steps: int = 30
    times: list[float] = field(default_factory=list)
    afs: bool = False
    shard_size: int = 1000
    cond: dict[str, Any] = field(default_factory=lambda: {"kind": "none"})
    model: str = ""
    fingerprint: list[float] = field(default_factory=list)
    prior_std: float = 1.0
    dtype: str = "float32"
    seeding: dict[str, Any] = field(default_factory=lambda: dict(SEEDING))


def _check_seeding(raw: Mapping[str, Any], where: Path) -> None:
    """Refuse a teacher set whose x_T were drawn with another seeding scheme: its endpoints would be paired with
    priors they were not computed from."""
    got = raw.get("seeding") if isinstance(raw, Mapping) else None
    if got != SEEDING:
        what = "the old seeding scheme (version 1, torch seeds base*2^32+index, which collide across base seeds)" \
            if got is None else f"seeding scheme {got}"
        raise InputError(f"teacher set '{where}' was written with {what}; this indis draws x_T with {SEEDING['scheme']} "
                         f"version {SEEDING['version']}, so its endpoints would not match their priors; delete the folder "
                         "and generate it again with `indis teacher`")


def _teacher_config(raw: Any, where: Path) -> TeacherConfig:
    """Build a TeacherConfig from a manifest's "config", naming the file and the field that is wrong."""
    import dataclasses

    if not isinstance(raw, Mapping):
        raise InputError(f"'{where}' has no valid \"config\" object; delete the folder and regenerate it")
    fields = {f.name: f for f in dataclasses.fields(TeacherConfig)}
    unknown = sorted(set(raw) - set(fields))
    missing = sorted(k for k, f in fields.items() if k not in raw and f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
    if unknown or missing:
        raise InputError(f"'{where}': config has {'unknown field(s) ' + str(unknown) if unknown else ''}"
                         f"{' and ' if unknown and missing else ''}{'missing field(s) ' + str(missing) if missing else ''}; "
                         "delete the folder and regenerate it with `indis teacher`")
    types = {"num_samples": int, "seed": int, "steps": int, "shard_size": int, "data_shape": list, "schedule": dict,
             "times": list, "cond": dict, "fingerprint": list, "solver": str, "model": str, "dtype": str, "afs": bool,
             "prior_std": (int, float)}
    for k, t in types.items():
        if k in raw and (not isinstance(raw[k], t) or (t is int and isinstance(raw[k], bool))):
            raise InputError(f"'{where}': field {k!r} must be {getattr(t, '__name__', 'a number')}, got {raw[k]!r}; "
                             "delete the folder and regenerate it with `indis teacher`")
    cfg = TeacherConfig(**raw)
    if cfg.num_samples < 1 or cfg.shard_size < 1 or not cfg.data_shape or any(not isinstance(v, int) or v < 1 for v in cfg.data_shape):
        raise InputError(f"'{where}': num_samples, shard_size and data_shape must be positive; delete the folder and regenerate it")
    if not math.isfinite(cfg.prior_std) or cfg.prior_std <= 0:
        raise InputError(f"'{where}': prior_std must be a positive finite number, got {cfg.prior_std}")
    check_seed(cfg.seed, f"'{where}' field 'seed'")
    return cfg


def model_fingerprint(denoiser: Denoiser, data_shape: Sequence[int], cond: Cond = None, device: str | torch.device = "cpu") -> list[float]:
    """A few output statistics of the model on a fixed probe input, to tell teacher sets of different models apart."""
    g = torch.Generator().manual_seed(12345)
    x = torch.randn(2, *data_shape, generator=g).to(device)
    s = denoiser.schedule
    t = torch.full((2,), float(s.from_edm_sigma(torch.tensor(1.0, dtype=torch.float64))), device=device)
    with torch.no_grad():
        x0, _ = denoiser(x, t, cond)
    x0 = x0.double().cpu()
    return [float(x0.mean()), float(x0.std()), float(x0.flatten()[0]), float(x0.flatten()[-1])]


def fingerprints_match(a: Sequence[float], b: Sequence[float], rtol: float = 1e-3, atol: float = 1e-4) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= atol + rtol * abs(y) for x, y in zip(a, b))


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class TeacherSet:
    """A generated teacher set on disk: regenerates x_T and cond, serves x0* by sample index."""

    def __init__(self, path: str | Path, cond_table: Cond = None):
        self.path = Path(path)
        if not (self.path / MANIFEST).is_file():
            raise InputError(f"'{self.path}' is not an indis teacher set (no {MANIFEST}); make one with `indis teacher --out {self.path}`")
        raw = load_json(self.path / MANIFEST)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise InputError(f"'{self.path}' is not an indis teacher set (no valid {MANIFEST})")
        _check_seeding(raw.get("config", {}), self.path)
        self.config = _teacher_config(raw.get("config"), self.path / MANIFEST)
        self.cond_spec = CondSpec(**self.config.cond)
        self.cond_table = cond_table
        if self.cond_spec.kind == "table" and cond_table is None:
            table_file = self.path / "cond_table.safetensors"
            if table_file.is_file():
                t, meta = load_tensors(table_file)
                self.cond_table = t["cond"] if set(t) == {"cond"} else {k.removeprefix("cond."): v for k, v in t.items()}
        self._x0: Tensor | None = None
        self._memo: dict[str, tuple[Tensor, Tensor]] = {}  # name -> (values [M, ...], filled [M])

    @property
    def num_samples(self) -> int:
        return self.config.num_samples

    @property
    def num_shards(self) -> int:
        return math.ceil(self.config.num_samples / self.config.shard_size)

    def shard_path(self, k: int) -> Path:
        return self.path / f"shard-{k:05d}.safetensors"

    def missing_shards(self) -> list[int]:
        return [k for k in range(self.num_shards) if not self.shard_path(k).is_file()]

    def is_complete(self) -> bool:
        return not self.missing_shards()

    def x0(self) -> Tensor:
        """All teacher endpoints [M, ...] in index order (loaded once)."""
        if self._x0 is None:
            missing = self.missing_shards()
            if missing:
                raise InputError(f"teacher set '{self.path}' is incomplete ({len(missing)} of {self.num_shards} shards missing); rerun `indis teacher` with the same arguments to resume")
            parts = []
            for k in range(self.num_shards):
                try:
                    t, _ = load_tensors(self.shard_path(k))
                except InputError as exc:
                    raise InputError(f"shard '{self.shard_path(k)}' is corrupt or truncated ({str(exc.__cause__ or exc).splitlines()[0]}); "
                                     "delete that file and rerun `indis teacher` with the same arguments to regenerate it") from exc
                lo = k * self.config.shard_size
                expect = torch.arange(lo, min(lo + self.config.shard_size, self.num_samples))
                if set(t) != {"index", "x0"} or not torch.equal(t["index"], expect):
                    raise InputError(f"shard '{self.shard_path(k)}' holds the wrong sample indices or tensors; delete it and resume generation")
                if list(t["x0"].shape) != [len(expect), *self.config.data_shape] or not t["x0"].is_floating_point():
                    raise InputError(f"shard '{self.shard_path(k)}' holds endpoints of shape {list(t['x0'].shape)}, expected "
                                     f"{[len(expect), *self.config.data_shape]}; delete it and resume generation")
                if not bool(torch.isfinite(t["x0"]).all()):
                    raise InputError(f"shard '{self.shard_path(k)}' contains NaN or Inf teacher endpoints (a damaged file, or a "
                                     "model that diverged while it was made); delete it and rerun `indis teacher` to regenerate it")
                parts.append(t["x0"])
            self._x0 = torch.cat(parts)
        return self._x0

    def _remembered(self, name: str, idx: Tensor, make: Callable[[Tensor], Tensor]) -> Tensor:
        """make(idx) for sample indices inside the set, each row made once and then served from memory (a training
        run asks for every prior hundreds of times; rebuilding its seeded stream each time cost 20-30% of a step);
        indices outside the set are made afresh. The memory is at most that of x0 (held whole by `x0`)."""
        idx = idx.cpu()
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= self.num_samples:
            return make(idx)
        memo = self._memo.get(name)
        todo = idx.unique() if memo is None else idx[~memo[1][idx]].unique()
        if todo.numel():
            made = make(todo)
            if memo is None:
                memo = self._memo[name] = (made.new_empty((self.num_samples, *made.shape[1:])),
                                           torch.zeros(self.num_samples, dtype=torch.bool))
            memo[0][todo] = made
            memo[1][todo] = True
        return memo[0][idx]  # advanced indexing: a copy, so callers may modify it

    def x_T(self, indices: Sequence[int] | Tensor, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Tensor:
        """x_T of the given samples, regenerated from the set's seed (float32 values, as when the set was made)."""
        std, shape = self.config.prior_std, self.config.data_shape
        x = self._remembered("x_T", torch.as_tensor(indices, dtype=torch.long),
                             lambda i: prior_noise(i, self.config.seed, shape, std))
        return x.to(device=device, dtype=dtype)

    def cond(self, indices: Sequence[int] | Tensor, device: str | torch.device = "cpu") -> Cond:
        idx = torch.as_tensor(indices, dtype=torch.long)
        if self.cond_spec.kind == "class":
            seed, spec = self.config.seed, self.cond_spec
            labels = self._remembered("class", idx, lambda i: class_labels(i, seed, spec.num_classes))
            if spec.guidance is None:
                return cond_to(labels, device)
            scales = self._remembered("guidance", idx, lambda i: guidance_scales(i, seed, *spec.guidance))
            return cond_to({"class": labels, "guidance_scale": scales}, device)
        if self.cond_spec.kind == "table":
            if self.cond_table is None:
                raise InputError(f"teacher set '{self.path}' uses a condition table; pass cond_table=")
            c = index_cond(self.cond_table, idx % self.cond_spec.table_size)
            return cond_to(c, device)
        return None

    def batch(self, indices: Sequence[int] | Tensor, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> tuple[Tensor, Tensor, Cond, Tensor]:
        """(index, x_T, cond, x0*) for the given sample indices."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return idx, self.x_T(idx, dtype, device), self.cond(idx, device), self.x0()[idx].to(device=device, dtype=dtype)

    def check_model(self, denoiser: Denoiser, data_shape: Sequence[int], model: str = "", device: str | torch.device = "cpu",
                    cond_kind: str | None = None) -> None:
        """Refuse to train on a teacher set that another model produced: data shape, schedule, condition kind, the
        model spec for shipped models (zoo:, toy:; one network can serve several of them) and the fingerprint."""
        if list(data_shape) != list(self.config.data_shape):
            raise InputError(f"teacher set '{self.path}' was made for data of shape {self.config.data_shape}, not {list(data_shape)}; generate a teacher set with this model")
        if denoiser.schedule.config()["type"] != self.config.schedule.get("type"):
            raise InputError(f"teacher set '{self.path}' was made with the {self.config.schedule.get('type')} schedule, not {denoiser.schedule.name}; generate a teacher set with this model")
        made_by = self.config.model
        if cond_kind is not None and cond_kind != self.cond_spec.kind:
            raise InputError(f"teacher set '{self.path}' was made by {made_by or 'a model'} with "
                             f"{_cond_words(self.cond_spec.kind)}, but {model or 'this model'} has {_cond_words(cond_kind)}; "
                             "generate a teacher set with this model")
        shipped = ("zoo:", "toy:")
        if model and made_by and model != made_by and (model.startswith(shipped) or made_by.startswith(shipped)):
            raise InputError(f"teacher set '{self.path}' was made by {made_by}, not {model}; generate a teacher set with "
                             "this model")
        cond = self.cond(torch.arange(2), device) if self.cond_spec.kind != "none" else None
        fp = model_fingerprint(denoiser, data_shape, cond, device)
        if self.config.fingerprint and not fingerprints_match(fp, self.config.fingerprint):
            who = f" ({made_by})" if made_by else ""
            raise InputError(f"teacher set '{self.path}' was generated by a different model{who} "
                             "(or another --guidance scale); generate a teacher set with this model")


def _cond_words(kind: str) -> str:
    return {"none": "no condition", "class": "class labels", "table": "a prompt table"}.get(kind, f"a {kind} condition")


MAX_SAMPLES = 100_000_000  # teacher pairs in one set
MAX_SHARDS = 100_000


def _table_spec(cond: CondSpec | None, cond_table: Cond) -> CondSpec:
    cond = cond or CondSpec()
    if cond.kind != "table":
        return cond
    if cond_table is None:
        raise InputError("a table condition needs cond_table (e.g. prompt embeddings)")
    if isinstance(cond_table, Mapping) and not cond_table:
        raise InputError("the condition table (prompt list) is empty; give at least one prompt")
    first = next(iter(cond_table.values())) if isinstance(cond_table, Mapping) else cond_table
    if first.dim() == 0 or table_rows(cond_table) < 1:
        raise InputError("the condition table (prompt list) is empty; give at least one prompt (one row per condition)")
    return CondSpec("table", table_size=table_rows(cond_table))


def _check_sizes(num_samples: Any, shard_size: Any, batch_size: Any, solver: str) -> None:
    for name, v, hi in (("num_samples", num_samples, MAX_SAMPLES), ("shard_size", shard_size, MAX_SAMPLES),
                        ("batch_size", batch_size, MAX_SAMPLES)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
            raise InputError(f"{name} must be an integer between 1 and {hi}, got {v!r}")
    if math.ceil(num_samples / shard_size) > MAX_SHARDS:
        raise InputError(f"{num_samples} samples in shards of {shard_size} make more than {MAX_SHARDS} shard files; "
                         "raise shard_size (--shard-size)")
    if solver not in TEACHER_SOLVERS:
        raise InputError(f"unknown teacher solver {solver!r}; choose one of {', '.join(TEACHER_SOLVERS)}")


def _prepare(out: Path, cfg: TeacherConfig, cond: CondSpec, cond_table: Cond, rank: int) -> None:
    """Write a new manifest, check an existing one, or extend it to more samples (a larger --num: the last, partial
    shard is made again with the new size, every complete shard is kept)."""
    manifest = out / MANIFEST
    if manifest.is_file():
        old = load_json(manifest)
        oldcfg = dict(old.get("config", {})) if isinstance(old, dict) else {}
        _check_seeding(oldcfg, out)
        newcfg = asdict(cfg)
        diffs = [k for k in newcfg if k not in ("fingerprint", "num_samples") and oldcfg.get(k) != newcfg[k]]
        if diffs or not fingerprints_match(cfg.fingerprint, oldcfg.get("fingerprint", [])):
            what = ", ".join(diffs) if diffs else "the model (its outputs differ)"
            raise InputError(f"'{out}' already holds a teacher set with different settings ({what}); use another --out folder or the same settings to resume")
        old_n = oldcfg.get("num_samples")
        if isinstance(old_n, int) and cfg.num_samples < old_n:
            raise InputError(f"'{out}' already holds {old_n} teacher pairs; asking for {cfg.num_samples} would drop some: "
                             "use the set as it is (train with fewer via train_indices) or another --out folder")
        if isinstance(old_n, int) and cfg.num_samples > old_n and rank == 0:
            last = (old_n - 1) // cfg.shard_size
            if old_n % cfg.shard_size:
                (out / f"shard-{last:05d}.safetensors").unlink(missing_ok=True)
            atomic_write_json(manifest, {"format": FORMAT, "version": 1, "config": asdict(cfg)})
    elif rank == 0:
        if cond.kind == "table":
            tensors = {"cond": cond_table} if not isinstance(cond_table, Mapping) else {f"cond.{k}": v for k, v in cond_table.items()}
            save_tensors(out / "cond_table.safetensors", tensors)
        atomic_write_json(manifest, {"format": FORMAT, "version": 1, "config": asdict(cfg)})
    for k in range(math.ceil(cfg.num_samples / cfg.shard_size)):  # every rank checks (read-only): all agree
        f = out / f"shard-{k:05d}.safetensors"
        if f.is_file():
            try:
                check_tensors(f)
            except InputError as exc:
                raise InputError(f"shard '{f}' is corrupt or truncated ({str(exc.__cause__ or exc).splitlines()[0]}); delete that "
                                 "file and rerun `indis teacher` with the same arguments to regenerate it") from exc
    if rank == 0:  # temp files of a killed run (never counted as shards); other ranks have not started writing
        for name in ("shard-*.safetensors", MANIFEST, "cond_table.safetensors"):
            remove_stale_temps(out, name)


def _make_shards(denoiser: Denoiser, ts: TeacherSet, todo: list[int], times: Tensor, *, batch_size: int, device: Any,
                 dtype: torch.dtype, progress: bool, rank: int, world: int, stop_after_shards: int | None) -> None:
    c = ts.config
    total = sum(min(c.shard_size, c.num_samples - k * c.shard_size) for k in todo)
    bar = None
    if progress and total:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"teacher ({c.solver}, {c.steps} steps)" + (f" rank {rank}" if world > 1 else ""), unit="sample")
    try:
        for done, k in enumerate(todo, 1):
            lo, hi = k * c.shard_size, min((k + 1) * c.shard_size, c.num_samples)
            xs = []
            for b0 in range(lo, hi, batch_size):
                idx = torch.arange(b0, min(b0 + batch_size, hi))
                with torch.no_grad():
                    if c.solver == EXACT:
                        x0 = exact_ode(denoiser, ts.x_T(idx, torch.float64, device), float(times[0]), float(times[-1]),
                                       ts.cond(idx, device))
                    else:
                        x0 = sample(denoiser, ts.x_T(idx, dtype, device), times, solver=c.solver, cond=ts.cond(idx, device),
                                    afs=c.afs)
                    xs.append(x0.float().cpu())
                if bar is not None:
                    bar.update(len(idx))
            save_tensors(ts.shard_path(k), {"index": torch.arange(lo, hi), "x0": torch.cat(xs)}, {"shard": str(k)})
            if stop_after_shards is not None and done >= stop_after_shards:
                break
    finally:
        if bar is not None:
            bar.close()


def generate_teacher(
    denoiser: Denoiser,
    out_dir: str | Path,
    data_shape: Sequence[int],
    num_samples: int,
    *,
    times: Tensor | Sequence[float] | None = None,
    solver: str = "ipndm",
    steps: int = 30,
    afs: bool = False,
    seed: int = 0,
    shard_size: int = 1000,
    batch_size: int = 256,
    cond: CondSpec | None = None,
    cond_table: Cond = None,
    model: str = "",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    stop_after_shards: int | None = None,
) -> TeacherSet:
    """Generate (or resume, or extend to more samples) a teacher set in `out_dir`. Default teacher: 30-step iPNDM on
    EDM rho=7 times. Everything is validated before anything is written; the folder is locked while it is written."""
    from .io import FolderLock

    seed = check_seed(seed)
    _check_sizes(num_samples, shard_size, batch_size, solver)
    cond = _table_spec(cond, cond_table)
    sched = denoiser.schedule
    if times is None:
        from .discretizations.heuristics import heuristic

        times = heuristic("edm", steps, schedule=sched)
    times_t = torch.as_tensor(times, dtype=torch.float64)
    rank, world = _dist()
    cond_probe = None
    if cond.kind == "class":
        cond_probe = cond_to(class_cond(torch.arange(2), seed, cond), device)
    elif cond.kind == "table":
        cond_probe = cond_to(index_cond(cond_table, torch.arange(2)), device)
    cfg = TeacherConfig(
        num_samples=int(num_samples), data_shape=[int(s) for s in data_shape], schedule=sched.config(), seed=int(seed),
        solver=solver, steps=int(times_t.numel() - 1), times=times_t.tolist(), afs=bool(afs), shard_size=int(shard_size),
        cond=_cond_fields(cond), model=model, fingerprint=model_fingerprint(denoiser, data_shape, cond_probe, device),
        prior_std=prior_std(sched, float(times_t[0])), dtype=str(dtype).removeprefix("torch."),
    )
    if not all(math.isfinite(v) for v in cfg.fingerprint):
        raise ModelOutputError(f"the model{f' {model}' if model else ''} returns NaN or Inf on a probe input (sigma = 1); "
                               "check the model, its weights and its dtype before generating a teacher set")
    out = ensure_dir(out_dir)
    with FolderLock(out, "teacher job") if rank == 0 else contextlib.nullcontext():
        _prepare(out, cfg, cond, cond_table, rank)
        if world > 1:
            torch.distributed.barrier()
        ts = TeacherSet(out, cond_table=cond_table)
        todo = [k for k in ts.missing_shards() if k % world == rank]
        _make_shards(denoiser, ts, todo, times_t, batch_size=batch_size, device=device, dtype=dtype, progress=progress,
                     rank=rank, world=world, stop_after_shards=stop_after_shards)
        if world > 1:
            torch.distributed.barrier()
    return TeacherSet(out, cond_table=cond_table)


def _cond_fields(cond: CondSpec) -> dict[str, Any]:
    """The manifest's "cond" object; without a guidance range it is the one sets had before ranges existed, so
    those sets still resume and extend."""
    return {k: v for k, v in asdict(cond).items() if k != "guidance" or v is not None}


def teacher_info(ts: TeacherSet) -> dict[str, Any]:
    """The teacher settings a trained discretization records (model card, provenance)."""
    c = ts.config
    return {"path": str(ts.path), "solver": c.solver, "steps": c.steps, "num_samples": c.num_samples, "seed": c.seed,
            "model": c.model, "seeding": c.seeding}


def _batch_key(seed: int, epoch: int) -> int:
    """The generator seed of one epoch's shuffle. torch's CPU generator keeps only the low 32 bits of a seed, so keys of
    2^32 or more are hashed from (seed, epoch); smaller ones (seeds below ~42,900) keep the historical seed * 100,003 +
    epoch, so every cached and committed run keeps its batch order."""
    key = seed * 100_003 + epoch
    return key if 0 <= key < 2**32 else int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def iter_batches(indices: Tensor, batch_size: int, seed: int, epoch: int, shuffle: bool = True) -> Iterator[Tensor]:
    """Deterministic mini-batches of sample indices for one epoch (same order on resume)."""
    if shuffle:
        g = torch.Generator().manual_seed(_batch_key(seed, epoch))
        indices = indices[torch.randperm(len(indices), generator=g)]
    for i in range(0, len(indices), batch_size):
        yield indices[i : i + batch_size]
