"""`indis demo`: the paper's synthetic study (section 4.1, figures 2 and 3) on the built-in tree distribution, run on
the experiment layer (`indis.experiment`).

Data: the autoguidance tree-branch mixture (class 'A' by default; 'B', or 'AB' with the class as condition c), flow
matching with T=0.988, t0=0.002, exact float64 denoiser. Ground truth per prior x_T: a 100-step uniform Euler solve.
Training, validation and test priors come from distinct seeds. At each NFE:

- ``uniform``; ``best-heuristic`` (lowest validation MSE among logsnr / edm / quadratic / time_uniform /
  time_quadratic / shift);
- ``global`` (GOD with INDIS's per-step shift and scale) and ``global-times-only`` (the N-1 interior times only),
  trained on the training priors under the budget rule (plateau learning rate, validation patience, several starts);
- ``indis`` (phi(x_T, c), warm-started from ``global``, same budget rule);
- ``instance-oracle`` (one schedule per prior, started from phi's output and fitted on the first test priors: a
  ceiling, not a method);
- ablations at ``ablation_nfes``: INDIS without shift/scale, with a free last time; oracle/global pairs for the
  times-only and free-last-time settings.

Metrics on the test priors: MSE to the ground-truth endpoint (mean over the 2 coordinates), KL in both directions
(k-NN estimator, against the ground-truth endpoints of as many *training* priors: an independent cloud), exact W2.
Report and figures: `indis.demo_report`.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from .discretizations import FixedSchedule, GlobalSchedule, InstanceOracle, InstanceSchedule, heuristic
from .errors import InputError
from .experiment import Experiment, ExperimentConfig
from .io import atomic_write_json, atomic_write_text, ensure_dir
from .solvers import SOLVERS, steps_for_nfe
from .training import TrainConfig
from .demo_report import PAPER  # the paper's numbers live with the report that compares against them

__all__ = ["DemoConfig", "run_demo", "PAPER"]

EXPERIMENT = "toy-tree"
DT = torch.float64
MAIN_METHODS = ("uniform", "best-heuristic", "global", "instance-oracle", "indis")
CANDIDATE_HEURISTICS = ("logsnr", "edm", "quadratic", "time_uniform", "time_quadratic", "shift")


@dataclass
class DemoConfig:
    """All settings of one demo run (stored in results.json under "settings")."""

    classes: str = "A"
    solver: str = "euler"
    nfes: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 9, 10)
    seed: int = 0
    num_train: int = 20000
    num_val: int = 300
    num_test: int = 3000
    teacher_solver: str = "euler"
    teacher_steps: int = 100
    w2_points: int = 1500
    kl_k: int = 5
    oracle_subset: int = 250  # test priors the oracle is fitted and judged on
    # freedoms (paper eq. 6): shift = b tanh(o/2) * step (relative), scale = 1 + b tanh(o/2)
    shift_bound: float = 0.5
    shift_mode: str = "relative"
    scale_bound: float = 0.2
    # the budget rule: validate every val_every iterations, stop after `patience` validations without improvement
    batch_size: int = 64
    val_every: int = 25
    patience: int = 6
    global_starts: int = 3
    god_cap: int = 1500
    god_lr: float = 0.1
    indis_cap: int = 1500
    indis_lr: float = 5e-3
    oracle_cap: int = 150
    oracle_lr: float = 5e-2
    net: dict[str, Any] = field(default_factory=lambda: {"hidden": 128, "depth": 3, "fourier_features": 32, "fourier_scale": 2.0})
    ablation_nfes: tuple[int, ...] = (3,)
    ablations: tuple[str, ...] = ("indis-no-shift-scale", "indis-free-last", "instance-oracle-times-only",
                                  "instance-oracle-times-free-last", "instance-oracle-free-last")
    fig_nfe: int = 3
    quick: bool = False

    @classmethod
    def quick_config(cls) -> "DemoConfig":
        return cls(nfes=(2, 3, 5), num_train=2000, num_val=200, num_test=800, w2_points=800, oracle_subset=150,
                   god_cap=600, indis_cap=600, oracle_cap=60, patience=4, global_starts=2,
                   ablations=("indis-no-shift-scale", "instance-oracle-times-only"), quick=True)


def _indis_lr(base: float, steps: int) -> float:
    """phi's learning rate: `base` up to N=3, then base * 3/N (more steps, smaller per-instance corrections)."""
    return base * min(1.0, 3 / steps)


