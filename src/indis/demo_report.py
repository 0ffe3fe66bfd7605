"""Figures, report.md and results.json settings of `indis demo` (the running code is in `indis.demo`)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .discretizations import heuristic

__all__ = ["figures", "report", "settings_dict", "summary_line"]

MAIN = ("uniform", "best-heuristic", "global", "instance-oracle", "indis")
# The paper's numbers (section 4.1): oracle vs global MSE at NFE 3, and phi's relative gains over global.
PAPER = {"oracle_mse_nfe3": 0.0122, "global_mse_nfe3": 0.0245, "oracle_gain_nfe3": 0.502,
         "kl_gain_mean": 0.2586, "w2_gain_mean": 0.2185, "kl_gain_nfe3_6": 0.4567, "w2_gain_nfe3_6": 0.2954}
KL = {"kl_gt_gen": "KL(ground truth || generated)", "kl_gen_gt": "KL(generated || ground truth)"}


def _row(rows: list[dict[str, Any]], method: str, nfe: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["method"] == method and r["nfe"] == nfe), None)


def _pct(new: float, old: float) -> float:
    """Relative reduction of `new` vs `old` (0.25 = 25% lower)."""
    if not (math.isfinite(new) and math.isfinite(old)) or old == 0:
        return float("nan")
    return (old - new) / abs(old)


def _gains(rows: list[dict[str, Any]], nfes: list[int], a: str = "indis", b: str = "global") -> dict[int, dict[str, float]]:
    g = {}
    for n in nfes:
        ra, rb = _row(rows, a, n), _row(rows, b, n)
        if ra and rb:
            g[n] = {m: _pct(ra[m], rb[m]) for m in ("mse", "kl_gt_gen", "kl_gen_gt", "w2")}
    return g


def _mean(vals: list[float]) -> float:
    v = [x for x in vals if math.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def _fmt(v: float | None, digits: int = 4) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    if v == 0 or 1e-3 <= abs(v) < 1e4:
        return f"{v:.{digits}f}"
    return f"{v:.{max(1, digits - 2)}e}"


def _fp(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{100 * v:+.1f}%"


# ------------------------------------------------------------------------------------------------ figures
def _fig2(demo: Any, fn: int, path: Path) -> Path | None:
    """Figure 2 analogue: the same priors coloured by endpoint L2 error, one panel per method."""
    from matplotlib.colors import LogNorm

    from .plots import new_figure, save_figure

    panels = [m for m in ("uniform", "global", "instance-oracle", "indis") if (m, fn) in demo.subset_outputs]
    if not panels:
        return None
    n = min(demo.cfg.oracle_subset, demo.cfg.num_test)
    _, xT, _, x0 = demo.exp.data("test")
    xTn, x0 = xT[:n].numpy(), x0[:n]
    errs = {m: ((demo.subset_outputs[(m, fn)] - x0) ** 2).sum(1).sqrt().numpy() for m in panels}
    allv = np.concatenate(list(errs.values()))
    lo, hi = max(float(np.percentile(allv, 1)), 1e-6), float(np.percentile(allv, 99.5))
    fig, axes = new_figure(len(panels), 1, panel=(3.6, 3.6))
    labels = {"uniform": "(a) uniform", "global": "(b) global (GOD)", "instance-oracle": "(c) per-instance oracle",
              "indis": "(d) INDIS phi (test priors)"}
    sc = None
    for ax, m in zip(axes, panels):
        sc = ax.scatter(xTn[:, 0], xTn[:, 1], c=np.clip(errs[m], lo, hi), s=9, cmap="viridis", norm=LogNorm(lo, hi))
        ax.set_title(f"{labels[m]}\nmean MSE {float((errs[m] ** 2).mean() / 2):.2e}", fontsize=9)
        ax.set(aspect="equal", xlim=(-3, 3), ylim=(-3, 3), xlabel="x_T[0]")
    axes[0].set_ylabel("x_T[1]")
    fig.colorbar(sc, ax=axes, shrink=0.8, label="endpoint L2 error vs 100-step Euler")
    fig.suptitle(f"Endpoint error per prior x_T (NFE={fn}, {demo.cfg.solver}, {n} test priors)", fontsize=10)
    return save_figure(fig, path)


def _fig3(demo: Any, path: Path) -> Path:
    """Figure 3 analogue: MSE, both KL directions and W2 against NFE (log scale)."""
    from .plots import new_figure, positive_for_log, save_figure, style_for

    show = [m for m in ("uniform", "best-heuristic", "global-times-only", "global", "instance-oracle", "indis")
            if any(r["method"] == m for r in demo.rows)]
    metrics = (("mse", "MSE to ground truth"), ("kl_gt_gen", KL["kl_gt_gen"]), ("kl_gen_gt", KL["kl_gen_gt"]), ("w2", "W2 distance"))
    fig, axes = new_figure(4, 1, panel=(4.0, 3.4))
    floored = False
    for ax, (metric, title) in zip(axes, metrics):
        for m in show:
            pts = sorted((r["nfe"], r[metric]) for r in demo.rows if r["method"] == m)
            if pts:
                xs, ys = zip(*pts)
                ysp, fl = positive_for_log(ys, floor=1e-4 if metric.startswith("kl") else None)
                floored |= fl
                ax.plot(xs, ysp, label=m + (" (oracle subset)" if m == "instance-oracle" else ""), markersize=4, **style_for(m))
        ax.set(yscale="log", xlabel="NFE")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    if floored:
        axes[1].text(0.02, 0.02, "estimates <= 0 drawn at 1e-4", transform=axes[1].transAxes, fontsize=7)
    fig.suptitle(f"Tree '{demo.cfg.classes}', {demo.cfg.solver}: quality vs NFE (test priors)", fontsize=10)
    return save_figure(fig, path)


def _samples(demo: Any, fn: int, path: Path) -> Path:
    """Generated endpoints over the data density log p(x), with a title and labelled axes."""
    from .plots import density_grid, new_figure, save_figure

    shown = [m for m in ("uniform", "global", "indis") if (m, fn) in demo.outputs]
    ref = demo.exp.data("test")[3].numpy()
    fig, axes = new_figure(len(shown) + 1, 1, panel=(3.6, 3.6))
    lim_x = (float(np.percentile(ref[:, 0], 0.5)) - 0.4, float(np.percentile(ref[:, 0], 99.5)) + 0.4)
    lim_y = (float(np.percentile(ref[:, 1], 0.5)) - 0.4, float(np.percentile(ref[:, 1], 99.5)) + 0.4)
    X, Y, lp = density_grid(lambda p: demo.mixture.log_prob(torch.from_numpy(p)).numpy(), lim_x, lim_y, n=160)
    lp = np.maximum(lp, lp.max() - 12)
    n_show = min(2000, ref.shape[0])
    for ax, (name, pts) in zip(axes, [("ground truth (100-step Euler)", ref)] +
                               [(f"{m}, NFE={fn}", demo.outputs[(m, fn)].numpy()) for m in shown]):
        ax.contourf(X, Y, lp, levels=14, cmap="Greys")
        ax.scatter(pts[:n_show, 0], pts[:n_show, 1], s=1.5, c="#d62728", alpha=0.6, linewidths=0)
        ax.set(xlim=lim_x, ylim=lim_y, aspect="equal", xlabel="x_0[0]")
        ax.set_title(name, fontsize=9)
    axes[0].set_ylabel("x_0[1]")
    fig.suptitle(f"Generated endpoints (red, {n_show} test priors) over log p(x) of tree '{demo.cfg.classes}' (grey)", fontsize=10)
    return save_figure(fig, path)


def _timesteps(demo: Any, fn: int, path: Path) -> Path | None:
    """phi's t_1 over the prior plane; (t_1, t_2) of phi, the oracle and the global schedule; histograms."""
    from .plots import new_figure, save_figure

    disc, g = demo.discs.get(("indis", fn)), demo.discs.get(("global", fn))
    if disc is None or g is None or disc.steps < 2:
        return None
    idx, xT, cond, _ = demo.exp.data("test")
    with torch.no_grad():
        t = disc(xT, cond, idx).times.numpy()
        gt = g(xT[:1], None if cond is None else cond[:1]).times[0].numpy()
    fig, axes = new_figure(3, 1, panel=(4.2, 3.8))
    sc = axes[0].scatter(xT[:, 0].numpy(), xT[:, 1].numpy(), c=t[:, 1], s=4, cmap="coolwarm")
    fig.colorbar(sc, ax=axes[0], location="bottom", shrink=0.8, label="phi's t_1")  # below: no clash with the next panel
    axes[0].set(aspect="equal", xlim=(-3, 3), ylim=(-3, 3), xlabel="x_T[0]", ylabel="x_T[1]")
    axes[0].set_title(f"INDIS t_1 per prior x_T (global t_1={gt[1]:.3f})", fontsize=9)
    o = demo.discs.get(("instance-oracle", fn))
    if o is not None:
        n = min(demo.cfg.oracle_subset, demo.cfg.num_test)
        with torch.no_grad():
            os_ = o(xT[:n], None if cond is None else cond[:n], idx[:n]).times.numpy()
        axes[1].scatter(os_[:, 1], os_[:, 2], s=6, c="#2ca02c", alpha=0.6, label="oracle (per prior)")
    axes[1].scatter(t[:, 1], t[:, 2], s=3, c="#d62728", alpha=0.35, label="INDIS phi (test priors)")
    axes[1].scatter([gt[1]], [gt[2]], marker="*", s=220, c="#1f77b4", edgecolors="k", label="global (GOD)", zorder=5)
    u = heuristic("uniform", disc.steps, demo.sched).numpy()
    axes[1].scatter([u[1]], [u[2]], marker="X", s=120, c="#7f7f7f", edgecolors="k", label="uniform", zorder=5)
    axes[1].set(xlabel="t_1", ylabel="t_2")
    axes[1].legend(fontsize=7)
    axes[1].set_title(f"interior times (NFE={fn})", fontsize=9)
    for k in range(1, t.shape[1] - 1):
        axes[2].hist(t[:, k], bins=50, alpha=0.5, label=f"t_{k}")
        axes[2].axvline(gt[k], color="k", linestyle="--", linewidth=1)
    axes[2].set(xlabel="time", ylabel="priors")
    axes[2].set_title("INDIS interior times (dashed: global)", fontsize=9)
    axes[2].legend(fontsize=7)
    return save_figure(fig, path)


