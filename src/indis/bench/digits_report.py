"""Aggregation over seeds, confidence intervals, tables and figures of `indis bench digits` (no running here)."""
from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..metrics.stats import fd_reference, mean_std, pooled_interval, seed_replicates, weighted_fd, weighted_mean
from ..zoo import classifier_for

ROWS = ("best-heuristic", "dmn", "gits", "ld3", "god", "amed", "epd", "indis")
BASELINES = ROWS[:-1]
LABELS = {"best-heuristic": "Best heuristic", "dmn": "DMN", "gits": "GITS", "ld3": "LD3", "god": "GOD", "amed": "AMED",
          "epd": "EPD", "indis": "INDIS", "oracle": "Oracle (per instance)"}
METRICS = ("fd", "fd_heldout", "fd_teacher", "kid", "mse", "accuracy")


def _cell(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One method at one NFE over seeds: mean/std of every metric, the configurations chosen, training budget."""
    out: dict[str, Any] = {}
    for m in METRICS:
        vals = [r["test"][m] for r in rows if m in r["test"]]
        if vals:
            out[m], out[f"{m}_std"] = mean_std(vals)
    sp = [r["spec"] for r in rows]
    out.update(solver=[s["solver"] for s in sp], afs=[s["afs"] for s in sp], steps=[s["steps"] for s in sp],
               method=[s["method"] for s in sp], base=[s.get("base") for s in sp], seeds=len(rows))
    tr = [r["train"] for r in rows]
    if "iterations" in tr[0]:
        out["iterations"] = mean_std([t["iterations"] for t in tr])[0]
        out["best_val"] = mean_std([t["best_val"] for t in tr])[0]
        out["stop_reason"] = [t["stop_reason"] for t in tr]
    out["seconds"] = mean_std([t["seconds"] for t in tr])[0]
    if any("lr_choice" in t for t in tr):  # chosen on validation among several rates: say which
        out["lr"] = [s["train"]["lr"] for s in sp]
    return out


def _stat(metric: str) -> Callable:
    return weighted_mean if metric == "mse" else weighted_fd


#: the bootstrap evidence each seed keeps, per table: the metrics its intervals are computed on
EVIDENCE = {"main": ("fd", "fd_teacher", "mse"), "ipndm": ("fd",), "ablations": ("fd", "mse")}


def _stream(seed: int, *tag: object) -> np.random.Generator:
    """Each (experiment seed, table, NFE, metric) draws its own bootstrap stream (hashed: no two collide)."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32("/".join(map(str, tag)).encode())]))


def seed_evidence(run: Any, res: dict[str, Any], replicates: int) -> dict[str, Any]:
    """One seed's bootstrap replicates of every row of every table (`stats.seed_replicates`): all a report needs to pool
    this seed with others, run in this process or apart (`indis bench pool`)."""
    ev: dict[str, Any] = {}
    for table, metrics in EVIDENCE.items():
        for n, rows in res[table].items():
            rows = {k: r for k, r in (rows or {}).items() if r is not None}  # variants that did not apply
            stored = {k: run.rows(r["spec"]) for k, r in rows.items()}  # each row's file read once for every metric
            for m in metrics if rows else ():
                data = {k: v["mse" if m == "mse" else "features"] for k, v in stored.items()}
                ref = None if m == "mse" else {"fd": run.real_all, "fd_teacher": run.teacher_features()}[m]
                reps = seed_replicates(_stat(m), data, ref, _stream(run.seed, table, n, m), replicates=replicates,
                                       prepare=None if m == "mse" else fd_reference)
                for v in reps.values():  # 9 significant digits: a few hundred kB per seed file; intervals are read to 3
                    v["reps"] = [float(f"{r:.9g}") for r in v["reps"]]
                ev.setdefault(table, {}).setdefault(n, {})[m] = reps
    return ev


def compare(seeds: list[dict[str, Any]], table: str, nfe: str, a: str, bs: list[str], metric: str) -> dict[str, dict[str, Any]]:
    """Paired bootstrap CI of mean_seed [metric(a) - metric(b)] on the test priors, for each b in bs, pooled from the
    seeds' evidence (every seed resampled its priors once for all methods)."""
    ev = [s["evidence"][table][nfe][metric] for s in seeds]
    return {b: pooled_interval(ev, a, b) for b in bs}


def aggregate(seeds: list[dict[str, Any]], nfes: list[int]) -> dict[str, Any]:
    """Tables (mean +- std over the seeds that ran each NFE) and INDIS-vs-baseline comparisons with paired bootstrap
    CIs, from per-seed results that carry their `seed_evidence`."""
    res: dict[str, Any] = {"table": {}, "table_ipndm": {}, "comparisons": {}, "oracle": {}, "ablations": {}}
    for key, table in (("table", "main"), ("table_ipndm", "ipndm")):
        for n in map(str, nfes):  # a table may run on some seeds and NFEs only
            have = [s for s in seeds if s.get(table, {}).get(n) is not None]
            for row in ROWS if have else ():
                c = res[key].setdefault(row, {})[n] = _cell([s[table][n][row] for s in have])
                c["fd_ci"] = pooled_interval([s["evidence"][table][n]["fd"] for s in have], row)["ci"]
    for n in map(str, nfes):
        have = [s for s in seeds if s["main"].get(n) is not None]
        if have:
            res["comparisons"][n] = _comparisons(have, res["table"], n)
            res.setdefault("seeds_per_nfe", {})[n] = [s["seed"] for s in have]
        if any(n in s["oracle"] for s in seeds):
            res["oracle"][n] = _oracle([s for s in seeds if n in s["oracle"]], n)
        if any(n in s["ablations"] for s in seeds):
            res["ablations"][n] = _ablations([s for s in seeds if n in s["ablations"]], n)
    return res


def _ablations(seeds: list[dict[str, Any]], n: str) -> dict[str, Any]:
    """Each variant that ran on every ablation seed (mean +- std), with its paired difference to the full INDIS."""
    out = {}
    for v in seeds[0]["ablations"][n]:
        if any(s["ablations"][n].get(v) is None for s in seeds):
            continue  # a variant that did not apply (results written when plus-denoised skipped AFS)
        out[v] = _cell([s["ablations"][n][v] for s in seeds])
        if v != "full":
            out[v]["vs_full"] = {m: compare(seeds, "ablations", n, v, ["full"], m)["full"] for m in ("mse", "fd")}
    return out


def _comparisons(seeds: list[dict[str, Any]], table: dict[str, Any], n: str) -> dict[str, Any]:
    best = min(BASELINES, key=lambda r: table[r][n]["fd"])
    out: dict[str, Any] = {"best_baseline": best, "vs": {base: {} for base in BASELINES}}
    for m in ("fd", "fd_teacher", "mse"):
        for base, v in compare(seeds, "main", n, "indis", list(BASELINES), m).items():
            out["vs"][base][m] = v
    c = out["vs"][best]["fd"]
    out["win"] = bool(c["diff"] < 0 and significant(c))
    out["beaten_by"] = [b for b, v in out["vs"].items() if v["fd"]["diff"] > 0 and significant(v["fd"])]
    out["ahead_pooled_only"] = [b for b, v in out["vs"].items()
                                if v["fd"]["diff"] > 0 and v["fd"]["excludes_zero"] and not v["fd"]["all_seeds_agree"]]
    return out


def significant(c: dict[str, Any]) -> bool:
    """The report's one rule for a verdict: the pooled CI excludes 0 and every seed's difference has its sign."""
    return bool(c["excludes_zero"] and c["all_seeds_agree"])


def _oracle(seeds: list[dict[str, Any]], n: str) -> dict[str, Any]:
    o = [s["oracle"][n] for s in seeds]
    out = {"priors": o[0]["priors"], "gap_closed": [x["gap_closed"] for x in o]}
    for k in ("god", "indis", "oracle"):
        out[f"{k}_mse"] = mean_std([x["records"][k]["mse"] for x in o])
        out[f"{k}_fd"] = mean_std([x["records"][k]["fd"] for x in o])
    gaps = [g for g in out["gap_closed"] if g is not None]
    out["gap_closed_mean"] = mean_std(gaps) if gaps else None
    return out


# -- markdown ------------------------------------------------------------------------------------------------------
def _f(v: float | None, d: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"


def _pm(c: dict[str, Any], m: str, d: int = 3, scale: float = 1.0) -> str:
    if m not in c:
        return "-"
    return f"{_f(scale * c[m], d)} ± {_f(scale * c[m + '_std'], d)}"


def _config(c: dict[str, Any]) -> str:
    names = {"ipndm": "iPNDM", "dpmpp_3m": "DPM++3M", "unipc": "UniPC", "amed": "AMED-S", "epd": "EPD-S"}
    bases = c.get("base") or [None] * len(c["solver"])
    cfgs = sorted({f"{names.get(s, s)}{'+AFS' if a else ''}{'' if b is None else ' on ' + b}"
                   for s, a, b in zip(c["solver"], c["afs"], bases)})
    rates = "/".join(f"{r:g}" for r in dict.fromkeys(c["lr"])) if c.get("lr") else ""
    return "/".join(cfgs) + (f", lr {rates}" if rates else "")


def table_md(t: dict[str, Any], nfes: list[int], title: str, cond: bool, heldout: int = 297) -> list[str]:
    """One results table; `heldout`: the number of held-out real images behind the held-out FD column."""
    L = [f"### {title}", "", f"| Method | NFE | FD (real, all) | FD (real, held-out {heldout}) | FD (teacher samples) | KID | "
         "teacher-MSE x1e3 |" + (" accuracy |" if cond else "") + " solver (per seed) | iterations | train s |",
         "|---|---|---|---|---|---|---|" + ("---|" if cond else "") + "---|---|---|"]
    for row in ROWS:
        for n in (str(n) for n in nfes if str(n) in t[row]):
            c = t[row][n]
            L.append(f"| {LABELS[row]} | {n} | {_pm(c, 'fd')} | {_pm(c, 'fd_heldout')} | {_pm(c, 'fd_teacher')} | "
                     f"{_pm(c, 'kid', 4)} | {_pm(c, 'mse', 2, 1e3)} |" + (f" {_pm(c, 'accuracy', 3)} |" if cond else "")
                     + f" {_config(c)} | {_f(c.get('iterations'), 0)} | {_f(c.get('seconds'), 0)} |")
    return L + [""]


def comparisons_md(res: dict[str, Any], nfes: list[int]) -> list[str]:
    L = ["### INDIS against every baseline (difference INDIS - baseline; paired bootstrap 95% CI over the test priors, "
         "pooled over seeds)", "", "| NFE | baseline | FD diff [CI] | FD-teacher diff [CI] | MSE x1e3 diff [CI] | "
         "verdict |", "|---|---|---|---|---|---|"]
    for n in map(str, nfes):
        c = res["comparisons"][n]
        for base, v in c["vs"].items():
            fd, ft, ms = v["fd"], v["fd_teacher"], v["mse"]
            verdict = ("INDIS better" if fd["diff"] < 0 else "baseline better") if significant(fd) else "no significant difference"
            star = " (strongest)" if base == c["best_baseline"] else ""
            L.append(f"| {n} | {LABELS[base]}{star} | {_f(fd['diff'])} [{_f(fd['ci'][0])}, {_f(fd['ci'][1])}] | "
                     f"{_f(ft['diff'])} [{_f(ft['ci'][0])}, {_f(ft['ci'][1])}] | {_f(1e3 * ms['diff'], 2)} "
                     f"[{_f(1e3 * ms['ci'][0], 2)}, {_f(1e3 * ms['ci'][1], 2)}] | {verdict} |")
    L += ["", "A verdict needs the CI to exclude 0 and every seed's difference to have the same sign."]
    for n in map(str, nfes):
        c = res["comparisons"][n]
        if c["beaten_by"]:
            L.append(f"- **NFE {n}: {', '.join(LABELS[b] for b in c['beaten_by'])} beat{'s' if len(c['beaten_by']) == 1 else ''} "
                     f"INDIS on FD beyond the interval.**")
        if c.get("ahead_pooled_only"):  # absent from results written before this line existed
            L.append(f"- NFE {n}: {', '.join(LABELS[b] for b in c['ahead_pooled_only'])} ahead of INDIS on FD beyond the "
                     "pooled interval, but not in every seed (no verdict).")
        L.append(f"- NFE {n}: INDIS {'wins' if c['win'] else 'does not win'} against the strongest baseline "
                 f"({LABELS[c['best_baseline']]}) on FD.")
    return L + [""]


def oracle_md(res: dict[str, Any]) -> list[str]:
    if not res["oracle"]:
        return []
    L = ["### Per-instance oracle (ceiling) and the share of its gain INDIS captures", "",
         "| NFE | priors | GOD MSE x1e3 | INDIS MSE x1e3 | oracle MSE x1e3 | oracle / GOD | gap closed (GOD-INDIS)/(GOD-oracle) |",
         "|---|---|---|---|---|---|---|"]
    for n, o in res["oracle"].items():
        g, i, r = o["god_mse"][0], o["indis_mse"][0], o["oracle_mse"][0]
        gc = o["gap_closed_mean"]
        L.append(f"| {n} | {o['priors']} | {_f(1e3 * g, 2)} | {_f(1e3 * i, 2)} | {_f(1e3 * r, 2)} | {_f(r / g, 2)} | "
                 f"{'-' if gc is None else f'{_f(gc[0], 2)} ± {_f(gc[1], 2)}'} |")
    return L + ["", "The oracle optimises times, shift and scale for each of these test priors alone (started from GOD under "
                "INDIS's solver configuration); it is a ceiling, not a method.", ""]


def ablations_md(res: dict[str, Any]) -> list[str]:
    if not res["ablations"]:
        return []
    k = next(iter(next(iter(res["ablations"].values())).values()))["seeds"]
    L = [f"### Ablations (paper fig. 5), test priors, {k} seed{'s' if k > 1 else ''}", "", "| NFE | variant | FD | teacher-MSE x1e3 | "
         "FD diff to full [CI] | MSE x1e3 diff to full [CI] |", "|---|---|---|---|---|---|"]
    for n, vs in res["ablations"].items():
        for v, c in vs.items():
            d = c.get("vs_full")  # absent for the full INDIS and in results written before it existed
            diff = (f"{_f(d['fd']['diff'])} [{_f(d['fd']['ci'][0])}, {_f(d['fd']['ci'][1])}] | {_f(1e3 * d['mse']['diff'], 2)} "
                    f"[{_f(1e3 * d['mse']['ci'][0], 2)}, {_f(1e3 * d['mse']['ci'][1], 2)}]") if d else "- | -"
            L.append(f"| {n} | {v} | {_pm(c, 'fd')} | {_pm(c, 'mse', 2, 1e3)} | {diff} |")
    return L + ["", "plus-denoised: phi also reads the solver's own first model call (no extra NFE): D(x_T, t_max), or under "
                "AFS D(x_1, t_1) after the analytic first step to the warm start's t_1 (shared by all samples). plus-projected: "
                "phi reads x_T and that output projected on the top 16 principal directions of the training endpoints "
                "(INDIS-PD).", ""]


# -- figures -------------------------------------------------------------------------------------------------------
def figure_ablations(res: dict[str, Any], path: Path) -> Path | None:
    from ..plots import new_figure, save_figure

    if not res["ablations"]:
        return None
    nfes = list(res["ablations"])
    fig, axes = new_figure(len(nfes), 1, panel=(4.6, 3.4))
    for ax, n in zip(axes, nfes):
        vs = res["ablations"][n]
        names = list(vs)
        m = [1e3 * vs[v]["mse"] for v in names]
        e = [1e3 * vs[v]["mse_std"] for v in names]
        ax.bar(range(len(names)), m, yerr=e, color=["#d62728" if v == "full" else "#7f7f7f" for v in names], capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("teacher-MSE x1e3 (test)")
        ax.set_title(f"INDIS ablations, NFE {n}", fontsize=10)
    return save_figure(fig, path)


def figure_timesteps(ts: dict[str, Any], path: Path) -> Path:
    """Paper fig. 7 analogue: sigma_n predicted per prior (dots, coloured by class) beside the global schedule."""
    from ..plots import new_figure, save_figure

    sig = np.asarray(ts["sigma"])
    g = np.asarray(ts["global_sigma"])
    lab = ts.get("labels")
    fig, (ax,) = new_figure(1, 1, panel=(6.0, 4.0))
    steps = np.arange(sig.shape[1])
    rng = np.random.default_rng(0)
    for k in range(sig.shape[0]):
        jitter = rng.uniform(-0.15, 0.15, len(steps))
        style = {"color": "#d62728"} if lab is None else {"c": [lab[k]] * len(steps), "cmap": "tab10", "vmin": 0, "vmax": 9}
        ax.scatter(steps + jitter, sig[k], s=8, alpha=0.7, **style)
    ax.plot(steps, g, "k*--", markersize=10, label=f"global ({ts['global'].upper()})")
    ax.set_yscale("log")
    ax.set_xlabel("step n")
    ax.set_ylabel("sigma_n (EDM noise level)")
    ax.set_title(f"Per-instance timesteps of INDIS, NFE {ts['nfe']}, {sig.shape[0]} test priors"
                 + (" (colour: class)" if lab is not None else ""), fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def figure_grid(grid: dict[str, Any], path: Path) -> Path:
    """The same test priors (columns) under the teacher and each method (rows)."""
    from ..plots import new_figure, save_figure

    names = [k for k in grid if k != "nfe"]
    n = len(grid[names[0]])
    fig, axes = new_figure(n, len(names), panel=(0.9, 0.95))
    for r, name in enumerate(names):
        for c in range(n):
            ax = axes[r * n + c]
            ax.imshow((np.clip(np.asarray(grid[name][c])[0], -1, 1) + 1) / 2, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"Same test priors, NFE {grid.get('nfe', 3)}: teacher and methods", fontsize=9)
    return save_figure(fig, path)


def to_markdown(res: dict[str, Any], settings: dict[str, Any], figures: dict[str, str]) -> str:
    nfes, cond = settings["nfes"], settings["cond"]
    g = f", classifier-free guidance {settings['guidance']}" if settings.get("guidance") else ""
    what = classifier_for(settings["model"])
    L = [f"# indis bench {what}: {settings['model']}{g}", "",
         f"Seeds {settings['seeds']}; per seed {settings['train']} teacher pairs (training), {settings['val']} validation "
         f"priors (every choice: solver, AFS, heuristic, configuration, early stopping), {settings['test']} test priors "
         "(the numbers below, nothing else). Mean ± std over seeds. FD is the Fréchet distance in the shipped "
         f"{what} classifier's features (**not FID**)." + (f" Learned methods were trained and validated on the {settings['loss']} "
         "loss (built from the same classifier as FD; AMED/EPD keep their references' losses)." if settings.get("loss", "mse") != "mse" else ""), "",
         f"Teacher ({settings['teacher']}): FD {_f(res['teacher']['fd'][0])} ± {_f(res['teacher']['fd'][1])} against all real "
         f"{what}" + (f", accuracy {_f(res['teacher']['accuracy'][0], 3)}" if "accuracy" in res["teacher"] else "") + ".", ""]
    per = res.get("seeds_per_nfe", {})
    if any(v != list(settings["seeds"]) for v in per.values()):  # pooled runs where not every seed ran every NFE
        L += ["Seeds per NFE: " + "; ".join(f"NFE {n}: {', '.join(map(str, v))}" for n, v in per.items()) + ".", ""]
    if settings.get("guidance_choice"):
        ch = ", ".join(f"G = {k}: {v:.3f}" for k, v in settings["guidance_choice"].items())
        L += [f"Guidance scale chosen on validation priors by the 30-step teacher's FD to the held-out real {what}: {ch}.", ""]
    held = res["real_heldout"]
    L += table_md(res["table"], nfes, "Every method at its best solver configuration (chosen on validation)", cond, held)
    if res.get("table_ipndm"):
        k = next(iter(res["table_ipndm"][ROWS[0]].values()))["seeds"]
        L += table_md(res["table_ipndm"], nfes, f"iPNDM only (AFS chosen on validation; {k} seed{'s' if k > 1 else ''})",
                      cond, held)
    L += comparisons_md(res, nfes) + oracle_md(res) + ablations_md(res)
    ov = res.get("overhead")
    if ov:
        L += [f"phi's cost at NFE {ov['nfe']} ({ov['steps']} steps, batch {ov['batch']}, {ov['threads']} thread(s)): "
              f"{1e3 * ov['phi_s']:.2f} ms of {1e3 * ov['sampling_s']:.1f} ms sampling = **{100 * ov['overhead']:.2f}%**.", ""]
    for k, f in figures.items():
        L += [f"![{k}]({f})", ""]
    L += [f"Protocol: {settings['protocol']}", ""]
    return "\n".join(L)
