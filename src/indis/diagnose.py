"""Will instance-awareness pay on this model? A diagnostic that predicts INDIS's gain over the best global schedule
(GOD) from a few hundred teacher pairs, before the full teacher set is made and INDIS trained: it fits the
per-instance oracle on a few priors and measures how far its gain reaches in x_T, fits group schedules, and trains
phi on subsets to extrapolate its learning curve.

Why it can work (issue 16's study): phi(x_T, c) is a smooth function learned from M training priors, so it can only
learn the part of the per-prior optimum that stays useful at the distance of the nearest training prior. On P priors:
1. a global schedule is fitted to them (GOD's parameterisation and starts, the best of three learning rates, for the
   solver INDIS would use: iPNDM without AFS unless told otherwise) and the oracle (one set of times, shift and
   scale per prior) is fitted from it: oracle/GOD is the ceiling of any instance-aware schedule;
2. reach: prior i's oracle parameters are applied to neighbours x' = sqrt(1 - eps^2) x_T + eps z (z a fresh prior
   draw, so x' is a prior; the condition is kept) and scored against x''s own teacher solution beside the global
   schedule: kept(eps) is the share of the oracle's gain that survives at distance eps;
3. eps_nn: the distance (same measure) from a prior to the nearest of M training priors in d dimensions, by sampling;
4. reach prediction: INDIS closes gap = clip(kept(eps_nn), 0, 1) of the oracle's gap, INDIS/GOD = 1 - gap (1 -
   oracle/GOD), with a bootstrap interval over the P priors (`reach_ratio`);
5. cluster prediction (fitted where the teacher set is too small for step 6, elsewhere only when asked: beside the
   learning curve it is context, and its fits took about half the diagnostic's time on the exact mixtures): the
   teacher endpoints of `cluster_priors` priors are grouped by
   k-means into `CLUSTERS` groups on one half, one schedule per group and one shared schedule are fitted from the
   global one on that half in the same way (learning rate and early stop on the next quarter), and the last quarter
   (each prior assigned to the group of its endpoint) is scored: group schedules / shared schedule is the gain of a
   schedule that knows which mode x_T heads for, the part of the oracle's gain a smooth phi(x_T, c) can learn from
   many priors; where the condition takes 2 to MAX_CONDITION_GROUPS values (class labels, one embedding per class),
   one schedule per condition value is fitted and scored the same way (the condition prediction: on a mixture fitted
   to the digits INDIS's whole gain, 0.59x GOD, is a per-class schedule that four endpoint groups cannot express);
   the group prediction (`group_prediction` in `extra`) is the one of the two with the lower upper bound (picking the
   more favourable of two is slightly optimistic), capped at 1 (INDIS keeps its GOD warm start unless validation
   improves on it);
6. learning-curve prediction (`diagnose_curve.curve_ratio`, the reported `predicted_ratio` wherever the teacher set
   holds at least CURVE_MIN priors), the bench's protocol on subsets: GOD is trained on the first 1,000 priors (fewer in a set
   smaller than 1,600) from its three starts at three learning rates and polished, phi (INDIS's network, warm-started
   from that GOD, INDIS's learning rates and budget rule) is trained on the first 500 and 1,000, and on a scored
   block (the priors left, 300 to 2,000) r(n) = phi_n / GOD is extrapolated as r_inf + a / n to the M training
   priors (from 250 and 500 priors the curve's first point often sits where phi has not started to learn, and the
   extrapolation overshoots: 0.74 predicted for a trained 0.81 on the K = 10 class CFG 4 cell). The oracle's reach
   (2-4) and the groups (5) missed the guided gains of the d = 64 mixtures (trained 0.70-0.81x GOD, predicted
   0.88-0.97x) because there the learnable part is a smooth function of x_T per condition (the first step's shift
   follows D(x_T, t_max)) that no neighbour of one prior and no group constant expresses, and that phi learns only
   from a few hundred priors on (none from 100, 0.81x from 250, 0.76x from 500, 0.72x from 2,000);
7. recommendation: with the learning curve, INDIS when its whole interval lies below 0.98; without it (a small
   teacher set), INDIS when the whole interval of the reach or the group prediction does; GOD whenever the global
   fit is already exact (teacher-MSE below 1e-6 of the endpoints' variance: nothing is left to gain).
`indis eval --diagnose` runs it; `indis bench scaling` checks its predictions against trained INDIS / GOD ratios.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from .denoiser import Cond, Denoiser
from .diagnose_curve import CURVE_CAP, CURVE_SIZES, GLOBAL_STARTS, PROBE, Device, _best_global, curve_ratio, curve_rows
from .errors import InputError
from .losses import mse
from .metrics.stats import ratio_ci
from .priors import index_cond
from .solvers import sample

EPS_GRID = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9, 1.0)
RECOMMEND_BELOW = 0.98  # recommend INDIS when the predicted ratio's whole interval is below this
EXACT_BELOW = 1e-6  # a global schedule whose teacher-MSE is below this share of the endpoints' variance is exact
#: GOD's worst 1% of priors carrying more than this share of its teacher-MSE: a heavy tail (a few priors reach the
#: wrong mode; in `indis bench scaling` INDIS rarely paid there). Context beside the prediction, not part of it.
HEAVY_TAIL = 0.2
#: of the diagnostic's procedure (multi-start global fit, condition groups, phi's learning curve): cached diagnoses
#: of an older version are redone
VERSION = 6
CLUSTERS = 4  # groups of teacher endpoints for the cluster prediction
STAGES = ("global schedule and oracle", "oracle's reach", "shared schedule", "endpoint groups", "condition groups",
          "phi on subsets")
GROUP_STAGES = STAGES[2:5]  # step 5's stages, skipped unless the group schedules are fitted
MAX_CONDITION_GROUPS = 32  # the condition prediction: one schedule per distinct condition value, up to this many
FIT_LRS = (5e-3, 5e-4, 5e-5)  # learning rates of the group fits (from a fitted global schedule: small steps)


@dataclass
class Diagnosis:
    """What the diagnostic measured and predicts (see the module docstring)."""

    priors: int
    oracle_over_global: float
    kept: dict[str, float]
    eps_nn: float
    train_size: int
    gap_closed: float
    reach_ratio: float
    reach_ci: list[float]
    predicted_ratio: float
    predicted_ci: list[float]
    recommendation: str
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def neighbours(x_T: Tensor, eps: float, std: float, seed: int) -> Tensor:
    """x' = sqrt(1 - eps^2) x_T + eps * std * z with z ~ N(0, I) from `seed`: again a draw from the prior."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(x_T.shape, generator=g, dtype=torch.float64).to(x_T.device, x_T.dtype)
    return math.sqrt(max(0.0, 1 - eps * eps)) * x_T + eps * std * z


