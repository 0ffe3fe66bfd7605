"""`indis eval`: teacher-MSE of saved discretizations (and heuristics) on held-out teacher pairs, with bootstrap
confidence intervals and paired differences against the first one listed."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..diagnose_curve import CURVE_SIZES, stalled
from ..discretizations.base import Discretizer, load_discretization
from ..errors import InputError
from ..metrics.stats import bootstrap_ci, paired_bootstrap, weighted_mean
from ..methods import fixed
from ..solvers import SOLVERS
from ..teacher import TeacherSet
from .common import add_model_args, check_steps, dtype_of, load
from .output import add_json_arg, display_scale, emit, fmt_ci, show_progress, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="teacher-MSE of saved discretizations or heuristics on held-out teacher pairs, with "
                       "confidence intervals and paired differences")
    add_model_args(p)
    p.add_argument("--teacher", required=True, help="a teacher set made by `indis teacher` with priors no schedule was "
                   "trained on (another --seed than the training set)")
    p.add_argument("--discretization", nargs="*", default=[], help="folders of saved discretizations")
    p.add_argument("--method", nargs="*", default=[], help="heuristic names (edm, logsnr, ...) or dmn, with --steps (for "
                   "GITS, whose search draws priors: `indis schedule --method gits --out DIR`, then --discretization DIR)")
    p.add_argument("--steps", type=int, default=None, help="N for --method")
    p.add_argument("--solver", default="ipndm", choices=SOLVERS, help="solver for --method, and the one --diagnose fits every "
                   "schedule for (the solver INDIS would use)")
    p.add_argument("--afs", action="store_true", help="analytical first step for --method and --diagnose")
    p.add_argument("--num", type=int, default=None, help="evaluate the first NUM pairs (default: all)")
    p.add_argument("--replicates", type=int, default=1000, help="bootstrap replicates of each interval (default 1000)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--force", action="store_true", help="use a discretization trained for another model anyway")
    p.add_argument("--diagnose", action="store_true", help="predict whether INDIS will beat the best global schedule on "
                   "this model before training it: fits the per-instance oracle on --diagnose-priors priors of --teacher, "
                   "measures how far its gain reaches in x_T, trains phi on subsets of up to 1,000 of its priors (a set "
                   "of 1,600 is enough; --train-size says how many INDIS would get), prints the predicted INDIS/GOD "
                   "ratio with an interval and a recommendation (needs --nfe)")
    p.add_argument("--nfe", type=int, default=None, help="--diagnose: the number of model calls to diagnose (with "
                   "--solver and --afs)")
    p.add_argument("--diagnose-priors", type=int, default=50, help="--diagnose: priors the oracle is fitted to (default 50)")
    p.add_argument("--diagnose-iterations", type=int, default=300, help="--diagnose: iteration cap of the oracle's and "
                   "the group schedules' fits (default 300)")
    p.add_argument("--diagnose-curve-iterations", type=int, default=3000, help="--diagnose: iteration cap of each of "
                   "phi's fits on a subset (default 3000, as INDIS's own; they stop earlier on a validation plateau)")
    p.add_argument("--diagnose-groups", action="store_true", help="--diagnose: also fit one schedule per group of "
                   "teacher endpoints and per condition value (context beside phi's learning curve, about half the "
                   "diagnostic's time; fitted anyway where the teacher set is too small for the curve)")
    p.add_argument("--diagnose-curve-sizes", type=int, nargs="+", default=None, metavar="N", help="--diagnose: the "
                   "nested subsets phi's learning curve is trained on (default "
                   f"{' '.join(map(str, CURVE_SIZES))}; e.g. 1000 2000 with a teacher set of 4,000 or more, to see a "
                   "slow curve further out)")
    p.add_argument("--train-size", type=int, default=None, help="--diagnose: training priors INDIS would get (default: "
                   "the teacher set's size)")
    p.add_argument("--no-progress", action="store_true", help="--diagnose: no progress bar over its stages (it shows "
                   "only on a terminal anyway)")
    add_json_arg(p)
    p.set_defaults(func=run)


def _held_out(d: Discretizer, ts: TeacherSet, where: str) -> None:
    """Refuse to report numbers on the priors a discretization was trained on."""
    info = d.extra.get("teacher_info") or {}
    same_path = info.get("path") and Path(info["path"]).resolve() == ts.path.resolve()
    same_seed = info.get("seed") is not None and info.get("seed") == ts.config.seed and info.get("model") == ts.config.model
    if same_path or same_seed:
        raise InputError(f"{where} was trained on teacher priors with seed {ts.config.seed} ({info.get('path')}); "
                         "evaluate on held-out priors: `indis teacher ... --seed S` with another S")


def _candidates(args: argparse.Namespace, h: Any, ts: TeacherSet) -> list[tuple[str, Discretizer]]:
    out: list[tuple[str, Discretizer]] = []
    for folder in args.discretization:
        d = load_discretization(folder, model=h, force=args.force)
        _held_out(d, ts, f"--discretization {folder}")
        out.append((folder, d))
    if args.method and args.steps is None:
        raise InputError("--steps is required with --method")
    for m in args.method:
        if m == "gits":
            raise InputError("--method gits would draw its warm-up priors here; make it with `indis schedule --method gits "
                             "--out DIR` (its own seed) and pass --discretization DIR")
        d = fixed(h, m, check_steps(args.steps), args.solver, afs=args.afs)
        out.append((f"{m} (N={args.steps}, {args.solver}{', AFS' if args.afs else ''})", d))
    if not out:
        raise InputError("give at least one --discretization folder or --method name")
    return out


def _per_prior(d: Discretizer, h: Any, ts: TeacherSet, n: int, args: argparse.Namespace) -> np.ndarray:
    rows = []
    d.to(args.device).eval()
    with torch.no_grad():
        for i in range(0, n, args.batch_size):
            idx, xT, c, x0 = ts.batch(torch.arange(i, min(n, i + args.batch_size)), dtype_of(args), args.device)
            x = d.sample(h.denoiser, xT, c, idx.to(args.device))
            rows.append((x - x0).double().pow(2).flatten(1).mean(1).cpu())
    return torch.cat(rows).numpy()


def _model_and_teacher(args: argparse.Namespace) -> tuple[Any, TeacherSet]:
    """The model and the held-out teacher set, checked to belong together."""
    h = load(args)
    ts = TeacherSet(args.teacher, cond_table=h.cond_table)
    ts.check_model(h.denoiser, h.data_shape, h.spec, args.device, cond_kind=h.cond_kind)
    return h, ts


def _ci(v: float, ci: list[float]) -> str:
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _group_lines(x: dict[str, Any]) -> list[str]:
    """The diagnosis's group schedules (`indis.diagnose`, step 5) as text."""
    return [f"  one schedule per group of {x['clusters']} endpoint groups ({x['cluster_priors']} priors, scored on the "
            f"last quarter) / one shared schedule: {_ci(x['group_over_shared'], x['group_over_shared_ci'])}",
            *([f"  one schedule per condition value ({x['condition_groups']} values) / one shared schedule: "
               f"{_ci(x['condition_over_shared'], x['condition_over_shared_ci'])}"] if x.get("condition_groups") else [])]