def figures(demo: Any, nfes: list[int]) -> dict[str, str]:
    fn = demo.cfg.fig_nfe if demo.cfg.fig_nfe in nfes else nfes[0]
    made = {"fig2": _fig2(demo, fn, demo.out / "fig2_endpoint_error.png"), "fig3": _fig3(demo, demo.out / "fig3_metrics_vs_nfe.png"),
            "samples": _samples(demo, fn, demo.out / "samples_density.png"),
            "timesteps": _timesteps(demo, fn, demo.out / "timesteps_per_instance.png")}
    return {k: p.name for k, p in made.items() if p is not None}


# ------------------------------------------------------------------------------------------------ results and report
def settings_dict(demo: Any, nfes: list[int], gap: dict[str, Any], seconds: float) -> dict[str, Any]:
    c = demo.cfg
    return {
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(c).items()}, "nfes": nfes,
        "schedule": demo.sched.config(), "model": demo.handle.spec,
        "best_heuristic": {str(k): v for k, v in demo.best_heuristic.items()},
        "heuristic_val_mse": {str(k): v for k, v in demo.heuristic_val_mse.items()},
        "metrics": {"mse": "mean over the 2 coordinates of (x - x*)^2, averaged over the test priors",
                    "kl_gt_gen": f"{KL['kl_gt_gen']}, k-NN estimator (Wang-Kulkarni-Verdu), k={c.kl_k}: ground-truth endpoints "
                                 "of as many training priors (an independent cloud) vs the generated endpoints of the test priors",
                    "kl_gen_gt": f"{KL['kl_gen_gt']}, same estimator and clouds",
                    "w2": f"exact W2 (POT emd2) on the first {min(c.w2_points, c.num_test)} test priors",
                    "instance-oracle": f"fitted and evaluated on the first {min(c.oracle_subset, c.num_test)} test priors"},
        "selection": "best heuristic: lowest validation MSE; learned methods: best validation loss under the budget rule",
        "oracle_gap": gap, "kl_floor": {"kl_gt_gen": demo.kl_floor, "kl_gen_gt": demo.kl_floor_gen_gt},
        "training": {k: {kk: v[kk] for kk in ("iterations", "seconds", "best_val", "stop_reason")} for k, v in demo.train_info.items()},
        "timings": {"teacher": round(demo.teacher_seconds, 1), "total": round(seconds, 1)}, "threads": torch.get_num_threads(),
    }


