"""`indis bench scaling`: where does instance-awareness pay? INDIS against GOD (a global schedule with INDIS's own
shift and scale freedoms) on exact Gaussian-mixture models (`scaling_models`) over dimension, number of modes,
condition kind and guidance, with the per-instance oracle, its reach in x_T, and the diagnostic's prediction
(`indis.diagnose`) checked against the trained ratio in every cell.

Per cell (d, K, condition, guidance, NFE, seed), on the experiment layer (disjoint train / validation / test priors):
- teacher: the mixture's exact probability-flow ODE by adaptive DOP853 (rtol 1e-7; its error against a 100x tighter
  solve is recorded per cell);
- GOD: starts logSNR, EDM, DMN probed, the best trained under the budget rule (validation every 25 iterations,
  plateau rate, patience 6, cap 3,000) at three learning rates, the best on validation, then polished as INDIS is
  trained and the polish kept where validation prefers it; INDIS: warm-started from that GOD, the same rule, the better
  of two rates; iPNDM without AFS for both; `--train-runs R` trains both R times (`scaling_runs`);
- test priors: INDIS/GOD teacher-MSE with a paired bootstrap interval; the oracle (from GOD) on the first
  `oracle_priors` test priors: oracle/GOD, the share of the gap INDIS closes, and the reach eps_half;
- the diagnostic on the training priors, as a user would run it (`indis.diagnose`), and its prediction errors.
Every cell is cached in its own folder; a rerun computes only what is missing. The command line: `scaling_cli`.
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..training.config import train_seed
from .scaling_runs import runs_block
from .scaling_variants import VARIANTS, variant_net

DIMS, COMPONENTS = (2, 8, 64, 256, 1024), (2, 10, 100)
CONDITIONS = (("none", None), ("class", 1.0), ("class", 4.0), ("embedding", 1.0), ("embedding", 4.0))
FULL = dict(dims=DIMS, components=COMPONENTS, conditions=CONDITIONS, nfes=(3, 5), seeds=(0,), train=2000, val=300,
            test=1000, oracle_priors=100, diagnose_priors=50, diagnose_iterations=300, cap=3000, patience=6, val_every=25,
            probe=50, batch=64, digits=True, multi_seed_dims=(64, 1024), multi_seeds=(0, 1, 2))
QUICK = dict(dims=(2, 64), components=(2, 10), conditions=(("none", None), ("class", 4.0)), nfes=(3,), seeds=(0,),
             train=300, val=100, test=200, oracle_priors=32, diagnose_priors=24, diagnose_iterations=150, cap=150,
             patience=3, val_every=15, probe=15, batch=64, digits=False, multi_seed_dims=(), multi_seeds=(0,))
# Learning rates are chosen per cell on validation for every trained method: where GOD's best start already has tiny
# errors, the largest rate leaves its basin at the first step and never returns (patience then keeps the untrained
# start), while INDIS, warm-started at a small rate, would fine-tune the shared schedule and look instance-aware.
GOD_LRS = (5e-2, 5e-3, 5e-4)
INDIS_LRS = (1e-3, 1e-4)  # INDIS's learning rate is chosen per cell on validation (its warm start can be sharp)
PROTOCOL = 2  # GOD polished, INDIS from the GOD kept (2026-12-04); results of another protocol are recomputed
ORACLE_LRS = (5e-3, 5e-5)  # the oracle (fitted and judged on the same priors, a hindsight bound) keeps the better


def cells(s: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (model, condition, guidance, NFE, seed) cell of the study."""
    out = []
    for d, K, (cond, g), nfe in itertools.product(s["dims"], s["components"], s["conditions"], s["nfes"]):
        seeds = s["multi_seeds"] if d in s["multi_seed_dims"] else s["seeds"]
        for seed in seeds:
            out.append({"model": "random", "d": d, "K": K, "condition": cond, "guidance": g, "nfe": nfe, "seed": seed})
    if s["digits"]:
        for (cond, g), nfe in itertools.product((("none", None), ("class", 1.0), ("class", 4.0)), s["nfes"]):
            out.append({"model": "digits-gmm", "d": 64, "K": None, "condition": cond, "guidance": g, "nfe": nfe, "seed": 0})
    return out


