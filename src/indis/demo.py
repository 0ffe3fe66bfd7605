"""`indis demo`: the paper's synthetic study (section 4.1, figures 2 and 3) on the built-in tree distribution.

Data: the autoguidance tree-branch mixture (class 'A' by default; 'B', or 'AB' with the class as condition c),
flow matching with T=0.988, t0=0.002, exact float64 denoiser. Ground truth per prior x_T: a 100-step uniform
Euler solve (configurable). Methods at each NFE:

- ``uniform``, ``best-heuristic`` (lowest held-out MSE among logsnr / edm / quadratic / time_uniform /
  time_quadratic / shift, chosen per NFE),
- ``global`` (GOD: one learned schedule with INDIS's per-step shift and scale, trained on the training priors)
  and ``global-times-only`` (only the N-1 interior times, endpoints fixed: the literal LD3-style setting),
- ``instance-oracle`` (one schedule per prior, fitted and evaluated on the same subset of held-out priors),
- ``indis`` (phi(x_T, c) trained on the training priors, evaluated on held-out priors),
- ablations (at the NFEs in ``ablation_nfes``): INDIS without shift/scale, with a free last time, and the
  oracle/global pairs for the times-only (2-DOF at N=3), times + free last time and full-freedom settings.

Metrics on held-out priors: MSE to the ground-truth endpoint (mean over the 2 coordinates, averaged over
priors), KL(generated || ground truth) with the k-NN estimator of `indis.metrics.pointcloud.kl_knn` against an
equally large, independent ground-truth cloud (the training priors' endpoints: with each generated point's own
ground-truth partner in the reference the estimator is biased negative), and the exact W2 distance (POT) between
the generated and the ground-truth endpoints of the same held-out priors.

Everything expensive is cached under ``out_dir`` (teacher set, trained discretizations), so a rerun with the
same settings skips finished work, and an interrupted run resumes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from .discretizations import (Discretizer, FixedSchedule, GlobalSchedule, InstanceOracle, InstanceSchedule, heuristic,
                              load_discretization)
from .errors import InputError
from .io import atomic_write_json, atomic_write_text, ensure_dir, load_json
from .solvers import SOLVERS, solver_nfe

__all__ = ["DemoConfig", "run_demo", "PAPER"]

EXPERIMENT = "toy-tree"
DT = torch.float64
MAIN_METHODS = ("uniform", "best-heuristic", "global", "instance-oracle", "indis")
CANDIDATE_HEURISTICS = ("logsnr", "edm", "quadratic", "time_uniform", "time_quadratic", "shift")

# The paper's numbers (section 4.1): oracle vs global MSE at NFE 3, and phi's relative gains over global.
PAPER = {
    "oracle_mse_nfe3": 0.0122, "global_mse_nfe3": 0.0245, "oracle_gain_nfe3": 0.502,
    "kl_gain_mean": 0.2586, "w2_gain_mean": 0.2185, "kl_gain_nfe3_6": 0.4567, "w2_gain_nfe3_6": 0.2954,
}


@dataclass
class DemoConfig:
    """All settings of one demo run (stored in results.json under "settings")."""

    classes: str = "A"
    solver: str = "euler"
    nfes: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 9, 10)
    seed: int = 0
    num_train: int = 20000
    num_val: int = 300  # taken from the training priors, for best-checkpoint selection
    num_test: int = 3000
    teacher_solver: str = "euler"
    teacher_steps: int = 100
    # evaluation
    w2_points: int = 1500
    kl_k: int = 5
    heuristic_points: int = 1000  # held-out priors used to pick the best heuristic
    oracle_subset: int = 250  # held-out priors the oracle is fitted and judged on
    # freedoms (paper eq. 6): shift = b tanh(o/2) * step (relative), scale = 1 + b tanh(o/2)
    shift_bound: float = 0.5
    shift_mode: str = "relative"
    scale_bound: float = 0.2
    # training: GOD runs god_iters at every N; INDIS/oracle iterations are for N <= 4 and shrink as 4/N above
    # (never below a third), and INDIS's learning rate shrinks as 3/N above N=3
    batch_size: int = 64
    god_iters: int = 200
    god_lr: float = 0.2
    indis_iters: int = 500
    indis_lr: float = 5e-3
    oracle_iters: int = 80
    oracle_lr: float = 5e-2
    net: dict[str, Any] = field(default_factory=lambda: {"hidden": 128, "depth": 3, "fourier_features": 32, "fourier_scale": 2.0})
    ablation_nfes: tuple[int, ...] = (3,)
    ablations: tuple[str, ...] = ("indis-no-shift-scale", "indis-free-last", "instance-oracle-times-only",
                                  "instance-oracle-times-free-last", "instance-oracle-free-last")
    fig_nfe: int = 3
    quick: bool = False

    @classmethod
    def quick_config(cls) -> "DemoConfig":
        return cls(nfes=(2, 3, 5), num_train=2000, num_val=200, num_test=800, w2_points=800, heuristic_points=400,
                   oracle_subset=150, god_iters=150, indis_iters=300, oracle_iters=60,
                   ablations=("indis-no-shift-scale", "instance-oracle-times-only"), quick=True)


# ------------------------------------------------------------------------------------------------ helpers
def _steps_for_nfe(solver: str, nfe: int) -> int | None:
    for n in range(1, nfe + 1):
        if solver_nfe(solver, n) == nfe:
            return n
    return None


def _scaled_iters(base: int, steps: int) -> int:
    return max(1, int(round(base * max(1 / 3, min(1.0, 4 / steps)))))


def _indis_lr(base: float, steps: int) -> float:
    """phi's learning rate: `base` up to N=3, then base * 3/N (more steps, smaller per-instance corrections)."""
    return base * min(1.0, 3 / steps)


def _hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _pct(new: float, old: float) -> float:
    """Relative reduction of `new` vs `old` (0.25 = 25% lower)."""
    if not (math.isfinite(new) and math.isfinite(old)) or old == 0:
        return float("nan")
    return (old - new) / abs(old)


class _Timer:
    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    def add(self, key: str, dt: float) -> None:
        self.t[key] = round(self.t.get(key, 0.0) + dt, 2)


@dataclass
class _Data:
    """Held-out evaluation arrays (float64) and the train/val index split."""

    train: list[int]
    val: list[int]
    test_idx: Tensor
    xT: Tensor
    cond: Tensor | None
    x0: Tensor
    kl_ref: Tensor  # ground-truth endpoints of the training priors: an independent reference cloud for KL