def summary_line(demo: Any, out: Path) -> str:
    g = _gains(demo.rows, [demo.cfg.fig_nfe]).get(demo.cfg.fig_nfe)
    if not g:
        return f"demo: done ({out / 'report.md'})"
    return (f"demo: indis vs global at NFE {demo.cfg.fig_nfe}: MSE {_fp(-g['mse'])}, KL(gt||gen) {_fp(-g['kl_gt_gen'])}, "
            f"KL(gen||gt) {_fp(-g['kl_gen_gt'])}, W2 {_fp(-g['w2'])} ({out / 'report.md'})")


def _metric_table(rows: list[dict[str, Any]], nfes: list[int], metric: str, title: str) -> list[str]:
    methods = [m for m in MAIN if any(r["method"] == m for r in rows)]
    methods += sorted({r["method"] for r in rows} - set(MAIN))
    L = [f"**{title}**", "", "| method | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|" + "---|" * len(nfes)]
    for m in methods:
        cells = [_fmt(r[metric]) if (r := _row(rows, m, n)) else "" for n in nfes]
        L.append(f"| {m}{' †' if m.startswith('instance-oracle') else ''} | " + " | ".join(cells) + " |")
    return L + [""]


def _intro(demo: Any) -> str:
    c = demo.cfg
    return (f"Flow matching (T=0.988, t0=0.002), exact float64 tree denoiser. Ground truth per prior x_T: {c.teacher_steps}-step "
            f"uniform {c.teacher_solver}. {c.num_train} training, {c.num_val} validation and {c.num_test} test priors, drawn from "
            "distinct seeds. Every choice (the best heuristic, early stopping, the start of multi-start training) is made on "
            "the validation priors; the tables report the test priors. MSE is the mean over the 2 coordinates. KL is the "
            f"k-NN estimator (Wang-Kulkarni-Verdu, k={c.kl_k}) between the {c.num_test} generated endpoints and as many "
            "ground-truth endpoints of *training* priors (an independent cloud), in both directions: "
            f"{KL['kl_gt_gen']} penalises ground-truth mass the sampler misses, {KL['kl_gen_gt']} penalises generated points "
            f"off the data; their noise floors (the test ground truth itself, true value 0) are {demo.kl_floor:+.3f} and "
            f"{demo.kl_floor_gen_gt:+.3f}. W2 is exact (POT) on the first {min(c.w2_points, c.num_test)} test priors. The "
            f"instance oracle is fitted and evaluated on the first {min(c.oracle_subset, c.num_test)} test priors (a ceiling, "
            f"not a method). Freedoms: shift = {c.shift_bound} tanh(o/2) x step ({c.shift_mode}), scale = 1 + {c.scale_bound} "
            f"tanh(o/2). Budget rule for every learned schedule: validation every {c.val_every} iterations, stop after "
            f"{c.patience} without improvement (global schedules: {c.global_starts} starts)." + (" Quick mode." if c.quick else ""))