def diagnose_run(args: argparse.Namespace) -> int:
    """`indis eval --diagnose`: the predicted gain of INDIS over GOD before either is trained (`indis.diagnose`)."""
    from ..diagnose import EXACT_BELOW, HEAVY_TAIL, RECOMMEND_BELOW, diagnose

    if args.nfe is None:
        raise InputError("--diagnose needs --nfe N (the number of model calls to diagnose)")
    if args.discretization or args.method:
        raise InputError("--diagnose trains nothing and compares no schedules: drop --discretization / --method")
    h, ts = _model_and_teacher(args)
    d = diagnose(h, ts, args.nfe, priors=args.diagnose_priors, train_size=args.train_size, replicates=args.replicates,
                 iterations=args.diagnose_iterations, curve_iterations=args.diagnose_curve_iterations,
                 progress=show_progress(args), solver=args.solver, afs=args.afs,
                 groups=True if args.diagnose_groups else None, curve_sizes=args.diagnose_curve_sizes or CURVE_SIZES,
                 device=args.device)
    data = d.as_dict()

    lc = d.extra.get("curve")

    def text() -> str:
        curve = ", ".join(f"{k}: {v:+.2f}" for k, v in d.kept.items())
        return "\n".join([
            f"Diagnosis of {h.spec} at NFE {args.nfe} with {args.solver}{' + AFS' if args.afs else ''} "
            f"({d.priors} priors of {ts.path}, {d.seconds:.0f} s: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in d.extra["stage_seconds"].items()) + "):",
            f"  oracle / global schedule teacher-MSE: {d.oracle_over_global:.3f} (the ceiling of any instance-aware schedule)",
            f"  share of the oracle's gain kept at neighbour distance eps: {curve}",
            f"  nearest of {d.train_size} training priors: eps {d.eps_nn:.3f} -> by reach INDIS would close {d.gap_closed:.2f} "
            f"of the gap: INDIS / GOD {_ci(d.reach_ratio, d.reach_ci)}",
            *(_group_lines(d.extra) if d.extra.get("groups") else []),
            *([f"  phi trained on {' and '.join(map(str, lc['sizes']))} priors / one shared schedule (scored on "
               f"{lc['scored']}): {', '.join(f'{v:.3f}' for v in lc['at_sizes'])}"] if lc else []),
            *([f"  the global schedule's worst 1% of scored priors carry {lc['god_tail_share']:.2f} of its teacher-MSE"
               + (f" (over {HEAVY_TAIL:g}: a few priors reach the wrong mode; in `indis bench scaling` INDIS rarely paid "
                  "there, INDIS-D (--denoised-input) a little more often)" if lc["god_tail_share"] > HEAVY_TAIL else "")]
              if lc and "god_tail_share" in lc else []),
            f"  predicted INDIS / GOD teacher-MSE at {d.train_size} training priors ("
            + ("phi's learning curve r_inf + a/n extrapolated" if lc else "the better group prediction; the teacher set "
               "is too small for phi's learning curve") + f", capped at 1): {_ci(d.predicted_ratio, d.predicted_ci)}"
            + (" (the interval: scoring noise of this one curve, not the spread between training runs, which on exact "
               "models often exceeds 0.05: `indis bench scaling --train-runs`)" if lc else ""),
            *([f"  phi did not leave the shared schedule on any subset: 1.000 means no gain seen on up to "
               f"{max(lc['sizes'])} priors, not that none exists (INDIS, trained on all {d.train_size}, starts at GOD and "
               "keeps it unless validation improves; how often such cells still gained: benchmarks/README.md)"]
              if stalled(lc) else []),
            *([f"  the global schedule is already exact (teacher-MSE {d.extra['global_over_variance']:.1e} of the endpoints' "
               "variance): nothing is left to gain"] if d.extra["global_over_variance"] < EXACT_BELOW else []),
            f"Recommendation: {d.recommendation}" + (" (a global schedule: indis train --method god)" if d.recommendation == "GOD"
                                                     else " (indis train --method indis --init <a trained GOD folder>; "
                                                     "add --runs 4 to keep the best of four trainings, which can land "
                                                     "far apart)"),
            f"  (INDIS where the prediction's whole interval lies below {RECOMMEND_BELOW:g}; how often this was right on "
            "exact models: benchmarks/README.md, `indis bench scaling`)"])

    emit(args, data, text, indent=1)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.diagnose:
        return diagnose_run(args)
    if args.replicates < 10:
        raise InputError(f"--replicates must be >= 10, got {args.replicates}")
    h, ts = _model_and_teacher(args)
    n = ts.num_samples if args.num is None else args.num
    if not 2 <= n <= ts.num_samples:
        raise InputError(f"--num must be between 2 and the teacher set's {ts.num_samples} pairs, got {args.num}")
    cands = _candidates(args, h, ts)
    mse = {name: _per_prior(d, h, ts, n, args) for name, d in cands}
    names = [name for name, _ in cands]
    results = [{"name": k, "nfe": d.nfe, "mse": float(mse[k].mean()),
                "ci95": bootstrap_ci(weighted_mean, [mse[k]], [None], replicates=args.replicates)} for k, d in cands]
    diffs = [{"a": k, "b": names[0], **difference(mse[k], mse[names[0]], args.replicates)} for k in names[1:]]
    data = {"teacher": str(ts.path), "priors": n, "metric": "teacher-MSE (mean over priors of the per-pixel "
            "squared error to the teacher endpoint)", "results": results, "differences_vs_first": diffs}
    emit(args, data, lambda: _table(data), indent=1)
    return 0


