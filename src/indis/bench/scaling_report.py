"""Tables and summary of `indis bench scaling` (from the per-cell results; nothing is recomputed here)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..diagnose import HEAVY_TAIL, RECOMMEND_BELOW
from ..diagnose_curve import stalled
from .scaling_runs import decided_ci, known_to, pooled_ci, runs_lines, runs_summary, with_runs
from .scaling_variants import VARIANTS

#: phi's variants added after INDIS-D (INDIS-D has its own columns and lines), with what they read
NEW_VARIANTS = {k: v for k, v in VARIANTS.items() if k != "denoised_input"}

PREDICTION_TOLERANCE = 0.05  # the diagnostic's target: |predicted - trained INDIS/GOD| <= 0.05
#: GOD's teacher-MSE below this (data of unit scale; the teacher is exact to ~1e-7 relative) means a global schedule
#: already solves the cell (e.g. one Gaussian per class): ratios of two near-zero errors say nothing, so such cells are
#: listed but left out of the summary and of the prediction check
GOD_FLOOR = 1e-6


def solved(r: dict[str, Any]) -> bool:
    return r["god_mse"] < GOD_FLOOR


def curve(r: dict[str, Any]) -> dict[str, Any] | None:
    """The cell's stored learning curve of the diagnostic (None where it has none)."""
    return r["diagnosis"].get("extra", {}).get("curve")


def precise(r: dict[str, Any]) -> bool:
    """Whether the cell's trained ratio is known to +-PREDICTION_TOLERANCE (its interval's half-width)."""
    return known_to(r["ratio_ci"], PREDICTION_TOLERANCE)


def kept_god(r: dict[str, Any], design: str = "indis") -> bool:
    """Whether the cell's INDIS run (or that of phi's variant `design`, a result key) kept its GOD warm start (best
    validation at iteration 0)."""
    run = r.get("train", {}).get("indis") if design == "indis" else (r.get(design) or {}).get("train")
    return (run or {}).get("best_iter") == 0


def tied_ci(r: dict[str, Any], design: str = "indis", against: str = "ratio_ci") -> list[float]:
    """The interval of `design` (INDIS or a variant's result key) for counting wins and losses: against GOD
    ("ratio_ci"), its per-prior median against GOD ("median_ratio_ci") or a variant against INDIS ("vs_indis_ci"); a
    tie (`decided_ci`) where the design kept its GOD start (against INDIS: where both did)."""
    v = r if design == "indis" else r[design]
    ci = v["per_prior"]["median_ratio_ci"] if against == "median_ratio_ci" else v[against]
    return decided_ci(ci, kept_god(r, design) and (against != "vs_indis_ci" or kept_god(r)))


def cond_label(c: dict[str, Any]) -> str:
    return c["condition"] + ("" if c["guidance"] in (None, 1.0) else f" CFG {c['guidance']:g}")