def _gain_table(demo: Any, nfes: list[int]) -> tuple[list[str], dict, dict, dict]:
    gains = _gains(demo.rows, nfes)
    L = ["## INDIS vs global (GOD with the same freedoms): relative change (negative = INDIS lower, better)", "",
         "| NFE | MSE | KL(gt‖gen) | KL(gen‖gt) | W2 |", "|---|---|---|---|---|"]
    for n, g in gains.items():
        L.append(f"| {n} | {_fp(-g['mse'])} | {_fp(-g['kl_gt_gen'])} | {_fp(-g['kl_gen_gt'])} | {_fp(-g['w2'])} |")
    keys = ("mse", "kl_gt_gen", "kl_gen_gt", "w2")
    avg = {m: _mean([g[m] for g in gains.values()]) for m in keys}
    low = [n for n in gains if 3 <= n <= 6]
    avg36 = {m: _mean([gains[n][m] for n in low]) for m in keys}
    L.append("| mean (all NFE) | " + " | ".join(_fp(-avg[m]) for m in keys) + " |")
    if low:
        L.append("| mean (NFE 3-6) | " + " | ".join(_fp(-avg36[m]) for m in keys) + " |")
    return L + [""], gains, avg, avg36


def _paper_table(avg: dict, avg36: dict, gap: dict, fn: int) -> list[str]:

    L = ["## Paper figures beside ours", "", "| quantity | paper | ours |", "|---|---|---|",
         f"| phi vs global, KL, mean over NFE | -{100 * PAPER['kl_gain_mean']:.1f}% | {_fp(-avg['kl_gt_gen'])} (gt‖gen), "
         f"{_fp(-avg['kl_gen_gt'])} (gen‖gt) |",
         f"| phi vs global, W2, mean over NFE | -{100 * PAPER['w2_gain_mean']:.1f}% | {_fp(-avg['w2'])} |"]
    if math.isfinite(avg36["w2"]):
        L += [f"| phi vs global, KL, mean NFE 3-6 | -{100 * PAPER['kl_gain_nfe3_6']:.1f}% | {_fp(-avg36['kl_gt_gen'])} (gt‖gen), "
              f"{_fp(-avg36['kl_gen_gt'])} (gen‖gt) |",
              f"| phi vs global, W2, mean NFE 3-6 | -{100 * PAPER['w2_gain_nfe3_6']:.1f}% | {_fp(-avg36['w2'])} |"]
    labels = {"times-only": "times only, fixed endpoints", "times-free-last": "times + free last time",
              "full": "times + shift + scale", "free-last": "times + shift + scale + free last"}
    for key, label in labels.items():
        v = gap.get(str(fn), {}).get(key)
        if v:
            L.append(f"| oracle vs global, NFE {fn}, {label} | 0.0245 -> 0.0122 (-50.2%) | {_fmt(v['global'])} -> "
                     f"{_fmt(v['oracle'])} ({_fp(-v['gain'])}) |")
    return L + [""]