# ------------------------------------------------------------------------------------------------ the run
class _Demo:
    def __init__(self, cfg: DemoConfig, out: Path, progress: bool, log: Callable[[str], None]):
        from .models import load_model

        self.cfg, self.out, self.progress, self.log = cfg, out, progress, log
        self.handle = load_model(f"toy:tree:{cfg.classes}")
        self.den = self.handle.denoiser
        self.sched = self.den.schedule
        self.mixture = self.handle.meta["mixture"]
        self.conditional = self.handle.cond_kind == "class"
        self.timer = _Timer()
        self.rows: list[dict[str, Any]] = []
        self.outputs: dict[tuple[str, int], Tensor] = {}  # generated endpoints on the held-out priors
        self.subset_outputs: dict[tuple[str, int], Tensor] = {}  # ... on the oracle subset
        self.discs: dict[tuple[str, int], Discretizer] = {}
        self.best_heuristic: dict[int, str] = {}
        self.heuristic_mse: dict[int, dict[str, float]] = {}
        self.train_seconds: dict[str, float] = {}
        self.specs: dict[tuple[str, int], str] = {}
        self.kl_gen_gt: dict[tuple[str, int], float] = {}  # the other KL direction, for the report

    # -- teacher
    def teacher(self):
        from .teacher import CondSpec, TeacherSet, generate_teacher

        c = self.cfg
        total = c.num_train + c.num_test
        tag = f"{c.classes}-{c.teacher_solver}{c.teacher_steps}-n{total}-seed{c.seed}"
        path = self.out / "teacher" / tag
        t0 = time.time()
        times = heuristic("uniform", c.teacher_steps, self.sched)
        cond = CondSpec("class", num_classes=2) if self.conditional else None
        ts = TeacherSet(path) if (path / "manifest.json").is_file() and TeacherSet(path).is_complete() else None
        if ts is None:
            self.log(f"[1/4] ground truth: {c.teacher_steps}-step {c.teacher_solver} from {total} priors -> {path}")
            ts = generate_teacher(self.den, path, [2], total, times=times, solver=c.teacher_solver, seed=c.seed,
                                  shard_size=2000, batch_size=2000, cond=cond, model=self.handle.spec, dtype=DT,
                                  progress=self.progress)
        else:
            self.log(f"[1/4] ground truth: reusing {path}")
        self.ts, self.teacher_tag = ts, tag
        self.timer.add("teacher", time.time() - t0)
        train_all = list(range(c.num_train))
        nval = min(c.num_val, max(1, c.num_train // 10))
        test_idx = torch.arange(c.num_train, total)
        _, xT, cond_t, x0 = ts.batch(test_idx, DT)
        self.data = _Data(train_all[: c.num_train - nval], train_all[c.num_train - nval:], test_idx, xT, cond_t, x0,
                          ts.x0()[: c.num_train].to(DT))
        if c.num_train < c.num_test:
            self.log(f"demo: note: KL uses a reference of only {c.num_train} training endpoints for {c.num_test} held-out ones")
        from .metrics.pointcloud import kl_divergence

        # the estimator's floor: ground truth of the held-out priors against the reference cloud (true KL = 0)
        ref = self.data.kl_ref[: x0.shape[0]].numpy()
        self.kl_floor = float(kl_divergence(ref, x0.numpy(), k=c.kl_k))
        self.kl_floor_gen_gt = float(kl_divergence(x0.numpy(), ref, k=c.kl_k))

    # -- sampling with any discretization
    def generate(self, disc: Discretizer, idx: Tensor, xT: Tensor, cond: Tensor | None, chunk: int = 2000) -> Tensor:
        outs = []
        with torch.no_grad():
            for s in range(0, xT.shape[0], chunk):
                c = None if cond is None else cond[s:s + chunk]
                outs.append(disc.sample(self.den, xT[s:s + chunk], c, idx[s:s + chunk]).detach())
        return torch.cat(outs)

    def subset(self) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        n = min(self.cfg.oracle_subset, self.cfg.num_test)
        d = self.data
        return d.test_idx[:n], d.xT[:n], None if d.cond is None else d.cond[:n], d.x0[:n]

    def metrics(self, out: Tensor, ref: Tensor, key: tuple[str, int] | None = None) -> dict[str, float]:
        from .metrics.pointcloud import kl_divergence, w2

        o, r = out.double().numpy(), ref.double().numpy()
        m = float(((o - r) ** 2).mean(1).mean())
        # KL against ground-truth endpoints of *other* priors (the training set), as many as generated points: the
        # k-NN estimator is biased negative when every generated point has its ground-truth partner in the
        # reference, and strongly biased when the two clouds differ much in size.
        kref = self.data.kl_ref[: o.shape[0]].numpy()
        k = self.cfg.kl_k
        ok = o.shape[0] > k and kref.shape[0] > k
        kl = float(kl_divergence(kref, o, k=k)) if ok else float("nan")  # KL(ground truth || generated)
        if key is not None:
            self.kl_gen_gt[key] = float(kl_divergence(o, kref, k=k)) if ok else float("nan")
        n = min(self.cfg.w2_points, o.shape[0])
        return {"mse": m, "kl": kl, "w2": float(w2(o[:n], r[:n]))}

    def record(self, method: str, nfe: int, disc: Discretizer | None, out: Tensor, ref: Tensor) -> dict[str, Any]:
        t0 = time.time()
        row = {"method": method, "nfe": nfe, **self.metrics(out, ref, (method, nfe))}
        self.timer.add("metrics", time.time() - t0)
        self.rows.append(row)
        if disc is not None:
            self.discs[(method, nfe)] = disc
        return row

    def evaluate(self, method: str, nfe: int, disc: Discretizer) -> dict[str, Any]:
        d = self.data
        t0 = time.time()
        out = self.generate(disc, d.test_idx, d.xT, d.cond)
        self.timer.add("evaluation", time.time() - t0)
        self.outputs[(method, nfe)] = out
        if self.cfg.oracle_subset:
            self.subset_outputs[(method, nfe)] = out[: min(self.cfg.oracle_subset, self.cfg.num_test)]
        return self.record(method, nfe, disc, out, d.x0)

    def evaluate_subset(self, method: str, nfe: int, disc: Discretizer) -> dict[str, Any]:
        idx, xT, cond, x0 = self.subset()
        t0 = time.time()
        out = self.generate(disc, idx, xT, cond)
        self.timer.add("evaluation", time.time() - t0)
        self.subset_outputs[(method, nfe)] = out
        return self.record(method, nfe, disc, out, x0)

    # -- heuristics
    def heuristics(self, nfe: int, steps: int) -> None:
        c, d = self.cfg, self.data
        t0 = time.time()
        fixed = lambda name: FixedSchedule(steps, self.sched, c.solver, times=heuristic(name, steps, self.sched), data_shape=[2], name=name)  # noqa: E731
        self.evaluate("uniform", nfe, fixed("uniform"))
        n = min(c.heuristic_points, c.num_test)
        scores: dict[str, float] = {}
        for name in CANDIDATE_HEURISTICS:
            try:
                disc = fixed(name)
            except (InputError, ValueError):
                continue
            out = self.generate(disc, d.test_idx[:n], d.xT[:n], None if d.cond is None else d.cond[:n])
            scores[name] = float(((out - d.x0[:n]) ** 2).mean(1).mean())
        best = min(scores, key=scores.get)
        self.best_heuristic[nfe], self.heuristic_mse[nfe] = best, scores
        self.timer.add("heuristics", time.time() - t0)
        self.evaluate("best-heuristic", nfe, fixed(best))

    # -- training with a cache under out/models
    def train(self, method: str, nfe: int, disc: Discretizer, iters: int, lr: float, *, batch: int | None = None,
              train_idx: list[int] | None = None, val_idx: list[int] | None = None, warm: str | None = None) -> Discretizer:
        from .training import TrainConfig, train_discretizer

        c = self.cfg
        oracle = isinstance(disc, InstanceOracle)
        train_idx = self.data.train if train_idx is None else train_idx
        val_idx = self.data.val if val_idx is None else val_idx
        tcfg = TrainConfig(iterations=iters, batch_size=batch or c.batch_size, lr=lr, train_indices=train_idx,
                           val_indices=val_idx, val_every=iters if oracle else max(1, iters // 5), seed=c.seed,
                           ckpt_every=max(50, iters // 4), grad_clip=0.0 if oracle else 1.0)
        spec = {"disc": {k: v for k, v in disc.config().items() if k not in ("saved", "extra", "indis_version")},
                "train": {k: v for k, v in asdict(tcfg).items() if k not in ("train_indices", "val_indices")},
                "train_hash": _hash([train_idx, val_idx]), "teacher": self.teacher_tag,
                "warm": self.specs.get((warm, nfe)) if warm else None}
        key = _hash(spec)
        self.specs[(method, nfe)] = key
        folder = self.out / "models" / method / f"nfe{nfe}"
        stamp = folder / "demo-spec.json"
        if folder.exists():
            try:
                old = load_json(stamp).get("key")
            except InputError:
                old = None
            if old != key:  # another configuration: this is our own cache, start that model over
                shutil.rmtree(folder)
        if (folder / "best" / "config.json").is_file():
            loaded = load_discretization(folder / "best", steps=disc.steps, data_shape=(2,), schedule=self.sched)
            return loaded.double()
        ensure_dir(folder)
        atomic_write_json(stamp, {"key": key, "spec": spec})
        t0 = time.time()
        torch.manual_seed(c.seed)
        res = train_discretizer(disc, self.den, self.ts, tcfg, out_dir=folder, dtype=DT, progress=self.progress)
        dt = time.time() - t0
        self.train_seconds[f"{method}@{nfe}"] = round(dt, 1)
        self.timer.add("training", dt)
        if not self.progress:
            self.log(f"  trained {method} NFE {nfe}: {iters} its in {dt:.0f}s, best val {res.best_val:.4g}")
        return disc

    # -- builders
    def god(self, steps: int, *, shift_scale: bool, free_last: bool, name: str) -> GlobalSchedule:
        c = self.cfg
        return GlobalSchedule(steps, self.sched, c.solver, data_shape=[2], init_times=heuristic("uniform", steps, self.sched),
                              free_last=free_last, learn_shift=shift_scale, learn_scale=shift_scale,
                              shift_bound=c.shift_bound, shift_mode=c.shift_mode, scale_bound=c.scale_bound, name=name)

    def indis(self, g: GlobalSchedule, name: str) -> InstanceSchedule:
        c = self.cfg
        net = dict(c.net)
        net.setdefault("seed", c.seed)
        if self.conditional:
            net["num_classes"] = 2
        d = InstanceSchedule(g.steps, self.sched, c.solver, data_shape=[2], init_times=g.init_times, free_last=g.free_last,
                             learn_shift=g.learn_shift, learn_scale=g.learn_scale, shift_bound=c.shift_bound,
                             shift_mode=c.shift_mode, scale_bound=c.scale_bound, net=net, name=name).double()
        return d.warm_start(g)

    def oracle_fit(self, name: str, nfe: int, g: GlobalSchedule, phi: InstanceSchedule | None = None) -> Discretizer:
        """Per-prior parameters on the oracle subset, started at phi's output for that prior when phi is given
        (else at the global schedule), then optimised for each prior separately."""
        c = self.cfg
        o = InstanceOracle.from_global(g, c.num_train + c.num_test)
        o.name = name
        idx, xT, cond, _ = self.subset()
        if phi is not None:
            with torch.no_grad():
                raw = phi.phi(xT.to(phi.phi.head.weight.dtype), cond).to(DT)
                n, k = phi.n_tau, phi.steps
                o.logits[idx] = raw[:, :n]
                o.shift_logits[idx] = raw[:, n:n + k]
                o.scale_logits[idx] = raw[:, n + k:]
        iters = _scaled_iters(c.oracle_iters, g.steps)
        return self.train(name, nfe, o, iters, c.oracle_lr, batch=len(idx), train_idx=idx.tolist(), val_idx=idx.tolist(),
                          warm=phi.name if phi is not None else g.name)

    def learned_variant(self, nfe: int, steps: int, *, shift_scale: bool, free_last: bool, god_name: str,
                        indis_name: str | None, oracle_name: str | None, eval_god: bool = True) -> None:
        c = self.cfg
        g = self.god(steps, shift_scale=shift_scale, free_last=free_last, name=god_name)
        g = self.train(god_name, nfe, g, c.god_iters, c.god_lr)  # never shortened: a converged baseline
        if eval_god:
            self.evaluate(god_name, nfe, g)
        d = None
        if indis_name:
            d = self.indis(g, indis_name)
            d = self.train(indis_name, nfe, d, _scaled_iters(c.indis_iters, steps), _indis_lr(c.indis_lr, steps), warm=god_name)
            self.evaluate(indis_name, nfe, d)
        if oracle_name and c.oracle_subset:
            o = self.oracle_fit(oracle_name, nfe, g, d)
            self.evaluate_subset(oracle_name, nfe, o)

    def run_nfe(self, nfe: int, steps: int) -> None:
        c = self.cfg
        self.heuristics(nfe, steps)
        self.learned_variant(nfe, steps, shift_scale=True, free_last=False, god_name="global", indis_name="indis",
                             oracle_name="instance-oracle")
        abl = set(c.ablations) if nfe in c.ablation_nfes else set()
        self.learned_variant(nfe, steps, shift_scale=False, free_last=False, god_name="global-times-only",
                             indis_name="indis-no-shift-scale" if "indis-no-shift-scale" in abl else None,
                             oracle_name="instance-oracle-times-only" if "instance-oracle-times-only" in abl else None)
        if {"indis-free-last", "instance-oracle-free-last"} & abl:
            self.learned_variant(nfe, steps, shift_scale=True, free_last=True, god_name="global-free-last",
                                 indis_name="indis-free-last" if "indis-free-last" in abl else None,
                                 oracle_name="instance-oracle-free-last" if "instance-oracle-free-last" in abl else None)
        if "instance-oracle-times-free-last" in abl:
            self.learned_variant(nfe, steps, shift_scale=False, free_last=True, god_name="global-times-free-last",
                                 indis_name=None, oracle_name="instance-oracle-times-free-last")


# ------------------------------------------------------------------------------------------------ reporting helpers
def _row(rows: list[dict[str, Any]], method: str, nfe: int) -> dict[str, Any] | None:
    for r in rows:
        if r["method"] == method and r["nfe"] == nfe:
            return r
    return None


def _subset_mse(demo: _Demo, method: str, nfe: int) -> float:
    out = demo.subset_outputs.get((method, nfe))
    if out is None:
        return float("nan")
    ref = demo.subset()[3]
    return float(((out - ref) ** 2).mean(1).mean())


def _gains(rows: list[dict[str, Any]], nfes: list[int], a: str = "indis", b: str = "global") -> dict[int, dict[str, float]]:
    g: dict[int, dict[str, float]] = {}
    for n in nfes:
        ra, rb = _row(rows, a, n), _row(rows, b, n)
        if ra and rb:
            g[n] = {m: _pct(ra[m], rb[m]) for m in ("mse", "kl", "w2")}
    return g


def _mean(vals: list[float]) -> float:
    v = [x for x in vals if math.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def _fmt(v: float, digits: int = 4) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    if v == 0 or 1e-3 <= abs(v) < 1e4:
        return f"{v:.{digits}f}"
    return f"{v:.{max(1, digits - 2)}e}"


def _fp(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{100 * v:+.1f}%"


# ------------------------------------------------------------------------------------------------ figures
def _figures(demo: _Demo, nfes: list[int]) -> dict[str, str]:
    from .plots import density_grid, new_figure, positive_for_log, save_figure, style_for

    out, c = demo.out, demo.cfg
    files: dict[str, str] = {}
    fn = c.fig_nfe if c.fig_nfe in nfes else nfes[0]
    idx, xT, cond, x0 = demo.subset()
    xTn = xT.numpy()

    # figure 2: priors coloured by endpoint L2 error, one panel per method, same priors for all panels
    panels = [m for m in ("uniform", "global", "instance-oracle", "indis") if (m, fn) in demo.subset_outputs]
    if panels:
        errs = {m: ((demo.subset_outputs[(m, fn)] - x0) ** 2).sum(1).sqrt().numpy() for m in panels}
        allv = np.concatenate(list(errs.values()))
        lo, hi = max(float(np.percentile(allv, 1)), 1e-6), float(np.percentile(allv, 99.5))
        from matplotlib.colors import LogNorm

        fig, axes = new_figure(len(panels), 1, panel=(3.6, 3.6))
        labels = {"uniform": "(a) uniform", "global": "(b) global (GOD)", "instance-oracle": "(c) per-instance oracle",
                  "indis": "(d) INDIS phi (held-out)"}
        sc = None
        for ax, m in zip(axes, panels):
            sc = ax.scatter(xTn[:, 0], xTn[:, 1], c=np.clip(errs[m], lo, hi), s=9, cmap="viridis", norm=LogNorm(lo, hi))
            ax.set_title(f"{labels[m]}\nmean MSE {float((errs[m] ** 2).mean() / 2):.2e}", fontsize=9)
            ax.set_aspect("equal")
            ax.set_xlim(-3, 3)
            ax.set_ylim(-3, 3)
            ax.set_xlabel("x_T[0]")
        axes[0].set_ylabel("x_T[1]")
        fig.colorbar(sc, ax=axes, shrink=0.8, label="endpoint L2 error vs 100-step Euler")
        fig.suptitle(f"Endpoint error per prior x_T (NFE={fn}, {c.solver}, {len(idx)} held-out priors)", fontsize=10, y=1.06)
        files["fig2"] = save_figure(fig, out / "fig2_endpoint_error.png").name

    # figure 3: MSE / KL / W2 vs NFE (log scale)
    show = [m for m in ("uniform", "best-heuristic", "global-times-only", "global", "instance-oracle", "indis")
            if any(r["method"] == m for r in demo.rows)]
    fig, axes = new_figure(3, 1, panel=(4.2, 3.4))
    floored = False
    for ax, metric, title in zip(axes, ("mse", "kl", "w2"), ("MSE to ground truth", "KL(ground truth || generated)", "W2 distance")):
        for m in show:
            pts = [(r["nfe"], r[metric]) for r in demo.rows if r["method"] == m]
            if not pts:
                continue
            xs, ys = zip(*sorted(pts))
            ysp, fl = positive_for_log(ys, floor=1e-4 if metric == "kl" else None)
            floored |= fl
            st = style_for(m)
            label = m + (" (oracle subset)" if m == "instance-oracle" else "")
            ax.plot(xs, ysp, label=label, markersize=4, **st)
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    if floored:
        axes[1].text(0.02, 0.02, "estimates <= 0 drawn at 1e-4", transform=axes[1].transAxes, fontsize=7)
    fig.suptitle(f"Tree '{c.classes}', {c.solver}: quality vs NFE (held-out priors)", fontsize=10)
    files["fig3"] = save_figure(fig, out / "fig3_metrics_vs_nfe.png").name

    # samples over the data density
    shown = [m for m in ("uniform", "global", "indis") if (m, fn) in demo.outputs]
    d = demo.data
    fig, axes = new_figure(len(shown) + 1, 1, panel=(3.6, 3.6))
    ref = d.x0.numpy()
    lim_x = (float(np.percentile(ref[:, 0], 0.5)) - 0.4, float(np.percentile(ref[:, 0], 99.5)) + 0.4)
    lim_y = (float(np.percentile(ref[:, 1], 0.5)) - 0.4, float(np.percentile(ref[:, 1], 99.5)) + 0.4)
    mix = demo.mixture
    X, Y, lp = density_grid(lambda p: mix.log_prob(torch.from_numpy(p)).numpy(), lim_x, lim_y, n=160)
    lp = np.maximum(lp, lp.max() - 12)
    n_show = min(2000, ref.shape[0])
    for ax, (name, pts) in zip(axes, [("ground truth (100-step Euler)", ref)] +
                               [(f"{m}, NFE={fn}", demo.outputs[(m, fn)].numpy()) for m in shown]):
        ax.contourf(X, Y, lp, levels=14, cmap="Greys")
        ax.scatter(pts[:n_show, 0], pts[:n_show, 1], s=1.5, c="#d62728", alpha=0.6, linewidths=0)
        ax.set_xlim(*lim_x)
        ax.set_ylim(*lim_y)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
    fig.suptitle(f"Samples over log p(x) of tree '{c.classes}' ({n_show} held-out priors)", fontsize=10)
    files["samples"] = save_figure(fig, out / "samples_density.png").name

    # per-instance timesteps
    disc = demo.discs.get(("indis", fn))
    g = demo.discs.get(("global", fn))
    if disc is not None and g is not None and disc.steps >= 2:
        with torch.no_grad():
            st = disc(d.xT, d.cond, d.test_idx)
            gs = g(d.xT[:1], None if d.cond is None else d.cond[:1], d.test_idx[:1])
        t = st.times.numpy()
        gt = gs.times[0].numpy()
        o = demo.discs.get(("instance-oracle", fn))
        fig, axes = new_figure(3, 1, panel=(3.9, 3.5))
        a0 = axes[0]
        sc = a0.scatter(d.xT[:, 0].numpy(), d.xT[:, 1].numpy(), c=t[:, 1], s=4, cmap="coolwarm")
        fig.colorbar(sc, ax=a0, label="phi's t_1")
        a0.set_aspect("equal")
        a0.set_xlim(-3, 3)
        a0.set_ylim(-3, 3)
        a0.set_title(f"INDIS t_1 per prior x_T (global t_1={gt[1]:.3f})", fontsize=9)
        a1 = axes[1]
        if o is not None:
            with torch.no_grad():
                os_ = o(xT, cond, idx).times.numpy()
            a1.scatter(os_[:, 1], os_[:, 2], s=6, c="#2ca02c", alpha=0.6, label="oracle (per prior)")
        a1.scatter(t[:, 1], t[:, 2], s=3, c="#d62728", alpha=0.35, label="INDIS phi (held-out)")
        a1.scatter([gt[1]], [gt[2]], marker="*", s=220, c="#1f77b4", edgecolors="k", label="global (GOD)", zorder=5)
        u = heuristic("uniform", disc.steps, demo.sched).numpy()
        a1.scatter([u[1]], [u[2]], marker="X", s=120, c="#7f7f7f", edgecolors="k", label="uniform", zorder=5)
        a1.set_xlabel("t_1")
        a1.set_ylabel("t_2")
        a1.legend(fontsize=7)
        a1.set_title(f"interior times (NFE={fn})", fontsize=9)
        a2 = axes[2]
        for n in range(1, t.shape[1] - 1):
            a2.hist(t[:, n], bins=50, alpha=0.5, label=f"t_{n}")
            a2.axvline(gt[n], color="k", linestyle="--", linewidth=1)
        a2.set_xlabel("time")
        a2.set_title("INDIS interior times (dashed: global)", fontsize=9)
        a2.legend(fontsize=7)
        files["timesteps"] = save_figure(fig, out / "timesteps_per_instance.png").name
    return files


# ------------------------------------------------------------------------------------------------ report
def _report(demo: _Demo, nfes: list[int], files: dict[str, str], settings: dict[str, Any]) -> str:
    c, rows = demo.cfg, demo.rows
    L: list[str] = []
    L.append(f"# INDIS synthetic study: tree '{c.classes}', {c.solver}, NFE {nfes[0]}-{nfes[-1]}")
    L.append("")
    L.append(f"Flow matching (T=0.988, t0=0.002), exact float64 tree denoiser. Ground truth per prior x_T: "
             f"{c.teacher_steps}-step uniform {c.teacher_solver}. {c.num_train} training priors "
             f"({len(demo.data.val)} of them for checkpoint selection), {c.num_test} held-out priors. "
             f"MSE is the mean over the 2 coordinates, averaged over held-out priors. KL is KL(ground truth || generated), the "
             f"k-NN estimator (Wang-Kulkarni-Verdu, k={c.kl_k}) between all {c.num_test} generated endpoints and as many "
             f"ground-truth endpoints of *other* priors (the training priors; with each point's own partner in the "
             f"reference the estimator is biased negative); its noise floor, the same estimate for the held-out ground "
             f"truth itself (true value 0), is {demo.kl_floor:+.3f}. The other direction, KL(generated || ground truth), "
             f"is tabulated below (floor {demo.kl_floor_gen_gt:+.3f}). W2 is exact (POT network simplex) between the "
             f"generated and ground-truth endpoints of the first {min(c.w2_points, c.num_test)} held-out priors. "
             f"The instance oracle is fitted and evaluated on the first {min(c.oracle_subset, c.num_test)} held-out "
             f"priors only (its KL/W2 therefore use that smaller cloud). Freedoms: shift = {c.shift_bound} tanh(o/2) x step "
             f"({c.shift_mode}), scale = 1 + {c.scale_bound} tanh(o/2)." + (" Quick mode (reduced sizes)." if c.quick else ""))
    L.append("")
    # main table
    methods = [m for m in MAIN_METHODS if any(r["method"] == m for r in rows)]
    extra = sorted({r["method"] for r in rows} - set(MAIN_METHODS))
    L.append("## Results (held-out priors)")
    L.append("")
    for metric, title in (("mse", "MSE"), ("kl", "KL"), ("w2", "W2")):
        L.append(f"**{title}**")
        L.append("")
        L.append("| method | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
        L.append("|---|" + "---|" * len(nfes))
        for m in methods + [e for e in extra if any(_row(rows, e, n) for n in nfes)]:
            cells = []
            for n in nfes:
                r = _row(rows, m, n)
                cells.append(_fmt(r[metric]) if r else "")
            name = m + (" †" if m.startswith("instance-oracle") else "")
            L.append(f"| {name} | " + " | ".join(cells) + " |")
        L.append("")
    L.append("† fitted and evaluated on the oracle subset; compare it with the same-subset MSE table below.")
    L.append("")
    L.append(f"**KL, other direction: KL(generated || ground truth)** (floor {demo.kl_floor_gen_gt:+.3f})")
    L.append("")
    L.append("| method | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
    L.append("|---|" + "---|" * len(nfes))
    for m in methods + [e for e in extra if any(_row(rows, e, n) for n in nfes)]:
        L.append(f"| {m} | " + " | ".join(_fmt(demo.kl_gen_gt[(m, n)]) if (m, n) in demo.kl_gen_gt else "" for n in nfes) + " |")
    L.append("")
    L.append("Best heuristic per NFE (held-out MSE on " + f"{min(c.heuristic_points, c.num_test)} priors): " +
             ", ".join(f"NFE {n}: {demo.best_heuristic[n]}" for n in nfes if n in demo.best_heuristic) + ".")
    L.append("")
    # gains
    gains = _gains(rows, nfes)
    L.append("## INDIS vs global (GOD with the same freedoms): relative change (negative = INDIS lower, better)")
    L.append("")
    L.append("| NFE | MSE | KL | W2 |")
    L.append("|---|---|---|---|")
    for n in nfes:
        if n in gains:
            g = gains[n]
            L.append(f"| {n} | {_fp(-g['mse'])} | {_fp(-g['kl'])} | {_fp(-g['w2'])} |")
    low = [n for n in nfes if 3 <= n <= 6 and n in gains]
    avg = {m: _mean([gains[n][m] for n in gains]) for m in ("mse", "kl", "w2")}
    avg36 = {m: _mean([gains[n][m] for n in low]) for m in ("mse", "kl", "w2")}
    L.append(f"| mean (all NFE) | {_fp(-avg['mse'])} | {_fp(-avg['kl'])} | {_fp(-avg['w2'])} |")
    if low:
        L.append(f"| mean (NFE 3-6) | {_fp(-avg36['mse'])} | {_fp(-avg36['kl'])} | {_fp(-avg36['w2'])} |")
    L.append("")
    gt = _gains(rows, nfes, "indis-no-shift-scale", "global-times-only")
    gtimes = _gains(rows, nfes, "global", "global-times-only")
    L.append("## Paper targets beside ours")
    L.append("")
    L.append("| quantity | paper | ours |")
    L.append("|---|---|---|")
    L.append(f"| phi vs global, KL, mean over NFE | -{100 * PAPER['kl_gain_mean']:.1f}% | {_fp(-avg['kl']) if math.isfinite(avg['kl']) else 'n/a'} |")
    L.append(f"| phi vs global, W2, mean over NFE | -{100 * PAPER['w2_gain_mean']:.1f}% | {_fp(-avg['w2']) if math.isfinite(avg['w2']) else 'n/a'} |")
    if low:
        L.append(f"| phi vs global, KL, mean NFE 3-6 | -{100 * PAPER['kl_gain_nfe3_6']:.1f}% | {_fp(-avg36['kl'])} |")
        L.append(f"| phi vs global, W2, mean NFE 3-6 | -{100 * PAPER['w2_gain_nfe3_6']:.1f}% | {_fp(-avg36['w2'])} |")
    gap = settings.get("oracle_gap", {})
    for key, label in (("times-only", "oracle vs global, NFE 3, 2-DOF (times only, fixed endpoints)"),
                       ("times-free-last", "oracle vs global, NFE 3, times + free last time"),
                       ("full", "oracle vs global, NFE 3, times + shift + scale"),
                       ("free-last", "oracle vs global, NFE 3, times + shift + scale + free last")):
        v = gap.get(str(c.fig_nfe), {}).get(key)
        if v:
            L.append(f"| {label} | 0.0245 -> 0.0122 (-50.2%) | {_fmt(v['global'])} -> {_fmt(v['oracle'])} ({_fp(-v['gain'])}) |")
    L.append("")
    # oracle gap table
    if gap:
        L.append("## Oracle gap (same priors: the oracle subset)")
        L.append("")
        L.append("MSE of each method on the priors the oracle was fitted to; 'gain' is the oracle's reduction vs the "
                 "global schedule with the same freedoms (the paper: -50.2% at NFE 3).")
        L.append("")
        L.append("| NFE | setting | uniform | global | INDIS | oracle | oracle gain |")
        L.append("|---|---|---|---|---|---|---|")
        for n, per in gap.items():
            for key, v in per.items():
                L.append(f"| {n} | {key} | {_fmt(v.get('uniform', float('nan')))} | {_fmt(v['global'])} | "
                         f"{_fmt(v.get('indis', float('nan')))} | {_fmt(v['oracle'])} | {_fp(-v['gain'])} |")
        L.append("")
    # ablations
    abl_lines = []
    for n in nfes:
        for a, b, what in (("indis", "global", "INDIS vs GOD, shift + scale"),
                           ("indis-no-shift-scale", "global-times-only", "INDIS vs GOD, times only"),
                           ("indis-free-last", "global-free-last", "INDIS vs GOD, shift + scale + free last"),
                           ("global", "global-times-only", "GOD: shift + scale vs times only"),
                           ("indis", "indis-no-shift-scale", "INDIS: shift + scale vs times only"),
                           ("indis-free-last", "indis", "INDIS: free last time vs fixed")):
            ra, rb = _row(rows, a, n), _row(rows, b, n)
            if ra and rb and (a, b) != ("indis", "global") and (n in c.ablation_nfes or (a, b) == ("global", "global-times-only")):
                abl_lines.append(f"| {n} | {what} | {_fmt(rb['mse'])} -> {_fmt(ra['mse'])} ({_fp(-_pct(ra['mse'], rb['mse']))}) | "
                                 f"{_fp(-_pct(ra['kl'], rb['kl']))} | {_fp(-_pct(ra['w2'], rb['w2']))} |")
    if abl_lines:
        L.append("## Ablations (relative change of the first method vs the second, held-out priors; negative = better)")
        L.append("")
        L.append("| NFE | comparison | MSE | KL | W2 |")
        L.append("|---|---|---|---|---|")
        L.extend(abl_lines)
        L.append("")
    # figures
    L.append("## Figures")
    L.append("")
    captions = {"fig2": f"Figure 2 analogue: endpoint error per prior (NFE {c.fig_nfe}), same priors in every panel.",
                "fig3": "Figure 3 analogue: MSE, KL and W2 vs NFE (log scale).",
                "samples": "Generated endpoints over the data density log p(x).",
                "timesteps": "Per-instance timesteps: phi's t_1 over the prior plane; (t_1, t_2) of phi, the oracle and the global schedule; histograms."}
    for k, f in files.items():
        L.append(f"{captions.get(k, k)}")
        L.append("")
        L.append(f"![{k}]({f})")
        L.append("")
    # discussion
    L.append("## Discussion")
    L.append("")
    L.extend(_discussion(demo, nfes, gains, avg, avg36, gt, gtimes, gap))
    L.append("")
    L.append("## Run")
    L.append("")
    L.append(f"Stage timings (s): {json.dumps(settings.get('timings', {}))}. Cached work: `teacher/` (ground truth) "
             f"and `models/` (trained discretizations); rerunning with the same settings reuses them.")
    L.append("")
    return "\n".join(L)


def _discussion(demo: _Demo, nfes, gains, avg, avg36, gt, gtimes, gap) -> list[str]:
    c = demo.cfg
    D: list[str] = []
    fn = c.fig_nfe
    if fn in gains:
        g = gains[fn]
        D.append(f"- At NFE {fn}, INDIS (phi on held-out priors) vs the global schedule with the same freedoms: MSE "
                 f"{_fp(-g['mse'])}, KL {_fp(-g['kl'])}, W2 {_fp(-g['w2'])}. Averaged over NFE {nfes[0]}-{nfes[-1]}: "
                 f"MSE {_fp(-avg['mse'])}, KL {_fp(-avg['kl'])}, W2 {_fp(-avg['w2'])} (paper: KL -25.9%, W2 -21.9%).")
    v = gap.get(str(fn), {})
    if "times-only" in v:
        D.append(f"- The literal setting (N-1 interior times, endpoints fixed) leaves little room per instance: the "
                 f"oracle is only {_fp(-v['times-only']['gain'])} vs global on the same priors "
                 f"({_fmt(v['times-only']['global'])} -> {_fmt(v['times-only']['oracle'])}), close to the ~9% of the "
                 f"research notes and far from the paper's 50.2% (0.0245 -> 0.0122).")
    for key, what in (("times-free-last", "a free last time"), ("full", "per-step shift and scale"),
                      ("free-last", "shift, scale and a free last time")):
        if key in v:
            D.append(f"- With {what}, the oracle gap becomes {_fp(-v[key]['gain'])} "
                     f"({_fmt(v[key]['global'])} -> {_fmt(v[key]['oracle'])}).")
    if "full" in v:
        D.append("- With shift and scale an oracle has 3N free numbers per prior for a 2-D endpoint, so it can all but "
                 "interpolate its target (MSE -> 0 as N grows): its gap to the global schedule is then bounded only by "
                 "the optimiser, not by the schedule family. The paper's 50.2% lies between the literal 2-DOF gap and "
                 "this one; which freedoms and bounds it used is not stated, so the oracle gap alone cannot pin it down. "
                 "The oracle is started at phi's schedule for each prior (else at the global one) and then optimised "
                 "per prior, so it is a tighter bound than INDIS on the same priors.")
    if fn in gt:
        D.append(f"- Without shift/scale, INDIS changes MSE by only {_fp(-gt[fn]['mse'])} vs GOD times-only at NFE {fn}; "
                 f"with the freedoms the change is {_fp(-gains.get(fn, {}).get('mse', float('nan')))}: the per-instance "
                 f"benefit is carried by the extra freedoms, as the oracle gaps predict.")
    if fn in gtimes:
        D.append(f"- The freedoms also help the global schedule: GOD with shift/scale changes MSE by {_fp(-gtimes[fn]['mse'])} "
                 f"vs times-only at NFE {fn}. Every global schedule gets {c.god_iters} Adam steps (lr {c.god_lr}, batch "
                 f"{c.batch_size}) at every N, which converges it, so INDIS, which starts from it, is compared with a "
                 f"converged baseline.")
    rev = [(n, demo.kl_gen_gt.get(("indis", n)), demo.kl_gen_gt.get(("global", n))) for n in nfes]
    rev = [(n, a, b) for n, a, b in rev if a is not None and b is not None]
    if rev:
        worse = [n for n, a, b in rev if a > b]
        D.append("- Direction matters for KL. KL(ground truth || generated) (the main tables) penalises ground-truth mass the "
                 "sampler misses; few-step global schedules pull samples inward onto the dense inner branches, which it "
                 "punishes. KL(generated || ground truth) barely penalises that contraction (mass stays where the data is "
                 "dense) and is dominated by a few off-branch points; there INDIS is "
                 + (f"worse than global at NFE {worse}" if worse else "also better than global at every NFE")
                 + " (table above), although its MSE and W2 are lower.")
    D.append(f"- KL is a k-NN estimate on {c.num_test} points: noisy and biased at this size (the held-out ground truth "
             f"itself scores {demo.kl_floor:+.3f} where the true value is 0; the oracle's smaller cloud is noisier still), "
             f"so KL differences of a few hundredths are not significant; MSE and W2 are the more reliable signals.")
    if c.quick:
        D.append("- Quick mode: fewer priors, NFEs and iterations; run `indis demo` for the full study.")
    return D


# ------------------------------------------------------------------------------------------------ entry point
def run_demo(out_dir: str | Path = "runs/demo", quick: bool = False, *, seed: int = 0, nfes: list[int] | None = None,
             classes: str = "A", solver: str = "euler", progress: bool = True, log: Callable[[str], None] | None = None,
             **overrides: Any) -> dict[str, Any]:
    """Run the synthetic study and write results.json, report.md and the PNG figures to `out_dir`.

    `quick` uses reduced sizes (about 2-3 minutes on 2 CPU cores); `overrides` set any `DemoConfig` field (e.g.
    num_train, num_test, god_iters, indis_iters, oracle_iters, oracle_subset, ablation_nfes). Returns the
    results.json content plus "summary" (the one-line summary) and "paths".
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if classes not in ("A", "B", "AB"):
        raise InputError(f"classes must be A, B or AB, got {classes!r}")
    if solver not in SOLVERS:
        raise InputError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    cfg = DemoConfig.quick_config() if quick else DemoConfig()
    fields = {f.name for f in dataclasses.fields(DemoConfig)}
    bad = set(overrides) - fields
    if bad:
        raise InputError(f"unknown demo setting(s) {sorted(bad)}; known: {sorted(fields)}")
    cfg = dataclasses.replace(cfg, seed=int(seed), classes=classes, solver=solver, **overrides)
    if nfes is not None:
        cfg.nfes = tuple(sorted({int(n) for n in nfes}))
    cfg.nfes = tuple(cfg.nfes)
    cfg.ablation_nfes = tuple(cfg.ablation_nfes)
    cfg.ablations = tuple(cfg.ablations)
    if not cfg.nfes or min(cfg.nfes) < 1:
        raise InputError(f"NFEs must be >= 1, got {list(cfg.nfes)}")
    for name in ("num_train", "num_test", "teacher_steps", "batch_size", "god_iters", "indis_iters", "oracle_iters", "w2_points"):
        if getattr(cfg, name) < 1:
            raise InputError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.num_train < 2:
        raise InputError("num_train must be >= 2 (part of it is used for validation)")
    plan: list[tuple[int, int]] = []
    skipped = []
    for n in cfg.nfes:
        s = _steps_for_nfe(cfg.solver, n)
        (plan.append((n, s)) if s else skipped.append(n))
    if not plan:
        raise InputError(f"solver {cfg.solver} cannot realise any of the NFEs {list(cfg.nfes)} exactly")
    if skipped:
        log(f"demo: solver {cfg.solver} has no step count with NFE {skipped}; skipping those")
    if cfg.fig_nfe not in [n for n, _ in plan]:
        cfg.fig_nfe = min((n for n, _ in plan), key=lambda n: abs(n - 3))
    out = ensure_dir(out_dir)
    t_start = time.time()
    demo = _Demo(cfg, out, progress, log)
    demo.teacher()
    nfe_list = [n for n, _ in plan]
    log(f"[2/4] discretizations at NFE {nfe_list} (solver {cfg.solver}): heuristics, global, INDIS, oracle"
        + (f", ablations at NFE {list(cfg.ablation_nfes)}" if cfg.ablation_nfes else ""))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan), desc="demo NFEs", unit="nfe", position=0)
    try:
        for n, s in plan:
            if bar is not None:
                bar.set_postfix(nfe=n)
            demo.run_nfe(n, s)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    # oracle gap on the same priors
    gap: dict[str, dict[str, dict[str, float]]] = {}
    pairs = {"times-only": ("global-times-only", "instance-oracle-times-only", "indis-no-shift-scale"),
             "times-free-last": ("global-times-free-last", "instance-oracle-times-free-last", None),
             "full": ("global", "instance-oracle", "indis"),
             "free-last": ("global-free-last", "instance-oracle-free-last", "indis-free-last")}
    for n in nfe_list:
        for key, (gname, oname, iname) in pairs.items():
            if (oname, n) in demo.subset_outputs and (gname, n) in demo.subset_outputs:
                gm, om = _subset_mse(demo, gname, n), _subset_mse(demo, oname, n)
                e = {"global": gm, "oracle": om, "gain": _pct(om, gm), "uniform": _subset_mse(demo, "uniform", n)}
                if iname and (iname, n) in demo.subset_outputs:
                    e["indis"] = _subset_mse(demo, iname, n)
                gap.setdefault(str(n), {})[key] = e
    log("[3/4] figures")
    t0 = time.time()
    files = _figures(demo, nfe_list)
    demo.timer.add("figures", time.time() - t0)
    demo.timer.add("total", time.time() - t_start)
    settings = {
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "nfes": nfe_list, "steps_per_nfe": {str(n): s for n, s in plan},
        "schedule": demo.sched.config(), "model": demo.handle.spec,
        "best_heuristic": {str(k): v for k, v in demo.best_heuristic.items()},
        "heuristic_mse": {str(k): v for k, v in demo.heuristic_mse.items()},
        "metrics": {"mse": "mean over the 2 coordinates of (x - x*)^2, averaged over held-out priors",
                    "kl": f"KL(ground truth || generated), k-NN estimator (Wang-Kulkarni-Verdu), k={cfg.kl_k}: ground-truth endpoints "
                          f"of as many training priors (an independent cloud) vs the generated endpoints of all held-out priors; "
                          f"the other direction is in kl_generated_vs_ground_truth",
                    "w2": f"exact W2 (POT emd2) on the first {min(cfg.w2_points, cfg.num_test)} held-out priors",
                    "instance-oracle": f"fitted and evaluated on the first {min(cfg.oracle_subset, cfg.num_test)} held-out priors"},
        "oracle_gap": gap,
        "kl_floor": demo.kl_floor,
        "kl_generated_vs_ground_truth": {f"{m}@{n}": v for (m, n), v in demo.kl_gen_gt.items()},
        "kl_floor_generated_vs_ground_truth": demo.kl_floor_gen_gt,
        "training_seconds": demo.train_seconds,
        "timings": demo.timer.t,
        "threads": torch.get_num_threads(),
    }
    results = {"experiment": EXPERIMENT, "results": demo.rows, "settings": settings}
    from .io import save_tensors

    save_tensors(out / "endpoints.safetensors", {f"{m}@{n}": v.float().contiguous() for (m, n), v in demo.outputs.items()},
                 {"note": "generated endpoints on the held-out priors, key METHOD@NFE (oracle ones are not included)"})
    log("[4/4] report")
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", _report(demo, nfe_list, files, settings))
    g = _gains(demo.rows, nfe_list).get(cfg.fig_nfe)
    if g:
        summary = (f"demo: indis vs global at NFE {cfg.fig_nfe}: MSE {_fp(-g['mse'])}, KL {_fp(-g['kl'])}, "
                   f"W2 {_fp(-g['w2'])} ({out / 'report.md'})")
    else:
        summary = f"demo: done ({out / 'report.md'})"
    return {**results, "summary": summary, "paths": {"results": str(out / "results.json"), "report": str(out / "report.md"),
                                                     **{k: str(out / v) for k, v in files.items()}}}