def seed_agreement(results: list[dict[str, Any]]) -> dict[str, Any]:
    """How often two seeds of the same cell give trained INDIS/GOD ratios within PREDICTION_TOLERANCE of each other:
    the share of seed pairs a perfect predictor of one seed's ratio could hit for another (the target's noise floor)."""
    groups: dict[tuple, list[float]] = {}
    for r in results:
        key = tuple(sorted((k, str(v)) for k, v in r["cell"].items() if k != "seed"))
        groups.setdefault(key, []).append(r["ratio"])
    gaps = [abs(a - b) for v in groups.values() for i, a in enumerate(v) for b in v[i + 1:]]
    return {"cells": sum(len(v) > 1 for v in groups.values()), "pairs": len(gaps),
            "within_tolerance": float(np.mean(np.array(gaps) <= PREDICTION_TOLERANCE)) if gaps else None,
            "median_gap": float(np.median(gaps)) if gaps else None}


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of cells where INDIS beats GOD beyond the interval, the prediction error and recommendation accuracy."""
    skipped = [r["name"] for r in results if solved(r)]
    results = [r for r in results if not solved(r)]
    if not results:
        return {"cells": 0, "solved_by_god": skipped}
    err = np.array([abs(r["prediction_error"]) for r in results])
    reach = np.array([abs(r.get("reach_prediction_error", np.nan)) for r in results])
    group = np.array([abs(g - r["ratio"]) for r in results if (g := group_prediction(r)) is not None])
    wins = [r for r in results if tied_ci(r)[1] < 1.0]
    right, right_gain = rule_right(results, lambda r: r["diagnosis"]["recommendation"] == "INDIS")
    always, always_gain = rule_right(results, lambda r: True)
    told = [r for r in results if r["diagnosis"]["recommendation"] == "INDIS"]
    losses = [r for r in results if tied_ci(r)[0] > 1.0]
    exact = np.array([precise(r) for r in results])
    inside = np.array([r["ratio_ci"][0] <= r["diagnosis"]["predicted_ratio"] <= r["ratio_ci"][1] for r in results])
    pp = [r for r in results if r.get("per_prior")]
    dpp = [r for r in pp if (r.get("denoised_input") or {}).get("per_prior")]
    return {"cells": len(results), "indis_beyond_interval": len(wins), "indis_worse_beyond_interval": len(losses),
            "denoised_input": variant_counts(results, "denoised_input"),
            "variants": {k: variant_counts(results, k) for k in NEW_VARIANTS},
            "chosen_on_validation": chosen_on_validation(results),
            "chosen_among_designs": validation_choice(results, tuple(VARIANTS)),
            "median_ratio": float(np.median([r["ratio"] for r in results])),
            "per_prior": {"cells": len(pp), "heavy_tail": sum(heavy(r) for r in pp),
                          "gain_by_tail": gain_by_tail(pp),
                          "indis_median_below": sum(tied_ci(r, against="median_ratio_ci")[1] < 1.0 for r in pp),
                          "denoised_median_below": sum(tied_ci(r, "denoised_input", "median_ratio_ci")[1] < 1.0
                                                       for r in dpp)},
            "prediction_within_tolerance": float(np.mean(err <= PREDICTION_TOLERANCE)),
            "precise_cells": int(exact.sum()),
            "prediction_within_tolerance_precise": float(np.mean(err[exact] <= PREDICTION_TOLERANCE)) if exact.any() else None,
            "prediction_within_tolerance_or_interval": float(np.mean((err <= PREDICTION_TOLERANCE) | inside)),
            "trained_inside_predicted": float(np.mean([p[0] <= r["ratio"] <= p[1] for r in results
                                                       for p in [r["diagnosis"]["predicted_ci"]]])),
            "curve_states": curve_states(results), "stayed_at_god": stayed_at_god(results),
            "prediction_misses": prediction_misses(results),
            "prediction_mean_abs_error": float(err.mean()), "prediction_max_abs_error": float(err.max()),
            "recommendation_right_where_decided": right, "recommendation_right_at_threshold": right_gain,
            "always_indis_right_where_decided": always, "always_indis_right_at_threshold": always_gain,
            "indis_recommended": len(told), "indis_recommended_without_gain": sum(tied_ci(r)[1] >= 1.0 for r in told),
            "reach_prediction_within_tolerance": float(np.mean(reach <= PREDICTION_TOLERANCE)),
            "reach_prediction_mean_abs_error": float(np.nanmean(reach)),
            "group_prediction_within_tolerance": float(np.mean(group <= PREDICTION_TOLERANCE)) if len(group) else None,
            "group_cells": len(group),
            "curve_cells": sum(bool(curve(r)) for r in results),
            "tolerance": PREDICTION_TOLERANCE, "solved_by_god": skipped, "seed_agreement": seed_agreement(results),
            "training_runs": _runs(results)}


def _runs(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """`runs_summary`, and the recommendation judged against the interval pooled over the runs (`rule_right`)."""
    s = runs_summary(results, PREDICTION_TOLERANCE)
    return s and {**s, "recommendation_right": list(rule_right(
        with_runs(results), lambda r: r["diagnosis"]["recommendation"] == "INDIS", pooled_ci))}


def curve_states(results: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Cells with a learning-curve prediction, split by whether phi left GOD on its subsets (`stalled`): in each, how
    many, how often the prediction is within PREDICTION_TOLERANCE of the trained ratio, and in how many the trained
    INDIS gains more than 1 - RECOMMEND_BELOW (its interval wholly below RECOMMEND_BELOW)."""
    out = {}
    for key, want in (("stalled", True), ("moved", False)):
        g = [r for r in results if curve(r) and stalled(curve(r)) == want]
        out[key] = {"cells": len(g), "within_tolerance": sum(abs(r["prediction_error"]) <= PREDICTION_TOLERANCE for r in g),
                    "gained": sum(r["ratio_ci"][1] < RECOMMEND_BELOW for r in g)}
    return out