def _discussion(demo: Any, nfes: list[int], gains: dict, avg: dict, gap: dict) -> list[str]:
    c, fn, D = demo.cfg, demo.cfg.fig_nfe, []
    if fn in gains:
        g = gains[fn]
        D.append(f"- At NFE {fn}, INDIS (phi, test priors) vs the global schedule with the same freedoms: MSE {_fp(-g['mse'])}, "
                 f"KL(gt‖gen) {_fp(-g['kl_gt_gen'])}, KL(gen‖gt) {_fp(-g['kl_gen_gt'])}, W2 {_fp(-g['w2'])}; averaged over "
                 f"NFE {nfes[0]}-{nfes[-1]}: MSE {_fp(-avg['mse'])}, W2 {_fp(-avg['w2'])}.")
    for key, what in (("times-only", "the N-1 interior times only (endpoints fixed)"), ("times-free-last", "a free last time"),
                      ("full", "per-step shift and scale"), ("free-last", "shift, scale and a free last time")):
        v = gap.get(str(fn), {}).get(key)
        if v:
            D.append(f"- With {what}, the per-instance oracle is {_fp(-v['gain'])} vs the global schedule on the same priors "
                     f"({_fmt(v['global'])} -> {_fmt(v['oracle'])})" + (f"; INDIS reaches {_fmt(v['indis'])}" if "indis" in v else "") + ".")
    worse = [n for n in nfes if (a := _row(demo.rows, "indis", n)) and (b := _row(demo.rows, "global", n)) and a["kl_gen_gt"] > b["kl_gen_gt"]]
    D.append("- KL depends on its direction: " + (f"in KL(gen‖gt) INDIS is worse than global at NFE {worse}" if worse else
             "INDIS is lower than global in both directions at every NFE") + "; MSE and W2 are the more reliable signals "
             f"at {c.num_test} points (the estimator's floor is {demo.kl_floor:+.3f} / {demo.kl_floor_gen_gt:+.3f}).")
    if c.quick:
        D.append("- Quick mode: fewer priors, NFEs and iterations; run `indis demo` for the full study.")
    return D