def cell_name(c: dict[str, Any]) -> str:
    g = "" if c["guidance"] is None else f"-g{c['guidance']:g}"
    k = f"K{c['K']}" if c["K"] is not None else "bic"
    return f"{c['model']}-d{c['d']}-{k}-{c['condition']}{g}-nfe{c['nfe']}-s{c['seed']}"


def handle_spec(c: dict[str, Any]) -> str:
    return f"scaling:{cell_name(c)}"


def handle_for(c: dict[str, Any]) -> Any:
    from .scaling_models import digits_mixture, mixture_handle, random_mixture

    spec = handle_spec(c)
    if c["model"] == "random":
        return mixture_handle(random_mixture(c["d"], c["K"]), c["condition"], c["guidance"], spec)
    return _fitted_handle(digits_mixture()[0], c["condition"], c["guidance"], spec)


def _fitted_handle(gm: Any, condition: str, guidance: float | None, spec: str) -> Any:
    from ..denoiser import Denoiser
    from ..models import ModelHandle
    from ..schedules import EDM

    base = gm.x0_fn(EDM())

    def fn(x, t, cond=None):
        c = None if cond is None else torch.where(cond >= 10, torch.full_like(cond, -1), cond)
        return base(x, t, c)

    den = Denoiser(fn, EDM(), "x0")
    if condition == "none":
        return ModelHandle(den, (64,), spec, default_heuristic="edm")
    h = ModelHandle(den, (64,), spec, "class", 10, default_heuristic="edm", meta={"uncond": torch.tensor([10])})
    return h.with_guidance(guidance) if guidance not in (None, 1.0) else h


def teacher_accuracy(handle: Any, probe: int = 64) -> dict[str, Any]:
    """The exact teacher (DOP853, rtol 1e-7) against a 100x tighter solve on `probe` priors: its relative error."""
    from ..priors import class_labels, prior_noise, prior_std
    from ..exact_ode import exact_ode

    sched = handle.schedule
    x_T = prior_noise(range(probe), 987654, handle.data_shape, prior_std(sched), torch.float64)
    cond = class_labels(range(probe), 987654, handle.num_classes) if handle.cond_kind == "class" else None
    if handle.cond_kind == "table":
        cond = handle.cond_table[torch.arange(probe) % handle.cond_table.shape[0]]
    a = exact_ode(handle.denoiser, x_T, sched.t_max, sched.t_min, cond, rtol=1e-7)
    b = exact_ode(handle.denoiser, x_T, sched.t_max, sched.t_min, cond, rtol=1e-9)
    return {"solver": "exact (DOP853, rtol 1e-7)", "rel_error_vs_rtol_1e-9": float((a - b).norm() / b.norm())}


def eps_half(curve: dict[str, float]) -> float | None:
    """The neighbour distance at which the kept share of the oracle's gain first falls to 0.5 (log-linear)."""
    pts = sorted((float(k), v) for k, v in curve.items())
    prev = (0.0, 1.0)
    for e, v in pts:
        if v <= 0.5:
            (e0, v0) = prev
            if e0 == 0.0:
                return e
            f = (v0 - 0.5) / (v0 - v) if v0 != v else 0.0
            return float(np.exp(np.log(e0) + f * (np.log(e) - np.log(e0))))
        prev = (e, v)
    return None  # never falls to half within the grid


def _exp_config(c: dict[str, Any], s: dict[str, Any]) -> Any:
    from ..experiment import ExperimentConfig

    return ExperimentConfig(model=handle_spec(c), seed=c["seed"], sizes={k: s[k] for k in ("train", "val", "test")},
                            teacher_steps=1, teacher_solver="exact", dtype="float64")


def _experiment(folder: Path, h: Any, c: dict[str, Any], s: dict[str, Any], progress: bool, device: str = "cpu") -> Any:
    from ..experiment import Experiment

    return Experiment(folder, h, _exp_config(c, s), device=device, dtype=torch.float64, progress=progress,
                      log=lambda m: None, teacher_batch=250)


def _siblings(c: dict[str, Any], s: dict[str, Any]) -> list[dict[str, Any]]:
    """The study's other cells of the same model (mixture, condition, guidance): other NFEs and seeds."""
    seeds = sorted(set(s["seeds"]) | set(s["multi_seeds"]))
    return [dict(c, nfe=n, seed=k) for n in s["nfes"] for k in seeds if (n, k) != (c["nfe"], c["seed"])]