#: a paired difference below this share of the reference's teacher-MSE is float round-off, not a difference: two
#: parameterisations of one schedule (an INDIS whose best validation was its GOD warm start, against that GOD) differ
#: by up to ~1e-6 relative (measured on the 67 such cells of `indis bench scaling`), which 1,000 paired priors resolve
ROUNDOFF = 1e-5


def difference(a: np.ndarray, ref: np.ndarray, replicates: int) -> dict[str, Any]:
    """Paired bootstrap difference mean(a) - mean(ref) over the same priors: significant where its interval excludes 0
    and it is larger than round-off (ROUNDOFF of ref's mean; `within_roundoff` says when it is not)."""
    c = paired_bootstrap(weighted_mean, [a], [ref], [None], replicates=replicates)
    tiny = abs(c["diff"]) <= ROUNDOFF * abs(float(np.mean(ref)))
    return {"diff": c["diff"], "ci95": c["ci"], "significant": bool(c["excludes_zero"] and not tiny),
            "within_roundoff": bool(tiny)}


def _table(data: dict[str, Any]) -> str:
    """One row per schedule: teacher-MSE with its 95% interval and the paired difference to the first, rounded to
    what the intervals support; * where the difference's interval excludes 0."""
    res, diffs = data["results"], {d["a"]: d for d in data["differences_vs_first"]}
    scale, label = display_scale([r["mse"] for r in res])
    rows = []
    for r in res:
        d = diffs.get(r["name"])
        rows.append([r["name"], r["nfe"], fmt_ci(r["mse"], r["ci95"], scale),
                     "(reference)" if d is None else fmt_ci(d["diff"], d["ci95"], scale, signed=True)
                     + (" *" if d["significant"] else " ~" if d.get("within_roundoff") else "")])
    head = (f"teacher-MSE{label} on {data['priors']} held-out priors of {data['teacher']} (95% bootstrap intervals; "
            "differences paired on the same priors)")
    t = table(["schedule", "NFE", f"teacher-MSE{label}", f"difference to the first{label}"], rows, [False, True, True, True])
    note = "* the interval excludes 0: a significant difference" if any(d["significant"] for d in diffs.values()) else \
        "no difference is significant (every interval contains 0 or the difference is round-off)" if diffs else ""
    tiny = (f"~ below {ROUNDOFF:g} of the reference's teacher-MSE: float round-off (e.g. an INDIS that kept its GOD "
            "start, against that GOD), not a difference" if any(d.get("within_roundoff") for d in diffs.values()) else "")
    return "\n".join([head, "", t] + [x for x in (note, tiny) if x])