def prediction_misses(results: list[dict[str, Any]]) -> dict[str, int]:
    """The cells whose prediction is off by more than PREDICTION_TOLERANCE, by first matching cause: the trained ratio
    itself not known to +-PREDICTION_TOLERANCE ("imprecise": its interval's half-width); phi moved on the curve's
    subsets while the bench's INDIS kept its GOD start ("indis_kept_god"); phi stalled on the subsets while INDIS
    left GOD ("curve_stalled"); the rest ("other")."""
    out = {"imprecise": 0, "indis_kept_god": 0, "curve_stalled": 0, "other": 0}
    for r in results:
        if abs(r["prediction_error"]) <= PREDICTION_TOLERANCE:
            continue
        c, kept = curve(r), kept_god(r)
        key = ("imprecise" if not precise(r) else "indis_kept_god" if c and not stalled(c) and kept else
               "curve_stalled" if stalled(c) and not kept else "other")
        out[key] += 1
    return out


def stayed_at_god(results: list[dict[str, Any]]) -> dict[str, int]:
    """Cells whose INDIS run kept its GOD warm start (best validation at iteration 0), and in how many of them one of
    phi's variants, trained the same way from the same GOD, gains more than 1 - RECOMMEND_BELOW (interval wholly below
    RECOMMEND_BELOW): where x_T alone gave phi nothing it could learn and another input did."""
    stuck = [r for r in results if kept_god(r)]
    return {"cells": len(stuck), "variant_gains": sum(any((r.get(k) or {}).get("ratio_ci", [1, 1])[1] < RECOMMEND_BELOW
                                                          for k in VARIANTS) for r in stuck)}


def rule_right(results: list[dict[str, Any]], says_indis: Callable[[dict[str, Any]], bool],
               ci: Callable[[dict[str, Any]], list[float]] = tied_ci) -> tuple[str, str]:
    """How often a recommendation rule (`says_indis(cell)`: does it name INDIS) is right, as "right/decided": where the
    trained difference is beyond its interval, and asked as the diagnostic asks (does INDIS gain more than
    1 - RECOMMEND_BELOW: decided where the trained interval lies wholly on one side of RECOMMEND_BELOW; a gain of 1e-8
    relative beyond its interval counts in the first as a win a GOD recommendation missed, here as no gain worth
    INDIS's training). `ci(cell)`: the trained interval judged against (default the cell's own, `tied_ci`)."""
    out = []
    for line in (1.0, RECOMMEND_BELOW):
        decided = [r for r in results if ci(r)[1] < line or ci(r)[0] > line]
        out.append(f"{sum(bool(says_indis(r)) == (ci(r)[1] < line) for r in decided)}/{len(decided)}")
    return out[0], out[1]