def report(demo: Any, nfes: list[int], files: dict[str, str], settings: dict[str, Any]) -> str:
    c, rows = demo.cfg, demo.rows
    L = [f"# INDIS synthetic study: tree '{c.classes}', {c.solver}, NFE {nfes[0]}-{nfes[-1]}", "", _intro(demo), "",
         "## Results (test priors)", ""]
    for metric, title in (("mse", "MSE"), ("kl_gt_gen", KL["kl_gt_gen"]), ("kl_gen_gt", KL["kl_gen_gt"]), ("w2", "W2")):
        L += _metric_table(rows, nfes, metric, title)
    L += ["† fitted and evaluated on the oracle subset of the test priors.", "",
          "Best heuristic per NFE (validation MSE): " + ", ".join(f"NFE {n}: {demo.best_heuristic[n]}" for n in nfes) + ".", ""]
    gt, gains, avg, avg36 = _gain_table(demo, nfes)
    L += gt + _paper_table(avg, avg36, settings["oracle_gap"], c.fig_nfe)
    L += ["## Training (budget rule)", "", "| run | iterations | stopped by | best validation loss | seconds |", "|---|---|---|---|---|"]
    for k, v in settings["training"].items():
        L.append(f"| {k} | {v['iterations']} | {v['stop_reason']} | {_fmt(v['best_val'])} | {v['seconds']:.1f} |")
    L += ["", "## Figures", ""]
    captions = {"fig2": f"Figure 2 analogue: endpoint error per prior (NFE {c.fig_nfe}), the same priors in every panel.",
                "fig3": "Figure 3 analogue: MSE, KL in both directions and W2 vs NFE (log scale).",
                "samples": "Generated endpoints over the data density log p(x).",
                "timesteps": "Per-instance timesteps: phi's t_1 over the prior plane; (t_1, t_2) of phi, the oracle and the global "
                             "schedule; histograms."}
    for k, f in files.items():
        L += [captions.get(k, k), "", f"![{k}]({f})", ""]
    L += ["## Discussion", ""] + _discussion(demo, nfes, gains, avg, settings["oracle_gap"])
    L += ["", "## Run", "", f"Stage timings (s): {json.dumps(settings['timings'])}. Cached work: `teachers/` and `runs/`; "
          "rerunning with the same settings reuses them.", ""]
    return "\n".join(L)