def nearest_eps(dim: int, train_size: int, queries: int = 128, seed: int = 0, chunk: int = 4096) -> float:
    """Median over random priors of the distance eps = sqrt(1 - cos^2) to the nearest of `train_size` other priors
    in `dim` dimensions (cos: the largest cosine; a neighbour at eps has cos = sqrt(1 - eps^2) on average)."""
    if dim < 1 or train_size < 1:
        raise InputError(f"nearest_eps needs dim >= 1 and train_size >= 1, got {dim}, {train_size}")
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(queries, dim, generator=g, dtype=torch.float64), dim=1)
    best = torch.full((queries,), -1.0, dtype=torch.float64)
    for start in range(0, train_size, chunk):
        n = min(chunk, train_size - start)
        t = torch.nn.functional.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)
        best = torch.maximum(best, (q @ t.T).max(1).values)
    return float(torch.sqrt((1 - best.clamp(-1, 1) ** 2).clamp_min(0)).median())


def teacher_fn(den: Denoiser, teacher: Any):
    """The teacher set's own solver as a function (x_T, cond) -> x0, for new priors (the neighbours)."""
    from .exact_ode import exact_ode
    from .teacher import EXACT

    times = torch.tensor(teacher.config.times, dtype=torch.float64)
    if teacher.config.solver == EXACT:
        return lambda x, c: exact_ode(den, x, float(times[0]), float(times[-1]), c).to(x)
    return lambda x, c: sample(den, x, times.to(x), solver=teacher.config.solver, cond=c, afs=teacher.config.afs)