def variant_counts(results: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """A phi variant (result key, e.g. "denoised_input") against INDIS over the cells that have it: better and worse
    beyond the interval, the median ratio to INDIS and to GOD."""
    rs = [r for r in results if r.get(key)]
    v = [r[key] for r in rs]
    cis = [tied_ci(r, key, "vs_indis_ci") for r in rs]
    return {"cells": len(v), "better_than_indis": sum(ci[1] < 1.0 for ci in cis),
            "worse_than_indis": sum(ci[0] > 1.0 for ci in cis),
            "median_vs_indis": float(np.median([x["vs_indis"] for x in v])) if v else None,
            **({"median_vs_god": float(np.median([x["ratio"] for x in v])),
                "median_indis_vs_god": float(np.median([r["ratio"] for r in rs]))} if v else {})}


def heavy(r: dict[str, Any]) -> bool:
    return r["per_prior"]["reference_tail_share"] > HEAVY_TAIL


def gain_by_tail(pp: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Cells with a heavy and a light GOD tail (`heavy`), and in each how many INDIS, and INDIS-D, end more than
    1 - RECOMMEND_BELOW below GOD (the trained interval wholly below RECOMMEND_BELOW)."""
    def pays(v: dict[str, Any] | None) -> bool:
        return bool(v) and v["ratio_ci"][1] < RECOMMEND_BELOW

    return {k: {"cells": len(g), "indis": sum(pays(r) for r in g), "indis_d": sum(pays(r.get("denoised_input")) for r in g)}
            for k, g in (("heavy", [r for r in pp if heavy(r)]), ("light", [r for r in pp if not heavy(r)]))}


def picks_denoised(r: dict[str, Any]) -> bool | None:
    """Whether validation chooses INDIS-D over INDIS in this cell (its best validation loss is lower), as a user who
    trains both would; None where either validation loss is not recorded."""
    pick = validation_pick(r, ("denoised_input",))
    return None if pick is None else pick == "denoised_input"


def validation_pick(r: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    """The design with the lowest best validation loss in this cell among INDIS ("indis") and the variants `keys`
    (INDIS kept on a tie); None where any of their validation losses is not recorded."""
    vals = {"indis": r.get("train", {}).get("indis", {}).get("best_val")}
    vals.update({k: ((r.get(k) or {}).get("train") or {}).get("best_val") for k in keys})
    if any(v is None for v in vals.values()):
        return None
    return min(vals, key=lambda k: vals[k])


def validation_choice(results: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    """A user who trains INDIS and the variants `keys` and keeps the lowest validation loss, over the cells that record
    all of them: how often each is chosen, where the choice is better or worse than INDIS beyond the paired interval,
    how often INDIS is kept while a variant is better, and the median ratio to GOD of each design and of the choice."""
    rows = [(r, p) for r in results if (p := validation_pick(r, keys)) is not None]
    if not rows:
        return {"cells": 0}

    def ratio(r: dict[str, Any], k: str) -> float:
        return r["ratio"] if k == "indis" else r[k]["ratio"]

    def beyond(r: dict[str, Any], k: str, better: bool) -> bool:
        lo, hi = tied_ci(r, k, "vs_indis_ci")
        return hi < 1.0 if better else lo > 1.0

    return {"cells": len(rows), "picks": {k: sum(p == k for _, p in rows) for k in ("indis", *keys)},
            "better_than_indis": sum(p != "indis" and beyond(r, p, True) for r, p in rows),
            "worse_than_indis": sum(p != "indis" and beyond(r, p, False) for r, p in rows),
            "missed": sum(p == "indis" and any(beyond(r, k, True) for k in keys) for r, p in rows),
            "median_ratio": {**{k: float(np.median([ratio(r, k) for r, _ in rows])) for k in ("indis", *keys)},
                             "chosen": float(np.median([ratio(r, p) for r, p in rows]))}}


def chosen_on_validation(results: list[dict[str, Any]]) -> dict[str, Any]:
    """INDIS or INDIS-D, whichever has the lower validation loss, per cell (`validation_choice` of INDIS-D alone)."""
    c = validation_choice(results, ("denoised_input",))
    if not c["cells"]:
        return c
    m = c["median_ratio"]
    return {**{k: c[k] for k in ("cells", "better_than_indis", "worse_than_indis", "missed")},
            "picks_denoised": c["picks"]["denoised_input"],
            "median_ratio": {"indis": m["indis"], "indis_d": m["denoised_input"], "chosen": m["chosen"]}}


def group_prediction(r: dict[str, Any]) -> float | None:
    """The group-schedule prediction of a cell (the reported prediction itself in diagnoses before the learning curve;
    None where the diagnostic skipped the group fits)."""
    x = r["diagnosis"].get("extra", {})
    if x.get("groups") is False:
        return None
    return x.get("group_prediction", r["diagnosis"]["predicted_ratio"])


def _fmt(v: Any, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _dv(r: dict[str, Any]) -> str:
    v = r.get("denoised_input")
    return "-" if not v else f"{_fmt(v['vs_indis'])} [{_fmt(v['vs_indis_ci'][0])}, {_fmt(v['vs_indis_ci'][1])}]"


def to_markdown(res: dict[str, Any]) -> str:
    rows = sorted(res["cells"], key=lambda r: (r["cell"]["model"], r["cell"]["nfe"], cond_label(r["cell"]),
                                               r["cell"]["K"] or 0, r["cell"]["d"], r["cell"]["seed"]))
    L = ["# indis bench scaling", "", "Exact Gaussian mixtures (no model error): INDIS against GOD (same shift/scale "
         "freedoms), iPNDM, teacher-MSE on test priors. Ratio < 1: INDIS better; [CI]: 95% paired bootstrap.", "",
         *([f"**{len(res['missing'])} cells of the grid asked for are not computed yet and are left out** "
            f"(`--report-only`): {', '.join(res['missing'])}.", ""] if res.get("missing") else []),
         "| model | d | K | condition | NFE | seed | INDIS/GOD [CI] | INDIS-D/INDIS [CI] | INDIS-P, INDIS-PD /GOD | oracle/GOD | "
         "gap closed | eps_half | predicted [CI] | by groups | by reach | recommends |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c, dg = r["cell"], r["diagnosis"]
        note = f" (GOD exact: {r['god_mse']:.1e})" if solved(r) else ""
        L.append(f"| {c['model']} | {c['d']} | {c['K'] or 'BIC'} | {cond_label(c)} | {c['nfe']} | {c['seed']} | "
                 f"{_fmt(r['ratio'])} [{_fmt(r['ratio_ci'][0])}, {_fmt(r['ratio_ci'][1])}]{note} | {_dv(r)} | "
                 f"{', '.join(_fmt((r.get(k) or {}).get('ratio')) for k in NEW_VARIANTS)} | {_fmt(r['oracle_over_god'])} | "
                 f"{_fmt(r['gap_closed'], 2)} | {_fmt(r['eps_half'], 2)} | {_fmt(dg['predicted_ratio'])} "
                 f"[{_fmt(dg['predicted_ci'][0])}, {_fmt(dg['predicted_ci'][1])}] | {_fmt(group_prediction(r))} | "
                 f"{_fmt(dg.get('reach_ratio'))} | "
                 f"{dg['recommendation']} |")
    L += _summary_lines(res.get("summary", {}))
    L += per_prior_table(rows)
    if res.get("figure"):
        L += ["", f"![scaling]({res['figure']})"]
    return "\n".join(L) + "\n"


def _summary_lines(s: dict[str, Any]) -> list[str]:
    """The summary's paragraphs under the table (none without counted cells)."""
    L: list[str] = []
    if s.get("cells"):
        L += ["", f"INDIS below GOD beyond the interval in {s['indis_beyond_interval']} of {s['cells']} cells, above it in "
              f"{s.get('indis_worse_beyond_interval', 0)} (median ratio {s['median_ratio']:.3f}; a cell whose INDIS kept its GOD "
              f"start counts as a tie: it is GOD's schedule, and the at most ~1e-6 relative difference a paired interval can "
              f"exclude there is float round-off). The diagnostic's "
              f"predicted ratio (phi's learning curve in {s.get('curve_cells', 0)} cells, else group schedules) is within "
              f"+-{s['tolerance']} of the trained one in {100 * s['prediction_within_tolerance']:.0f}% of the cells (mean "
              f"|error| {s['prediction_mean_abs_error']:.3f}, max {s['prediction_max_abs_error']:.3f}); "
              + (f"the group prediction in {100 * s['group_prediction_within_tolerance']:.0f}% (of {s['group_cells']} cells "
                 f"with group fits), " if s.get("group_cells") else "")
              + f"the reach prediction "
              f"in {100 * s['reach_prediction_within_tolerance']:.0f}% (mean |error| {s['reach_prediction_mean_abs_error']:.3f}). "
              f"The recommendation is right in {s['recommendation_right_where_decided']} cells where the trained difference "
              f"is beyond its interval; it names INDIS in {s.get('indis_recommended', '-')} cells, "
              f"{s.get('indis_recommended_without_gain', '-')} of them without a gain beyond the interval."
              + (f" Asked as the recommendation asks it (does INDIS gain more than {1 - RECOMMEND_BELOW:.0%}: the "
                 f"trained interval wholly below or wholly above {RECOMMEND_BELOW}), it is right in "
                 f"{s['recommendation_right_at_threshold']} cells." if s.get("recommendation_right_at_threshold") else "")
              + (f" For scale, naming INDIS everywhere would be right in {s['always_indis_right_where_decided']} and "
                 f"{s['always_indis_right_at_threshold']} (INDIS starts from GOD and keeps it unless validation "
                 "improves, so it seldom loses beyond the interval: the strict count rewards always training it, the "
                 "2% question is where the diagnostic earns its cost)." if s.get("always_indis_right_at_threshold") else "")]
        if s.get("precise_cells") is not None:
            wp = s.get("prediction_within_tolerance_precise")
            L += ["", f"Where the trained ratio is itself known to +-{s['tolerance']} (its interval's half-width; "
                  f"{s['precise_cells']} of {s['cells']} cells) the prediction is within +-{s['tolerance']} in "
                  f"{'-' if wp is None else f'{100 * wp:.0f}%'}; within +-{s['tolerance']} or inside the trained "
                  f"interval in {100 * s['prediction_within_tolerance_or_interval']:.0f}% of all cells."]
        L += _curve_state_lines(s)
        sa = s.get("seed_agreement") or {}
        if sa.get("pairs"):
            L += ["", f"Seed to seed: in {sa['cells']} cells run with several seeds, two seeds' trained ratios lie within "
                  f"+-{s['tolerance']} of each other in {100 * sa['within_tolerance']:.0f}% of {sa['pairs']} pairs (median gap "
                  f"{sa['median_gap']:.3f}): no prediction can be checked more closely than that."]
        L += runs_lines(s)
        dv = s.get("denoised_input") or {}
        if dv.get("cells"):
            L += ["", f"INDIS-D (phi also reads D(x_T, t_max), the solver's first model output, at no extra NFE) against "
                  f"INDIS: better beyond the interval in {dv['better_than_indis']} of {dv['cells']} cells, worse in "
                  f"{dv['worse_than_indis']} (median ratio {dv['median_vs_indis']:.3f})."]
        for key, (name, what) in NEW_VARIANTS.items():
            v = (s.get("variants") or {}).get(key) or {}
            if v.get("cells"):
                L += ["", f"{name} (phi reads {what}) against INDIS: better beyond the interval in "
                      f"{v['better_than_indis']} of {v['cells']} cells, worse in {v['worse_than_indis']} (median ratio "
                      f"{v['median_vs_indis']:.3f}; to GOD {v['median_vs_god']:.3f} where INDIS has "
                      f"{v['median_indis_vs_god']:.3f})."]
        cv = s.get("chosen_on_validation") or {}
        if cv.get("cells"):
            m = cv["median_ratio"]
            L += ["", f"Trained both and kept the one with the lower validation loss (what a user can do): INDIS-D is chosen "
                  f"in {cv['picks_denoised']} of {cv['cells']} cells, better than INDIS beyond the interval in "
                  f"{cv['better_than_indis']} of them and worse in {cv['worse_than_indis']}; INDIS-D is better but not "
                  f"chosen in {cv['missed']}. Median ratio to GOD: INDIS {m['indis']:.3f}, INDIS-D {m['indis_d']:.3f}, "
                  f"the choice {m['chosen']:.3f}."]
        L += designs_choice_lines(s.get("chosen_among_designs") or {})
    pp = s.get("per_prior") or {}
    if pp.get("cells"):
        L += ["", f"Per prior: in {pp['heavy_tail']} of {pp['cells']} cells GOD's worst 1% of test priors carry over 20% of "
              f"its error (the mean ratio is then decided by a few priors); the median per-prior ratio to GOD is below 1 "
              f"beyond its interval for INDIS in {pp['indis_median_below']} cells, for INDIS-D in {pp['denoised_median_below']}."]
        if pp.get("gain_by_tail"):
            h, lt = pp["gain_by_tail"]["heavy"], pp["gain_by_tail"]["light"]
            L[-1] += (f" INDIS gains more than {1 - RECOMMEND_BELOW:.0%} (interval wholly below {RECOMMEND_BELOW}) in "
                      f"{h['indis']} of the {h['cells']} heavy-tailed cells (INDIS-D in {h['indis_d']}) and in {lt['indis']} "
                      f"of the {lt['cells']} others (INDIS-D in {lt['indis_d']}).")
    return L


def _curve_state_lines(s: dict[str, Any]) -> list[str]:
    """Paragraphs on the predicted interval's coverage and the cells where phi's learning curve stalled, and on the
    cells where the bench's INDIS kept its GOD start (none where the summary has no such counts)."""
    cs = s.get("curve_states") or {}
    st, mv = cs.get("stalled") or {}, cs.get("moved") or {}
    sg = s.get("stayed_at_god") or {}
    L: list[str] = []
    if s.get("trained_inside_predicted") is not None and (st.get("cells") or mv.get("cells")):
        L += ["", f"The predicted interval (a bootstrap over the diagnostic's scored priors: the scoring noise of one "
              f"learning curve, not the spread of training runs) contains the trained ratio in "
              f"{100 * s['trained_inside_predicted']:.0f}% of the cells. In {st['cells']} cells phi did not leave GOD on "
              f"any subset of its learning curve (prediction 1.000, `indis eval --diagnose` says so); the trained INDIS "
              f"still gained more than {1 - RECOMMEND_BELOW:.0%} in {st['gained']} of them, and the prediction is within "
              f"+-{s['tolerance']} in {st['within_tolerance']}. In the {mv['cells']} cells where phi moved, INDIS gained "
              f"more than {1 - RECOMMEND_BELOW:.0%} in {mv['gained']} and the prediction is within +-{s['tolerance']} in "
              f"{mv['within_tolerance']}."]
    pm = s.get("prediction_misses") or {}
    if sum(pm.values()):
        L += ["", f"The {sum(pm.values())} predictions off by more than +-{s['tolerance']}: the trained ratio itself not "
              f"known to +-{s['tolerance']} in {pm['imprecise']}; phi learned on the curve's subsets while the bench's "
              f"INDIS kept its GOD start in {pm['indis_kept_god']}; phi stalled on the subsets while INDIS left GOD in "
              f"{pm['curve_stalled']}; other misses {pm['other']}."]
    if sg.get("cells"):
        L += ["", f"The bench's INDIS kept its GOD warm start (best validation at iteration 0) in {sg['cells']} cells; a "
              f"variant of phi (INDIS-D, -P or -PD) gained more than {1 - RECOMMEND_BELOW:.0%} in "
              f"{sg['variant_gains']} of them."]
    return L


def designs_choice_lines(ca: dict[str, Any]) -> list[str]:
    """The summary paragraph of `validation_choice` over INDIS and its variants (none without such cells)."""
    if not ca.get("cells"):
        return []
    names = {"indis": "INDIS", **{k: v[0] for k, v in VARIANTS.items()}}
    m = ca["median_ratio"]
    return ["", f"Trained {', '.join(names[k] for k in ca['picks'])} and kept the lowest validation loss "
            f"({ca['cells']} cells that have them all): chosen " + ", ".join(f"{names[k]} in {n}" for k, n in ca["picks"].items())
            + f"; better than INDIS beyond the interval in {ca['better_than_indis']}, worse in {ca['worse_than_indis']}; "
            f"INDIS kept where a variant is better in {ca['missed']}. Median ratio to GOD: "
            + ", ".join(f"{names[k]} {v:.3f}" for k, v in m.items() if k != "chosen") + f", the choice {m['chosen']:.3f}."]


def _view(v: dict[str, Any] | None, mean: float | None) -> str:
    if not v:
        return "- | - | -"
    lo, hi = v["median_ratio_ci"]
    return f"{_fmt(mean)} | {_fmt(v['winsorized_ratio'])} | {_fmt(v['median_ratio'])} [{_fmt(lo)}, {_fmt(hi)}]"


def per_prior_table(rows: list[dict[str, Any]]) -> list[str]:
    """Mean, winsorised and median per-prior ratios to GOD of INDIS and INDIS-D, and how much of GOD's error its worst
    1% of test priors carry: where a few catastrophic priors (a sample sent to the wrong mode) decide the mean."""
    rows = [r for r in rows if r.get("per_prior") and not solved(r)]
    if not rows:
        return []
    L = ["", "Per prior (test priors; ratios to GOD): the mean ratio above, the ratio after winsorising both errors at "
         "their pooled 99th percentile, and the median of the per-prior ratios [95% bootstrap CI]; 'GOD worst 1%': the "
         "share of GOD's total error carried by its worst 1% of priors.", "",
         "| model | d | K | condition | NFE | seed | GOD worst 1% | INDIS mean | winsorised | median [CI] | "
         "INDIS-D mean | winsorised | median [CI] |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c, dv = r["cell"], r.get("denoised_input") or {}
        L.append(f"| {c['model']} | {c['d']} | {c['K'] or 'BIC'} | {cond_label(c)} | {c['nfe']} | {c['seed']} | "
                 f"{_fmt(r['per_prior']['reference_tail_share'], 2)} | {_view(r['per_prior'], r['ratio'])} | "
                 f"{_view(dv.get('per_prior'), dv.get('ratio'))} |")
    return L