# ------------------------------------------------------------------------------------------------ the run
class _Demo:
    def __init__(self, cfg: DemoConfig, out: Path, progress: bool, log: Callable[[str], None]):
        from .models import load_model

        self.cfg, self.out, self.progress, self.log = cfg, out, progress, log
        self.handle = load_model(f"toy:tree:{cfg.classes}")
        self.den, self.sched = self.handle.denoiser, self.handle.denoiser.schedule
        self.mixture = self.handle.meta["mixture"]
        ecfg = ExperimentConfig(model=self.handle.spec, seed=cfg.seed,
                                sizes={"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test},
                                teacher_steps=cfg.teacher_steps, teacher_solver=cfg.teacher_solver, teacher_schedule="uniform",
                                dtype="float64")
        self.exp = Experiment(out, self.handle, ecfg, dtype=DT, progress=progress, log=log, teacher_batch=2000, eval_batch=2000)
        self.rows: list[dict[str, Any]] = []
        self.outputs: dict[tuple[str, int], Tensor] = {}  # generated endpoints on the test priors
        self.subset_outputs: dict[tuple[str, int], Tensor] = {}  # ... on the oracle subset
        self.discs: dict[tuple[str, int], Any] = {}
        self.best_heuristic: dict[int, str] = {}
        self.heuristic_val_mse: dict[int, dict[str, float]] = {}
        self.train_info: dict[str, dict[str, Any]] = {}

    # -- data and metrics
    def setup(self) -> None:
        from .metrics.pointcloud import kl_divergence

        t0 = time.time()
        for split in ("train", "val", "test"):
            self.exp.teacher(split)
        self.teacher_seconds = time.time() - t0
        x0 = self.exp.data("test")[3]
        self.kl_ref = self.exp.data("train")[3][: x0.shape[0]]  # an independent ground-truth cloud (other priors)
        ref = self.kl_ref.numpy()
        # the estimator's floors: the test ground truth against the reference cloud (true KL = 0)
        self.kl_floor = float(kl_divergence(ref, x0.numpy(), k=self.cfg.kl_k))
        self.kl_floor_gen_gt = float(kl_divergence(x0.numpy(), ref, k=self.cfg.kl_k))

    def metrics(self, out: Tensor, ref: Tensor) -> dict[str, float]:
        from .metrics.pointcloud import kl_divergence, w2

        o, r = out.double().numpy(), ref.double().numpy()
        kref = self.kl_ref[: o.shape[0]].numpy()
        k = self.cfg.kl_k
        ok = o.shape[0] > k and kref.shape[0] > k
        n = min(self.cfg.w2_points, o.shape[0])
        return {"mse": float(((o - r) ** 2).mean(1).mean()),
                "kl_gt_gen": float(kl_divergence(kref, o, k=k)) if ok else float("nan"),  # KL(ground truth || generated)
                "kl_gen_gt": float(kl_divergence(o, kref, k=k)) if ok else float("nan"),  # KL(generated || ground truth)
                "w2": float(w2(o[:n], r[:n]))}

    def evaluate(self, name: str, nfe: int, spec: dict[str, Any], disc, subset: bool = False) -> None:
        n = min(self.cfg.oracle_subset, self.cfg.num_test)
        out = self.exp.samples(spec, disc, "test", limit=n if subset else None)
        ref = self.exp.data("test")[3][: out.shape[0]]
        self.rows.append({"method": name, "nfe": nfe, **self.metrics(out, ref)})
        (self.subset_outputs if subset else self.outputs)[(name, nfe)] = out
        if not subset and self.cfg.oracle_subset:
            self.subset_outputs[(name, nfe)] = out[:n]
        self.discs[(name, nfe)] = disc

    # -- methods
    def spec(self, name: str, nfe: int, steps: int, **kw: Any) -> dict[str, Any]:
        return {"name": name, "nfe": nfe, "steps": steps, "solver": self.cfg.solver, **kw}

    def fixed(self, name: str, nfe: int, steps: int):
        sp = self.spec(name, nfe, steps)
        d, _ = self.exp.fixed(sp, lambda: FixedSchedule(steps, self.sched, self.cfg.solver, times=heuristic(name, steps, self.sched),
                                                        data_shape=[2], name=name))
        return sp, d.double()

    def heuristics(self, nfe: int, steps: int) -> None:
        """uniform, and the candidate with the lowest validation MSE as best-heuristic."""
        self.evaluate("uniform", nfe, *self.fixed("uniform", nfe, steps))
        val = {}
        _, _, _, x0 = self.exp.data("val")
        for name in CANDIDATE_HEURISTICS:
            try:
                sp, d = self.fixed(name, nfe, steps)
            except (InputError, ValueError):
                continue
            val[name] = float((self.exp.samples(sp, d, "val") - x0).pow(2).mean(1).mean())
        best = min(val, key=val.get)
        self.best_heuristic[nfe], self.heuristic_val_mse[nfe] = best, val
        self.evaluate("best-heuristic", nfe, *self.fixed(best, nfe, steps))

    def train(self, name: str, nfe: int, sp: dict[str, Any], build: Callable[[Any], Any], starts: list[Any], cap: int,
              lr: float, **kw: Any):
        c = self.cfg
        splits = {k: kw.pop(k) for k in ("teacher", "val") if k in kw}
        cfg = TrainConfig(iterations=cap, batch_size=kw.pop("batch", c.batch_size), lr=lr, val_every=kw.pop("val_every", c.val_every),
                          patience=kw.pop("patience", c.patience), seed=c.seed, ckpt_every=max(50, c.val_every), **kw)
        d, info = self.exp.train(sp, build, cfg, starts, probe_iterations=max(25, cap // 10), **splits)
        self.train_info[f"{name}@{nfe}"] = {**info, "spec": sp}
        if not self.progress:
            self.log(f"  {name} NFE {nfe}: {info['iterations']} its ({info['stop_reason']}) in {info['seconds']:.0f}s, "
                     f"best val {info['best_val']:.4g}")
        return d.double()

    def god(self, nfe: int, steps: int, *, shift_scale: bool, free_last: bool, name: str) -> GlobalSchedule:
        c = self.cfg

        def build(init: str) -> GlobalSchedule:
            return GlobalSchedule(steps, self.sched, c.solver, data_shape=[2], init_times=heuristic(init, steps, self.sched),
                                  free_last=free_last, learn_shift=shift_scale, learn_scale=shift_scale, shift_bound=c.shift_bound,
                                  shift_mode=c.shift_mode, scale_bound=c.scale_bound, name=name).double()

        starts = ["uniform", "logsnr", "edm", "quadratic"][: c.global_starts]
        sp = self.spec(name, nfe, steps, free_last=free_last, shift_scale=shift_scale, lr=c.god_lr, cap=c.god_cap,
                       starts=starts, bounds=[c.shift_bound, c.scale_bound, c.shift_mode])
        return self.train(name, nfe, sp, build, starts, c.god_cap, c.god_lr)

    def indis(self, nfe: int, g: GlobalSchedule, name: str, warm: str) -> InstanceSchedule:
        c = self.cfg
        net = {**c.net, "seed": c.seed, **({"num_classes": 2} if self.handle.cond_kind == "class" else {})}

        def build(_: Any) -> InstanceSchedule:
            d = InstanceSchedule(g.steps, self.sched, c.solver, data_shape=[2], init_times=g.init_times, free_last=g.free_last,
                                 learn_shift=g.learn_shift, learn_scale=g.learn_scale, shift_bound=c.shift_bound,
                                 shift_mode=c.shift_mode, scale_bound=c.scale_bound, net=net, name=name).double()
            return d.warm_start(g)

        lr = _indis_lr(c.indis_lr, g.steps)
        sp = self.spec(name, nfe, g.steps, warm=warm, net=net, lr=lr, cap=c.indis_cap)
        return self.train(name, nfe, sp, build, [None], c.indis_cap, lr)

    def oracle(self, nfe: int, g: GlobalSchedule, phi: InstanceSchedule | None, name: str, warm: str):
        """Per-prior parameters on the oracle subset of the test priors, started at phi's output for each prior when
        phi is given (else at the global schedule), then optimised for each prior alone."""
        c = self.cfg
        n = min(c.oracle_subset, c.num_test)
        _, xT, cond, _ = self.exp.data("test")

        def build(_: Any) -> InstanceOracle:
            o = InstanceOracle.from_global(g, n)
            o.name = name
            if phi is not None:
                with torch.no_grad():
                    raw = phi.phi(xT[:n].to(phi.phi.head.weight.dtype), None if cond is None else cond[:n]).to(DT)
                    k, m = phi.n_tau, phi.steps
                    o.logits.copy_(raw[:, :k])
                    o.shift_logits.copy_(raw[:, k:k + m])
                    o.scale_logits.copy_(raw[:, k + m:])
            return o.double()

        sp = self.spec(name, nfe, g.steps, warm=warm, priors=n, lr=c.oracle_lr, cap=c.oracle_cap)
        d = self.train(name, nfe, sp, build, [None], c.oracle_cap, c.oracle_lr, batch=n, val_every=10, patience=3,
                       grad_clip=0.0, train_indices=list(range(n)), val_indices=list(range(n)), teacher="test", val="test")
        self.evaluate(name, nfe, sp, d, subset=True)

    def variant(self, nfe: int, steps: int, *, shift_scale: bool, free_last: bool, god: str, indis: str | None,
                oracle: str | None, evaluate_god: bool = True) -> None:
        g = self.god(nfe, steps, shift_scale=shift_scale, free_last=free_last, name=god)
        gspec = self.exp.run_dir(self._last_spec(god, nfe)).name
        if evaluate_god:
            self.evaluate(god, nfe, self._last_spec(god, nfe), g)
        d = None
        if indis:
            d = self.indis(nfe, g, indis, gspec)
            self.evaluate(indis, nfe, self._last_spec(indis, nfe), d)
        if oracle and self.cfg.oracle_subset:
            self.oracle(nfe, g, d, oracle, gspec if d is None else self.exp.run_dir(self._last_spec(indis, nfe)).name)

    def _last_spec(self, name: str, nfe: int) -> dict[str, Any]:
        return self.train_info[f"{name}@{nfe}"]["spec"]

    def run_nfe(self, nfe: int) -> None:
        c = self.cfg
        steps = steps_for_nfe(c.solver, nfe)
        self.heuristics(nfe, steps)
        self.variant(nfe, steps, shift_scale=True, free_last=False, god="global", indis="indis", oracle="instance-oracle")
        abl = set(c.ablations) if nfe in c.ablation_nfes else set()
        self.variant(nfe, steps, shift_scale=False, free_last=False, god="global-times-only",
                     indis="indis-no-shift-scale" if "indis-no-shift-scale" in abl else None,
                     oracle="instance-oracle-times-only" if "instance-oracle-times-only" in abl else None)
        if {"indis-free-last", "instance-oracle-free-last"} & abl:
            self.variant(nfe, steps, shift_scale=True, free_last=True, god="global-free-last",
                         indis="indis-free-last" if "indis-free-last" in abl else None,
                         oracle="instance-oracle-free-last" if "instance-oracle-free-last" in abl else None)
        if "instance-oracle-times-free-last" in abl:
            self.variant(nfe, steps, shift_scale=False, free_last=True, god="global-times-free-last", indis=None,
                         oracle="instance-oracle-times-free-last")


# ------------------------------------------------------------------------------------------------ entry point
def _config(quick: bool, seed: int, nfes: list[int] | None, classes: str, solver: str, overrides: dict[str, Any]) -> DemoConfig:
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
    cfg.nfes, cfg.ablation_nfes, cfg.ablations = tuple(cfg.nfes), tuple(cfg.ablation_nfes), tuple(cfg.ablations)
    if not cfg.nfes or min(cfg.nfes) < 1:
        raise InputError(f"NFEs must be >= 1, got {list(cfg.nfes)}")
    for name in ("num_train", "num_val", "num_test", "teacher_steps", "batch_size", "god_cap", "indis_cap", "oracle_cap",
                 "w2_points", "val_every", "global_starts"):
        if getattr(cfg, name) < 1:
            raise InputError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    return cfg


def _oracle_gap(demo: _Demo, nfes: list[int]) -> dict[str, dict[str, dict[str, float]]]:
    """MSE of global / INDIS / oracle on the oracle's own priors, per freedom setting."""
    pairs = {"times-only": ("global-times-only", "instance-oracle-times-only", "indis-no-shift-scale"),
             "times-free-last": ("global-times-free-last", "instance-oracle-times-free-last", None),
             "full": ("global", "instance-oracle", "indis"),
             "free-last": ("global-free-last", "instance-oracle-free-last", "indis-free-last")}
    ref = demo.exp.data("test")[3]
    mse = lambda m, n: float(((demo.subset_outputs[(m, n)] - ref[: demo.subset_outputs[(m, n)].shape[0]]) ** 2).mean(1).mean())  # noqa: E731
    gap: dict[str, dict[str, dict[str, float]]] = {}
    for n in nfes:
        for key, (g, o, i) in pairs.items():
            if (o, n) in demo.subset_outputs and (g, n) in demo.subset_outputs:
                gm, om = mse(g, n), mse(o, n)
                e = {"global": gm, "oracle": om, "gain": (gm - om) / gm if gm else float("nan"), "uniform": mse("uniform", n)}
                if i and (i, n) in demo.subset_outputs:
                    e["indis"] = mse(i, n)
                gap.setdefault(str(n), {})[key] = e
    return gap


def run_demo(out_dir: str | Path = "runs/demo", quick: bool = False, *, seed: int = 0, nfes: list[int] | None = None,
             classes: str = "A", solver: str = "euler", progress: bool = True, log: Callable[[str], None] | None = None,
             **overrides: Any) -> dict[str, Any]:
    """Run the synthetic study and write results.json, report.md and the PNG figures to `out_dir`.

    `quick` uses reduced sizes; `overrides` set any `DemoConfig` field (e.g. num_train, num_test, god_cap, indis_cap,
    oracle_cap, oracle_subset, ablation_nfes). Returns the results.json content plus "summary" and "paths"."""
    from . import demo_report as rep

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    cfg = _config(quick, seed, nfes, classes, solver, overrides)
    plan, skipped = [], []
    for n in cfg.nfes:
        try:
            steps_for_nfe(cfg.solver, n)
            plan.append(n)
        except InputError:
            skipped.append(n)
    if not plan:
        raise InputError(f"solver {cfg.solver} cannot realise any of the NFEs {list(cfg.nfes)} exactly")
    if skipped:
        log(f"demo: solver {cfg.solver} has no step count with NFE {skipped}; skipping those")
    if cfg.fig_nfe not in plan:
        cfg.fig_nfe = min(plan, key=lambda n: abs(n - 3))
    out = ensure_dir(out_dir)
    t_start = time.time()
    demo = _Demo(cfg, out, progress, log)
    log(f"[1/4] ground truth: {cfg.teacher_steps}-step {cfg.teacher_solver} for {cfg.num_train} training, {cfg.num_val} "
        f"validation and {cfg.num_test} test priors")
    demo.setup()
    log(f"[2/4] discretizations at NFE {plan} (solver {cfg.solver})")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan), desc="demo NFEs", unit="nfe", position=0)
    try:
        for n in plan:
            demo.run_nfe(n)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    log("[3/4] figures")
    files = rep.figures(demo, plan)
    settings = rep.settings_dict(demo, plan, _oracle_gap(demo, plan), time.time() - t_start)
    results = {"experiment": EXPERIMENT, "results": demo.rows, "settings": settings}
    log("[4/4] report")
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", rep.report(demo, plan, files, settings))
    summary = rep.summary_line(demo, out)
    return {**results, "summary": summary, "paths": {"results": str(out / "results.json"), "report": str(out / "report.md"),
                                                     **{k: str(out / v) for k, v in files.items()}}}