def kept_share(den: Denoiser, god: Any, oracle: Any, x_T: Tensor, cond: Cond, x0: Tensor, solve: Any, std: float,
               eps_grid: Sequence[float] = EPS_GRID, seed: int = 0) -> dict[str, Any]:
    """Per-prior gains at each eps: gain_i(eps) = mse_global(x'_i) - mse_oracle_i(x'_i) (oracle parameters of prior i
    on its neighbour x'_i), and at eps = 0 on the priors themselves."""
    idx = torch.arange(x_T.shape[0])
    out: dict[str, Any] = {}
    with torch.no_grad():
        base = mse(god.sample(den, x_T, cond), x0) - mse(oracle.sample(den, x_T, cond, idx), x0)
        out["0"] = base.cpu().numpy()
        for k, eps in enumerate(eps_grid):
            xn = neighbours(x_T, eps, std, seed + 1000 * (k + 1))
            tn = solve(xn, cond)
            g = mse(god.sample(den, xn, cond), tn) - mse(oracle.sample(den, xn, cond, idx), tn)
            out[f"{eps:g}"] = g.cpu().numpy()
    return out


def kept_curve(gains: dict[str, np.ndarray], rows: np.ndarray | None = None) -> dict[str, float]:
    """kept(eps): the mean gain at each eps over the mean gain on the priors themselves (0 where there is no gain)."""
    rows = np.arange(len(gains["0"])) if rows is None else rows
    g0 = gains["0"][rows].mean()
    return {k: float(gains[k][rows].mean() / g0) if g0 > 0 else 0.0 for k in gains if k != "0"}


def predict(gains: dict[str, np.ndarray], god_mse: np.ndarray, orc_mse: np.ndarray, eps_nn: float, *,
            replicates: int = 1000, seed: int = 0) -> tuple[float, float, list[float], dict[str, float]]:
    """(gap closed, predicted INDIS/GOD, its 95% bootstrap interval over priors, kept(eps) curve)."""
    eps = np.array([float(k) for k in gains if k != "0"])

    def at(rows: np.ndarray) -> tuple[float, float, dict[str, float]]:
        curve = kept_curve(gains, rows)
        kept = float(np.interp(eps_nn, eps, [curve[f"{e:g}"] for e in eps]))
        gap = min(1.0, max(0.0, kept))
        ratio = 1 - gap * (1 - orc_mse[rows].mean() / god_mse[rows].mean())
        return gap, ratio, curve

    n = len(god_mse)
    gap, ratio, curve = at(np.arange(n))
    rng = np.random.default_rng(seed)
    reps = [at(rng.integers(0, n, n))[1] for _ in range(replicates)]
    return gap, ratio, [float(np.quantile(reps, 0.025)), float(np.quantile(reps, 0.975))], curve


def recommend(reach_ci: Sequence[float], group_ci: Sequence[float], global_error: float = 1.0) -> str:
    """INDIS where either prediction's whole interval lies below RECOMMEND_BELOW (the reach prediction sees a gain that
    is smooth in x_T, the group prediction one tied to the mode x_T heads for, and phi can learn either), unless the
    global schedule is already exact (`global_error`: its teacher-MSE over the endpoints' variance, below EXACT_BELOW).
    The same interval passed twice decides on that one prediction alone (the learning curve's)."""
    if global_error < EXACT_BELOW:
        return "GOD"
    return "INDIS" if min(reach_ci[1], group_ci[1]) < RECOMMEND_BELOW else "GOD"