def _adopt(exp: Any, root: Path, c: dict[str, Any], s: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """What this cell can take from its siblings instead of computing it: the teacher's accuracy (a property of the
    model alone) and the teacher sets of the same seed at another NFE (same mixture, same priors, same exact ODE)."""
    from ..io import load_json

    sib = _siblings(c, s)
    acc = next((n for n in map(cell_name, sib) if (root / n / "teacher_accuracy.json").is_file()), None)
    teachers = [f"{cell_name(b)}/{sp}" for b in sib if b["seed"] == c["seed"]
                for sp in exp.adopt_teachers(root / cell_name(b), _exp_config(b, s))]
    info = load_json(root / acc / "teacher_accuracy.json") if acc else None
    return info, {"teacher_accuracy": acc, "teachers": teachers}


def _tcfg(c: dict[str, Any], s: dict[str, Any], lr: float, run: int = 0) -> Any:
    from ..training import TrainConfig

    return TrainConfig(iterations=s["cap"], batch_size=s["batch"], lr=lr, patience=s["patience"], val_every=s["val_every"],
                       seed=train_seed(c["seed"], run), val_indices=list(range(s["val"])), ckpt_every=max(50, s["val_every"]))


def _budget(s: dict[str, Any]) -> dict[str, Any]:
    return {k: s[k] for k in ("cap", "patience", "val_every", "batch", "probe")}  # in every spec: a new budget retrains


def _god(exp: Any, h: Any, c: dict[str, Any], s: dict[str, Any], run: int = 0) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """GOD: at each of GOD_LRS three starts probed and the best trained under the budget rule; the lowest validation
    loss wins; then polished as INDIS is trained (warm-started from it at INDIS_LRS, the same rule), so that INDIS's
    second stage of training is no advantage of its own: the polish is kept where its validation loss is lower, and
    INDIS and the oracle start from the GOD kept. Returns (its spec, GOD, info) (cached). `run`: training run
    (`training.config.train_seed`; run 0 is the cell's own)."""
    from ..experiment import best_rate
    from ..methods import global_starts, learned
    from ..solvers import steps_for_nfe

    N = steps_for_nfe("ipndm", c["nfe"], False)

    def train(lr: float):  # the first rate's spec has no "lr" key: runs cached before the choice existed stay valid
        gsp = {"method": "god", "steps": N, "nfe": c["nfe"], "train": _budget(s), **({"lr": lr} if lr != GOD_LRS[0] else {}),
               **({"run": run} if run else {})}
        god, ginfo = exp.train(gsp, lambda init: learned(h, "god", N, "ipndm", init=init), _tcfg(c, s, lr, run),
                               global_starts(h, 3, first="logsnr"), probe_iterations=s["probe"])
        return gsp, god, ginfo

    gsp, god, ginfo, choice = best_rate(GOD_LRS, train)
    psp, pol, pinfo, pchoice = _from_god(exp, h, c, s, gsp, "god", run=run)
    kept = pinfo["best_val"] < ginfo["best_val"]
    polish = {"lr_choice": pchoice, "kept": kept, **{k: pinfo[k] for k in ("best_val", "best_iter", "iterations")}}
    return (psp, pol) if kept else (gsp, god), {**ginfo, "lr_choice": choice, "polish": polish}


def god_val(info: dict[str, Any]) -> float:
    """The validation loss of the GOD `_god` kept (its polish where validation preferred it), from `_god`'s info."""
    return min(info["best_val"], info["polish"]["best_val"])


def _from_god(exp: Any, h: Any, c: dict[str, Any], s: dict[str, Any], gsp: dict[str, Any], method: str = "indis",
              net: dict[str, Any] | None = None, run: int = 0) -> tuple[dict[str, Any], Any, dict[str, Any], dict[str, float]]:
    """`method` ("indis", or "god": GOD's polish) warm-started from the GOD run `gsp` at each of INDIS_LRS under the
    budget rule; the lowest validation loss wins (cached). `net`: phi options (a variant gets its own runs)."""
    from ..experiment import best_rate
    from ..methods import learned
    from ..solvers import steps_for_nfe

    N = steps_for_nfe("ipndm", c["nfe"], False)
    seed = train_seed(c["seed"], run)
    kw = {"seed": seed, "net": net} if method == "indis" else {}

    def train(lr: float):
        sp = {"method": method, "steps": N, "nfe": c["nfe"], "warm": exp.run_dir(gsp).name, "lr": lr, "train": _budget(s),
              **({"net": net} if net else {}), **({"run": run} if run else {})}
        torch.manual_seed(seed)
        d, info = exp.train(sp, lambda init: learned(h, method, N, "ipndm", init=init, **kw), _tcfg(c, s, lr, run),
                            [str(exp.run_dir(gsp) / "disc")])
        return sp, d, info

    return best_rate(INDIS_LRS, train)


def _indis(exp: Any, h: Any, c: dict[str, Any], s: dict[str, Any], gsp: dict[str, Any],
           net: dict[str, Any] | None = None, run: int = 0) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """INDIS warm-started from GOD at each of INDIS_LRS; the lowest validation loss wins (cached). `net`: phi options
    (a variant gets its own runs); `run`: training run."""
    return _from_god(exp, h, c, s, gsp, "indis", net, run)[:3]


def _test_mse(exp: Any, runs: dict[str, tuple[dict[str, Any], Any]]) -> dict[str, np.ndarray]:
    """Per-prior teacher-MSE on the test priors of each named (spec, discretization) (samples cached per run)."""
    from ..losses import mse as per_prior_mse

    x0 = exp.data("test")[3]
    return {k: per_prior_mse(exp.samples(sp, d, "test"), x0).cpu().numpy() for k, (sp, d) in runs.items()}


def phi_variant(exp: Any, h: Any, c: dict[str, Any], s: dict[str, Any], gsp: dict[str, Any],
                mse: dict[str, np.ndarray], key: str) -> dict[str, Any]:
    """INDIS with phi's options of variant `key` (`variant_net`), warm-started from the GOD run `gsp` and trained as
    INDIS is: its test ratio to GOD and to INDIS (per-prior test MSE of both in `mse`), with paired intervals."""
    from ..metrics.stats import per_prior_view, ratio_ci

    dsp, dd, dinfo = _indis(exp, h, c, s, gsp, net=variant_net(key, c["d"]))
    m = _test_mse(exp, {"d": (dsp, dd)})["d"]
    return {"ratio": float(m.mean() / mse["god"].mean()), "ratio_ci": ratio_ci(m, mse["god"]),
            "vs_indis": float(m.mean() / mse["indis"].mean()), "vs_indis_ci": ratio_ci(m, mse["indis"]),
            "mse": float(m.mean()), "per_prior": per_prior_view(m, mse["god"]), "train": dinfo}


def _diagnosis(h: Any, exp: Any, c: dict[str, Any], s: dict[str, Any], ratio: float) -> dict[str, Any]:
    """The diagnostic on the training priors, as a user would run it, and its errors against the trained `ratio`."""
    from ..diagnose import diagnose

    d = diagnose(h, exp.teacher("train"), c["nfe"], priors=s["diagnose_priors"], train_size=s["train"], seed=c["seed"],
                 iterations=s.get("diagnose_iterations", 300), curve_iterations=s["cap"], device=exp.device)
    return {"diagnosis": d.as_dict(), "prediction_error": float(d.predicted_ratio - ratio),
            "reach_prediction_error": float(d.reach_ratio - ratio)}


def open_cell(folder: Path, settings: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any], Any, Any,
                                                                          tuple[dict[str, Any], Any]]:
    """A finished cell reopened for a study: (cell, settings, handle, experiment, (GOD's spec, GOD)), GOD from the
    cell's cache (`settings`: the bench settings it ran under, the full study's unless given)."""
    from ..io import load_json

    c = load_json(folder / "result.json")["cell"]
    s = dict(FULL if settings is None else settings)
    h = handle_for(c)
    exp = _experiment(folder, h, c, s, False)
    return c, s, h, exp, _god(exp, h, c, s)[0]


def cached_result(folder: Path, s: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The cell's cached result.json if it was computed under the current PROTOCOL and, given settings `s`, under their
    training budget (cap, patience, validation interval, as INDIS's run records them); others are recomputed."""
    from ..io import load_json

    res = load_json(folder / "result.json") if (folder / "result.json").is_file() else None
    if res is None or res.get("protocol") != PROTOCOL:
        return None
    ran = res.get("train", {}).get("indis", {})
    if s is not None and any(ran.get(k) != s[k] for k in ("cap", "patience", "val_every")):
        return None
    return res


def outdated_parts(res: dict[str, Any]) -> tuple[list[str], bool]:
    """(phi's variants missing from a cached result, and "per_prior" when INDIS's per-prior view is; the diagnosis
    made by an older procedure): what run_cell adds to a cached result, reusing every run."""
    from ..diagnose import VERSION as DIAGNOSE_VERSION

    missing = [k for k in VARIANTS if "per_prior" not in (res.get(k) or {})]
    missing += ["per_prior"] if "per_prior" not in res else []
    return missing, res["diagnosis"]["extra"].get("version") != DIAGNOSE_VERSION


def reportable(res: dict[str, Any] | None) -> bool:
    """A cached result the report can use: the variants added after INDIS-D may be missing (left blank there), not
    INDIS-D, the per-prior view or a diagnosis by the current procedure."""
    if res is None:
        return False
    missing, rediagnose = outdated_parts(res)
    return not rediagnose and not {"denoised_input", "per_prior"} & set(missing)


def run_cell(c: dict[str, Any], s: dict[str, Any], root: Path, progress: bool = False, log=print,
             device: str = "cpu") -> dict[str, Any]:
    """One cell of the study (cached in root/<cell name>/result.json); `device`: where the mixture is evaluated and
    every schedule trained (the results do not depend on it beyond round-off)."""
    from ..diagnose import kept_curve, kept_share, teacher_fn
    from ..discretizations.base import InstanceOracle
    from ..io import atomic_write_json, load_json
    from ..losses import mse as per_prior_mse
    from ..metrics.stats import per_prior_view, ratio_ci
    from ..priors import index_cond, prior_std
    from ..solvers import steps_for_nfe
    from ..training import TrainConfig

    folder = root / cell_name(c)
    res = cached_result(folder, s)  # older protocols' or other budgets' results are recomputed below, reusing runs
    if res is not None:
        missing, rediagnose = outdated_parts(res)
        if missing or rediagnose:
            h = handle_for(c)
            exp = _experiment(folder, h, c, s, progress, device)
            if missing:
                (gsp, god), _ = _god(exp, h, c, s)
                isp, ind, _ = _indis(exp, h, c, s, gsp)
                mse = _test_mse(exp, {"god": (gsp, god), "indis": (isp, ind)})
                res["per_prior"] = per_prior_view(mse["indis"], mse["god"])
                res.update({k: phi_variant(exp, h, c, s, gsp, mse, k) for k in VARIANTS if k in missing})
            if rediagnose:
                res.update(_diagnosis(h, exp, c, s, res["ratio"]))
            atomic_write_json(folder / "result.json", res)
        return res
    t0 = time.time()
    h = handle_for(c)
    exp = _experiment(folder, h, c, s, progress, device)
    sib_acc, adopted = _adopt(exp, root, c, s)
    acc_file = folder / "teacher_accuracy.json"
    ts_info = load_json(acc_file) if acc_file.is_file() else sib_acc or teacher_accuracy(h)
    atomic_write_json(acc_file, ts_info)
    N = steps_for_nfe("ipndm", c["nfe"], False)
    (gsp, god), ginfo = _god(exp, h, c, s)
    isp, ind, iinfo = _indis(exp, h, c, s, gsp)
    _, xT, cond, x0 = exp.data("test")
    mse = _test_mse(exp, {"god": (gsp, god), "indis": (isp, ind)})
    P = min(s["oracle_priors"], s["test"])
    oracles = []
    for lr in ORACLE_LRS:
        osp = {"method": "oracle", "steps": N, "nfe": c["nfe"], "priors": P, "lr": lr, "train": _budget(s),
               "warm": exp.run_dir(gsp).name}
        ocfg = TrainConfig(iterations=max(200, s["cap"] // 3), batch_size=P, lr=lr, patience=10, val_every=10,
                           train_indices=list(range(P)), val_indices=list(range(P)), grad_clip=0.0, seed=c["seed"])
        oracles.append(exp.train(osp, lambda _: InstanceOracle.from_global(god, P), ocfg, [None], teacher="test", val="test"))
    orc, _ = min(oracles, key=lambda o: o[1]["best_val"])
    rows = torch.arange(P)
    cP = index_cond(cond, rows)
    solve = teacher_fn(h.denoiser, exp.teacher("test"))
    gains = kept_share(h.denoiser, god, orc, xT[:P], cP, x0[:P], solve, prior_std(h.schedule), seed=c["seed"])
    with torch.no_grad():
        orc_mse = per_prior_mse(orc.sample(h.denoiser, xT[:P], cP, rows), x0[:P]).cpu().numpy()
    curve = kept_curve(gains)
    g, i, o = mse["god"][:P].mean(), mse["indis"][:P].mean(), orc_mse.mean()
    ratio = float(mse["indis"].mean() / mse["god"].mean())
    diag = _diagnosis(h, exp, c, s, ratio)
    res = {"cell": c, "name": cell_name(c), "protocol": PROTOCOL, "teacher": ts_info, "god_mse": float(mse["god"].mean()),
           "indis_mse": float(mse["indis"].mean()), "ratio": ratio, "ratio_ci": ratio_ci(mse["indis"], mse["god"]),
           "per_prior": per_prior_view(mse["indis"], mse["god"]),
           "oracle_over_god": float(o / g), "gap_closed": float((g - i) / (g - o)) if g > o else None,
           "kept": curve, "eps_half": eps_half(curve), **diag, "train": {"god": ginfo, "indis": iinfo},
           **{k: phi_variant(exp, h, c, s, gsp, mse, k) for k in VARIANTS},
           "adopted": adopted, "seconds": round(time.time() - t0, 1)}
    atomic_write_json(folder / "result.json", res)
    log(f"{cell_name(c)}: INDIS/GOD {ratio:.3f} {res['ratio_ci']}, oracle/GOD {res['oracle_over_god']:.3f}, predicted "
        f"{diag['diagnosis']['predicted_ratio']:.3f} ({res['seconds']:.0f} s)")
    return res


def training_runs(c: dict[str, Any], s: dict[str, Any], root: Path, runs: int, progress: bool = False, log=print,
                  device: str = "cpu", strict: bool = True) -> dict[str, Any]:
    """The finished cell's GOD and INDIS trained in `runs` runs (run 0 its own, others under `train_seed`), scored on its
    test priors: `scaling_runs.runs_block` stored in result.json as "training_runs" (runs cached). Run 0 must give the
    stored ratio unless not `strict` (runs deleted: run 0 retrained is a draw of its own, "run0_is_result" False)."""
    from ..io import atomic_write_json, load_json

    folder = root / cell_name(c)
    res = load_json(folder / "result.json")
    if (res.get("training_runs") or {}).get("count") == runs:
        return res
    h = handle_for(c)
    exp = _experiment(folder, h, c, s, progress, device)
    errs, kept = [], []
    for run in range(runs):
        (gsp, god), _ = _god(exp, h, c, s, run)
        isp, ind, info = _indis(exp, h, c, s, gsp, run=run)
        errs.append(_test_mse(exp, {"indis": (isp, ind), "god": (gsp, god)}))
        kept.append(info["best_iter"] == 0)
    first = float(errs[0]["indis"].mean() / errs[0]["god"].mean())
    same = abs(first - res["ratio"]) <= 1e-6 * abs(res["ratio"])  # run 0's samples are cached: only a stale cache differs
    if strict and not same:
        raise InputError(f"{folder}: run 0 gives INDIS/GOD {first:.6g}, result.json {res['ratio']:.6g}; the cell's cached "
                         "runs are not the ones its result came from: recompute the cell (move result.json away)")
    res["training_runs"] = {**runs_block(np.stack([e["indis"] for e in errs]), np.stack([e["god"] for e in errs]), kept,
                                         res["diagnosis"]["predicted_ratio"]), "run0_is_result": same}
    atomic_write_json(folder / "result.json", res)
    log(f"{cell_name(c)}: INDIS/GOD in {runs} runs {np.round(res['training_runs']['ratios'], 3)}")
    return res