def _fit_groups(den: Denoiser, god: Any, x_T: Tensor, cond: Cond, x0: Tensor, groups: Tensor, k: int, fit: Tensor,
                val: Tensor, iterations: int) -> Any:
    """One schedule per group, started at `god`, fitted on rows `fit` at each of FIT_LRS; the iterate and rate with
    the lowest loss on rows `val` are kept."""
    from .discretizations.base import InstanceOracle

    def loss(per: Any, rows: Tensor) -> Tensor:
        return mse(per.sample(den, x_T[rows], index_cond(cond, rows), groups[rows]), x0[rows]).sum()

    best: tuple[float, Any] | None = None
    for lr in FIT_LRS:
        per = InstanceOracle.from_global(god, k)
        params = [p for p in per.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=lr)
        with torch.no_grad():
            v0, state = float(loss(per, val)), [p.detach().clone() for p in params]
        for it in range(1, iterations + 1):
            opt.zero_grad(set_to_none=True)
            loss(per, fit).backward()
            opt.step()
            if it % 10 == 0:
                with torch.no_grad():
                    v = float(loss(per, val))
                if v < v0:
                    v0, state = v, [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, s_ in zip(params, state):
                p.copy_(s_)
        if best is None or v0 < best[0]:
            best = (v0, per)
    return best[1]


def cluster_ratio(den: Denoiser, god: Any, x_T: Tensor, cond: Cond, x0: Tensor, *, k: int = CLUSTERS, seed: int = 0,
                  iterations: int = 300, replicates: int = 1000, shared: np.ndarray | None = None) -> tuple[float, list[float]]:
    """Group schedules (one per k-means group of the teacher endpoints, fitted on the first half) against one schedule
    for all (`group_ratio`)."""
    from sklearn.cluster import KMeans

    n = x_T.shape[0]
    if n - (3 * n) // 4 < 2 * k:
        raise InputError(f"the cluster prediction needs at least {8 * k} priors, got {n}")
    feats = x0.reshape(n, -1).double().cpu().numpy()
    km = KMeans(k, n_init=4, random_state=seed).fit(feats[: n // 2])
    groups = torch.as_tensor(km.predict(feats), dtype=torch.long, device=x_T.device)
    return group_ratio(den, god, x_T, cond, x0, groups, k, seed=seed, iterations=iterations, replicates=replicates,
                       shared=shared)


def condition_groups(cond: Cond, max_groups: int = MAX_CONDITION_GROUPS) -> tuple[Tensor, int] | None:
    """(group index per prior, number of groups) for a condition with 2..max_groups distinct values (class labels, or
    identical embedding rows such as one prompt per class); None for no condition, a dict, or too many values."""
    if cond is None or not isinstance(cond, Tensor):
        return None
    flat = cond.reshape(cond.shape[0], -1) if cond.dim() > 1 else cond
    _, inverse = torch.unique(flat.cpu(), dim=0 if flat.dim() > 1 else None, return_inverse=True)
    k = int(inverse.max()) + 1
    return (inverse.long().to(cond.device), k) if 2 <= k <= max_groups else None


def scored_mse(den: Denoiser, god: Any, x_T: Tensor, cond: Cond, x0: Tensor, groups: Tensor, k: int,
               iterations: int = 300) -> np.ndarray:
    """Per-prior teacher-MSE on the last quarter of the priors of one schedule per group, fitted from `god` on the
    first half (early stopping and learning rate on the next quarter)."""
    n = x_T.shape[0]
    a, b = n // 2, (3 * n) // 4
    fit, val, score = torch.arange(a), torch.arange(a, b), torch.arange(b, n)
    per = _fit_groups(den, god, x_T, cond, x0, groups, k, fit, val, iterations)
    with torch.no_grad():
        return mse(per.sample(den, x_T[score], index_cond(cond, score), groups[score]), x0[score]).cpu().numpy()


def group_ratio(den: Denoiser, god: Any, x_T: Tensor, cond: Cond, x0: Tensor, groups: Tensor, k: int, *, seed: int = 0,
                iterations: int = 300, replicates: int = 1000, shared: np.ndarray | None = None) -> tuple[float, list[float]]:
    """One schedule per group against one schedule for all, both fitted from `god` the same way (`scored_mse`):
    teacher-MSE ratio and its 95% bootstrap interval. The shared schedule gets the same fit so that a `god` short of
    its optimum does not pass for an instance gain (`shared`: its scored MSE, when already computed)."""
    mine = scored_mse(den, god, x_T, cond, x0, groups, k, iterations)
    ref = shared if shared is not None else scored_mse(den, god, x_T, cond, x0, torch.zeros_like(groups), 1, iterations)
    return float(mine.mean() / ref.mean()), ratio_ci(mine, ref, replicates=replicates, seed=seed)


def fit_global_and_oracle(handle: Any, teacher: Any, nfe: int, priors: int, *, seed: int = 0,
                          iterations: int = 300, solver: str = "ipndm", afs: bool = False,
                          device: Device = "cpu") -> tuple[Any, Any]:
    """A global schedule (GOD's freedoms, `solver` with or without AFS at `nfe` model calls) fitted to the first
    `priors` priors of `teacher`, and the per-prior oracle fitted from it on the same priors (the same losses,
    jointly)."""
    from .discretizations.base import InstanceOracle
    from .solvers import steps_for_nfe
    from .training import TrainConfig, train_discretizer

    P = min(priors, teacher.num_samples)
    idx = list(range(P))
    N = steps_for_nfe(solver, nfe, afs)

    def config(lr: float) -> Any:
        return TrainConfig(iterations=iterations, batch_size=P, lr=lr, val_every=25, patience=4, train_indices=idx,
                           val_indices=idx, seed=seed)

    _, god = _best_global(handle, teacher, N, config, seed, min(PROBE, max(1, iterations // 6)), solver=solver, afs=afs,
                          device=device)
    best = None
    for lr in (5e-3, 5e-5):  # from the global optimum: a basin can be sharp (tiny errors); keep the better fit
        oracle = InstanceOracle.from_global(god, P)
        ocfg = TrainConfig(iterations=iterations, batch_size=P, lr=lr, val_every=10, patience=10, train_indices=idx,
                           val_indices=idx, grad_clip=0.0, seed=seed)
        r = train_discretizer(oracle, handle.denoiser, teacher, ocfg, progress=False, device=device)
        if best is None or r.best_val < best[0]:
            best = (r.best_val, oracle)
    return god.eval(), best[1].eval()


def diagnose(handle: Any, teacher: Any, nfe: int, *, priors: int = 50, train_size: int | None = None, seed: int = 0,
             eps_grid: Sequence[float] = EPS_GRID, replicates: int = 1000, cluster_priors: int = 200,
             iterations: int = 300, curve_iterations: int = CURVE_CAP, progress: bool = False, solver: str = "ipndm",
             afs: bool = False, groups: bool | None = None, curve_sizes: Sequence[int] = CURVE_SIZES,
             device: Device = "cpu") -> Diagnosis:
    """Predict INDIS / GOD teacher-MSE for `handle` at `nfe` from an oracle on `priors` priors of the teacher set,
    group schedules on `cluster_priors` of them and phi trained on subsets of up to 1,000 (`train_size`: the number of
    training priors INDIS would get, default the teacher set's size; `iterations`: the cap of the oracle's and the
    groups' fits, `curve_iterations` that of phi's; `progress`: a bar over the stages on stderr; `solver` and `afs`:
    the sampler every schedule is fitted for, the one INDIS would be trained with; `groups`: fit the group schedules
    (steps 5), which predict only where the set is too small for phi's learning curve and are context otherwise (about
    half the diagnostic's time on the exact mixtures): None fits them only there; `curve_sizes`: the nested subset
    sizes phi's learning curve is trained on, increasing, at least two (shrunk in proportion where the set is small);
    `device`: where the model and every fit run, e.g. cuda). `extra["stage_seconds"]` says where the time went."""
    import time

    from tqdm.auto import tqdm

    from .priors import prior_std

    if priors < 8:
        raise InputError(f"the diagnostic needs at least 8 priors, got {priors}")
    if iterations < 10:
        raise InputError(f"the diagnostic's fits need at least 10 iterations, got {iterations}")
    sizes = [int(n) for n in curve_sizes]
    if len(sizes) < 2 or any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] < 8:
        raise InputError("the learning curve's subset sizes (curve_sizes, --diagnose-curve-sizes) must be at least two "
                         f"increasing integers, the smallest >= 8; got {list(curve_sizes)}")
    has_curve = curve_rows(teacher.num_samples, sizes) is not None
    fit_groups = (not has_curve) if groups is None else bool(groups)
    stages = [s for s in STAGES if fit_groups or s not in GROUP_STAGES]
    bar = tqdm(total=len(stages), desc=stages[0], disable=not progress, leave=False)
    t0 = last = time.time()
    spent: dict[str, float] = {}

    def done(stage: str) -> None:  # `stage` finished: its time is kept and the bar names the next one
        nonlocal last
        now = time.time()
        spent[stage], last = round(now - last, 1), now
        bar.update(1)
        bar.set_description(stages[min(stages.index(stage) + 1, len(stages) - 1)])

    handle.denoiser.to(device)
    god, oracle = fit_global_and_oracle(handle, teacher, nfe, priors, seed=seed, iterations=iterations, solver=solver,
                                        afs=afs, device=device)
    P = oracle.num_samples
    _, x_T, cond, x0 = teacher.batch(torch.arange(P), torch.float64, device)
    den = handle.denoiser
    with torch.no_grad():
        god_mse = mse(god.sample(den, x_T, cond), x0).cpu().numpy()
        orc_mse = mse(oracle.sample(den, x_T, cond, torch.arange(P)), x0).cpu().numpy()
    rel = float(god_mse.mean() / float(x0.var(dim=0).mean().clamp_min(1e-30)))  # mse is per element, so is this variance
    done(STAGES[0])
    gains = kept_share(den, god, oracle, x_T, cond, x0, teacher_fn(den, teacher), prior_std(den.schedule), eps_grid, seed)
    M = int(train_size or teacher.num_samples)
    eps_nn = nearest_eps(int(np.prod(handle.data_shape)), M, seed=seed)
    gap, ratio, ci, curve = predict(gains, god_mse, orc_mse, eps_nn, replicates=replicates, seed=seed)
    done(STAGES[1])
    grp = (_group_predictions(den, god, teacher, cluster_priors, seed, replicates, iterations, device, done)
           if fit_groups else {})
    lc = curve_ratio(handle, teacher, god, M, seed=seed, replicates=replicates, iterations=curve_iterations,
                     sizes=sizes, device=device) if has_curve else None
    done(STAGES[-1])
    bar.close()
    if lc is None:
        cratio, cci = grp["group_prediction"], grp["group_prediction_ci"]
        rec = recommend(ci, cci, rel)
    else:  # phi itself, trained on subsets, is the prediction where the teacher set is large enough: it alone decides
        cratio, cci = lc["ratio"], [min(1.0, v) for v in lc["ci"]]
        rec = recommend(cci, cci, rel)
    return Diagnosis(priors=P, oracle_over_global=float(orc_mse.mean() / god_mse.mean()), kept=curve, eps_nn=eps_nn,
                     train_size=M, gap_closed=float(gap), reach_ratio=float(ratio), reach_ci=ci, predicted_ratio=cratio,
                     predicted_ci=cci, recommendation=rec,
                     seconds=round(time.time() - t0, 1),
                     extra={"global_mse": float(god_mse.mean()), "oracle_mse": float(orc_mse.mean()), "nfe": nfe,
                            "solver": solver, "afs": bool(afs), "global_starts": GLOBAL_STARTS,
                            "version": VERSION, "global_over_variance": rel, "groups": fit_groups, **grp, "curve": lc,
                            "stage_seconds": spent})


def _group_predictions(den: Denoiser, god: Any, teacher: Any, cluster_priors: int, seed: int, replicates: int,
                       iterations: int, device: Device, done: Any) -> dict[str, Any]:
    """Step 5 on the first `cluster_priors` priors: endpoint groups and condition groups against one shared schedule,
    and the lower of the two as the group prediction (`done(stage)` after each stage)."""
    C = min(cluster_priors, teacher.num_samples)
    _, xc, cc, x0c = teacher.batch(torch.arange(C), torch.float64, device)
    one_group = torch.zeros(C, dtype=torch.long, device=device)
    shared = scored_mse(den, god, xc, cc, x0c, one_group, 1, iterations)  # both groupings' reference
    done(STAGES[2])
    raw, raw_ci = cluster_ratio(den, god, xc, cc, x0c, seed=seed, replicates=replicates, iterations=iterations,
                                shared=shared)
    done(STAGES[3])
    by_cond = condition_groups(cc)
    craw, craw_ci = (group_ratio(den, god, xc, cc, x0c, *by_cond, seed=seed, replicates=replicates,
                                 iterations=iterations, shared=shared) if by_cond else (None, None))
    done(STAGES[4])
    # the lower of the two group predictions; INDIS keeps its GOD warm start unless validation improves on it, so a
    # group fit worse than the shared one predicts 1
    best, best_ci = (craw, craw_ci) if craw is not None and craw_ci[1] < raw_ci[1] else (raw, raw_ci)
    return {"cluster_priors": C, "clusters": CLUSTERS, "group_over_shared": raw, "group_over_shared_ci": raw_ci,
            "condition_groups": by_cond[1] if by_cond else 0, "condition_over_shared": craw,
            "condition_over_shared_ci": craw_ci, "group_prediction": min(1.0, best),
            "group_prediction_ci": [min(1.0, v) for v in best_ci]}
