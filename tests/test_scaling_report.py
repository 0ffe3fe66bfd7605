"""The report of `indis bench scaling` on hand-made cells: its counts, columns, the choice among phi's designs on
validation, the figure, and --report-only."""
from __future__ import annotations

import json

from indis.bench import scaling as sc
from indis.bench import scaling_report as rep


def _cell(d, ratio, ci, dv, god=1e-3, pred=0.9):
    return {"cell": {"model": "random", "d": d, "K": 2, "condition": "none", "guidance": None, "nfe": 3, "seed": 0},
            "name": f"c{d}", "god_mse": god, "ratio": ratio, "ratio_ci": ci, "oracle_over_god": 0.5, "gap_closed": 0.1,
            "eps_half": 0.2, "prediction_error": pred - ratio, "reach_prediction_error": 0.0,
            "diagnosis": {"predicted_ratio": pred, "predicted_ci": [pred - 0.1, pred + 0.1], "reach_ratio": ratio,
                          "recommendation": "INDIS"},
            "denoised_input": dv}


def _dv(r, ci):
    return {"ratio": r, "ratio_ci": ci, "vs_indis": r, "vs_indis_ci": ci, "mse": 0.0, "train": {}}


def _five():
    """Five hand-made cells: d = 2 and 64 gain, d = 8 ties, d = 256 is solved by GOD, d = 1024 loses."""
    return [_cell(2, 0.5, [0.4, 0.6], _dv(0.8, [0.7, 0.9])), _cell(8, 1.0, [0.98, 1.02], _dv(1.1, [1.05, 1.2])),
            _cell(64, 0.9, [0.85, 0.95], _dv(1.0, [0.9, 1.1])), _cell(256, 1.0, [1.0, 1.0], None, god=1e-9),
            _cell(1024, 1.4, [1.1, 2.0], None)]


def test_report_counts_and_recommendation():
    res = _five()
    s = rep.summarize(res)
    assert s["cells"] == 4 and s["solved_by_god"] == ["c256"] and s["indis_beyond_interval"] == 2
    assert s["indis_worse_beyond_interval"] == 1  # an INDIS worse than GOD beyond its interval is counted, not hidden
    assert s["indis_recommended"] == 4 and s["indis_recommended_without_gain"] == 2  # false alarms are counted too
    # at the recommendation's threshold 0.98: d = 2 and 64 gain more (right), d = 1024 loses (wrong), d = 8's interval
    # [0.98, 1.02] touches 0.98 (undecided); the strict reading decides d = 2, 64 (right) and 1024 (wrong)
    assert s["recommendation_right_where_decided"] == "2/3" and s["recommendation_right_at_threshold"] == "2/3"
    res[1]["ratio_ci"] = [0.985, 1.02]  # now wholly above 0.98 though not beyond 1: INDIS named without a 2% gain
    assert rep.summarize(res)["recommendation_right_at_threshold"] == "2/4"
    assert rep.summarize(res)["recommendation_right_where_decided"] == "2/3"
    res[1]["ratio_ci"] = [0.98, 1.02]
    res[2]["diagnosis"]["recommendation"] = "GOD"  # d = 64 gains 10%: a GOD recommendation is wrong in both readings
    t = rep.summarize(res)
    assert t["recommendation_right_where_decided"] == "1/3" and t["recommendation_right_at_threshold"] == "1/3"
    assert t["always_indis_right_where_decided"] == "2/3" and t["always_indis_right_at_threshold"] == "2/3"
    assert "naming INDIS everywhere would be right in 2/3 and 2/3" in rep.to_markdown({"cells": res, "summary": t})


def test_report_curve_states_and_interval_coverage():
    res = _five()  # predicted 0.9 [0.8, 1.0] everywhere: trained 0.5 (d 2), 1.0 (d 8) and 0.9 (d 64) of the four counted
    assert rep.summarize(res)["trained_inside_predicted"] == 0.5  # 1.0 and 0.9 inside; 0.5 and 1.4 outside
    assert rep.summarize(res)["curve_states"]["stalled"]["cells"] == 0  # no cell has a learning curve
    for r, at in zip(res, ([1.0, 1.0], [1.0, 0.9995], [0.95, 0.9], None, [1.0, 1.0])):
        r["diagnosis"]["extra"] = {"curve": {"at_sizes": at}} if at else {}
    cs = rep.summarize(res)["curve_states"]  # d = 256 (solved by GOD) is not counted
    # stalled: d = 2 (gains, error 0.4), d = 8 (no gain, error 0.1), d = 1024 (loses, error 0.5); moved: d = 64
    assert cs == {"stalled": {"cells": 3, "within_tolerance": 0, "gained": 1},
                  "moved": {"cells": 1, "within_tolerance": 1, "gained": 1}}
    md = rep.to_markdown({"cells": res, "summary": rep.summarize(res)})
    assert "contains the trained ratio in 50% of the cells. In 3 cells phi did not leave GOD" in md
    assert rep.summarize(res)["stayed_at_god"] == {"cells": 0, "variant_gains": 0}  # no cell records INDIS's run
    for r, it in zip(res, (0, 0, 25, 0, 0)):
        r["train"] = {"indis": {"best_iter": it}}
    # stayed at GOD: d = 2, 8, 1024 (d = 256 not counted); of these only d = 2's INDIS-D gains beyond 0.98 ([0.7, 0.9])
    assert rep.summarize(res)["stayed_at_god"] == {"cells": 3, "variant_gains": 1}
    assert "kept its GOD warm start (best validation at iteration 0) in 3 cells; a variant of phi (INDIS-D, -P or -PD) " \
           "gained more than 2% in 1 of them." in rep.to_markdown({"cells": res, "summary": rep.summarize(res)})
    # misses (|error| > 0.05): d = 2 (0.4; trained [0.4, 0.6] imprecise), d = 8 (0.1; [0.98, 1.02] precise, curve
    # stalled, INDIS kept GOD: none of the named causes), d = 1024 (0.5; [1.1, 2.0] imprecise); d = 64 is hit
    assert rep.summarize(res)["prediction_misses"] == {"imprecise": 2, "indis_kept_god": 0, "curve_stalled": 0, "other": 1}
    res[1]["diagnosis"]["extra"]["curve"]["at_sizes"] = [0.95, 0.9]  # now phi moved on the subsets, INDIS did not
    assert rep.summarize(res)["prediction_misses"]["indis_kept_god"] == 1
    res[1]["train"]["indis"]["best_iter"], res[1]["diagnosis"]["extra"]["curve"]["at_sizes"] = 50, [1.0, 1.0]
    assert rep.summarize(res)["prediction_misses"]["curve_stalled"] == 1  # the reverse
    assert "The 3 predictions off by more than +-0.05: the trained ratio itself not known to +-0.05 in 2" in \
        rep.to_markdown({"cells": res, "summary": rep.summarize(res)})


def test_report_variant_columns():
    res = _five()
    s = rep.summarize(res)
    assert s["denoised_input"] == {"cells": 3, "better_than_indis": 1, "worse_than_indis": 1, "median_vs_indis": 1.0,
                                   "median_vs_god": 1.0, "median_indis_vs_god": 0.9}  # INDIS at 0.5, 1.0, 0.9 there
    assert s["variants"]["projected_input"] == {"cells": 0, "better_than_indis": 0, "worse_than_indis": 0,
                                                "median_vs_indis": None}
    assert "INDIS-P (phi reads" not in rep.to_markdown({"cells": res, "summary": s})  # no cell has it: no line
    res[0]["projected_input"] = _dv(0.6, [0.5, 0.7])  # a later variant on one cell only: counted over that cell
    s_p = rep.summarize(res)["variants"]["projected_input"]
    assert s_p["cells"] == 1 and s_p["better_than_indis"] == 1 and s_p["median_indis_vs_god"] == 0.5
    md_p = rep.to_markdown({"cells": res, "summary": rep.summarize(res)})
    assert "INDIS-P (phi reads x_T projected" in md_p and "better beyond the interval in 1 of 1 cells, worse in 0" in md_p
    assert "| 0.800 [0.700, 0.900] | 0.600, - |" in md_p and "| 1.100 [1.050, 1.200] | -, - |" in md_p
    del res[0]["projected_input"]
    md = rep.to_markdown({"cells": res, "summary": s})
    assert "| 0.800 [0.700, 0.900] |" in md and "better beyond the interval in 1 of 3 cells, worse in 1" in md
    assert "beyond the interval in 2 of 4 cells, above it in 1" in md
    assert "it names INDIS in 4 cells, 2 of them without a gain beyond the interval" in md
    assert "wholly below or wholly above 0.98), it is right in 2/3 cells" in md
    assert s["seed_agreement"]["pairs"] == 0 and "Seed to seed" not in md  # one seed per cell: nothing to compare
    # intervals of half-width <= 0.05 at d = 8 and 64; 0.9 is inside d = 64's and within 0.05 of it, outside the others
    assert s["precise_cells"] == 2 and s["prediction_within_tolerance_precise"] == 0.5
    assert s["prediction_within_tolerance_or_interval"] == 0.25
    assert "(its interval's half-width; 2 of 4 cells) the prediction is within +-0.05 in 50%" in md


def test_report_group_predictions():
    res = _five()
    s = rep.summarize(res)
    # cells whose diagnosis skipped the group fits count only in the other predictions' records, not as group hits
    assert s["group_cells"] == 4 and s["group_prediction_within_tolerance"] == 0.25  # |0.9 - ratio| <= 0.05: d = 64
    res[2]["diagnosis"]["extra"] = {"groups": False}
    assert rep.group_prediction(res[2]) is None
    s2 = rep.summarize(res)
    assert s2["group_cells"] == 3 and s2["group_prediction_within_tolerance"] == 0.0
    assert s2["prediction_within_tolerance"] == s["prediction_within_tolerance"]
    assert "| - | 0.900 | INDIS |" in rep.to_markdown({"cells": res, "summary": s2})
    for r in res:  # no cell with group fits: the group clause is left out, not printed as nan%
        r["diagnosis"]["extra"] = {"groups": False}
    md = rep.to_markdown({"cells": res, "summary": rep.summarize(res)})
    assert "nan" not in md and "the group prediction" not in md and "the reach prediction in" in md


def test_report_per_prior_views_and_seed_agreement():
    res = _five()
    more = [dict(_cell(2, 0.53, [0.4, 0.6], None), cell={**res[0]["cell"], "seed": 1}),
            dict(_cell(2, 0.70, [0.6, 0.8], None), cell={**res[0]["cell"], "seed": 2})]
    view = {"median_ratio": 0.25, "median_ratio_ci": [0.2, 0.3], "winsorized_ratio": 0.4, "tail": 0.01, "tail_share": 0.1,
            "reference_tail_share": 0.5}
    res[0]["per_prior"] = view
    res[0]["denoised_input"]["per_prior"] = dict(view, median_ratio_ci=[0.9, 1.1])
    s = rep.summarize(res)
    assert s["per_prior"] == {"cells": 1, "heavy_tail": 1, "indis_median_below": 1, "denoised_median_below": 0,
                              "gain_by_tail": {"heavy": {"cells": 1, "indis": 1, "indis_d": 1},
                                               "light": {"cells": 0, "indis": 0, "indis_d": 0}}}
    res[2]["per_prior"] = dict(view, reference_tail_share=0.1)  # light tail; INDIS [0.85, 0.95] pays, INDIS-D [0.9, 1.1] not
    assert rep.summarize(res)["per_prior"]["gain_by_tail"]["light"] == {"cells": 1, "indis": 1, "indis_d": 0}
    res[2]["per_prior"]["reference_tail_share"] = 0.2  # the boundary is light: "more than 20%" is heavy
    assert rep.summarize(res)["per_prior"]["heavy_tail"] == 1
    del res[2]["per_prior"]
    md = rep.to_markdown({"cells": res, "summary": s})
    assert "INDIS gains more than 2% (interval wholly below 0.98) in 1 of the 1 heavy-tailed cells (INDIS-D in 1)" in md
    assert "| 0.50 | 0.500 | 0.400 | 0.250 [0.200, 0.300] | 0.800 | 0.400 | 0.250 [0.900, 1.100] |" in md
    assert "in 1 of 1 cells GOD's worst 1% of test priors carry over 20%" in md
    sa = rep.summarize(res + more)["seed_agreement"]  # ratios 0.5, 0.53, 0.7: gaps 0.03, 0.2, 0.17
    assert sa["cells"] == 1 and sa["pairs"] == 3 and abs(sa["within_tolerance"] - 1 / 3) < 1e-12
    assert abs(sa["median_gap"] - 0.17) < 1e-12


def test_report_counts_the_choice_between_indis_and_indis_d_on_validation():
    """The choice a user who trains both makes: INDIS-D where its validation loss is lower. Four hand-made cells: chosen
    and better, chosen and worse, better but not chosen, and one with no recorded validation loss (left out)."""
    from indis.bench import scaling_report as rep

    def cell(ratio, d_ratio, ci, val_i, val_d):
        return {"ratio": ratio, "train": {"indis": {} if val_i is None else {"best_val": val_i}},
                "denoised_input": {"ratio": d_ratio, "vs_indis": d_ratio / ratio, "vs_indis_ci": ci,
                                   "train": {"best_val": val_d}}}

    res = [cell(0.9, 0.45, [0.4, 0.6], 1.0, 0.5), cell(0.8, 0.96, [1.1, 1.3], 1.0, 0.9),
           cell(1.0, 0.7, [0.6, 0.8], 1.0, 1.2), cell(0.5, 0.1, [0.1, 0.3], None, 0.1)]
    assert [rep.picks_denoised(r) for r in res] == [True, True, False, None]
    c = rep.chosen_on_validation(res)
    assert (c["cells"], c["picks_denoised"], c["better_than_indis"], c["worse_than_indis"], c["missed"]) == (3, 2, 1, 1, 1)
    # chosen ratios 0.45, 0.96, 1.0; INDIS 0.9, 0.8, 1.0; INDIS-D 0.45, 0.96, 0.7
    assert c["median_ratio"] == {"indis": 0.9, "indis_d": 0.7, "chosen": 0.96}
    assert rep.chosen_on_validation(res[3:]) == {"cells": 0}


def test_report_counts_the_choice_among_every_phi_design_on_validation():
    """A user who trains INDIS and every variant and keeps the lowest validation loss. Hand-made cells: a variant chosen
    and better, one chosen and worse, INDIS kept on a tie while a variant is better, one cell missing a variant's
    validation loss (left out); the markdown names each design's count."""
    from indis.bench import scaling_report as rep

    def cell(ratio, val_i, **v):  # v: key -> (ratio, ci against INDIS, validation loss)
        r = {"ratio": ratio, "train": {"indis": {"best_val": val_i}}}
        for k, (x, ci, val) in v.items():
            r[k] = {"ratio": x, "vs_indis": x / ratio, "vs_indis_ci": ci, "train": {} if val is None else {"best_val": val}}
        return r

    keys = ("denoised_input", "projected_denoised")
    res = [cell(0.9, 1.0, denoised_input=(0.8, [0.85, 0.95], 0.9), projected_denoised=(0.45, [0.4, 0.6], 0.5)),
           cell(0.8, 1.0, denoised_input=(0.96, [1.1, 1.3], 0.7), projected_denoised=(0.8, [0.9, 1.1], 0.8)),
           cell(1.0, 1.0, denoised_input=(0.7, [0.6, 0.8], 1.0), projected_denoised=(1.0, [0.99, 1.01], 1.2)),
           cell(0.5, 1.0, denoised_input=(0.1, [0.1, 0.3], 0.1), projected_denoised=(0.5, [0.9, 1.1], None))]
    assert [rep.validation_pick(r, keys) for r in res] == ["projected_denoised", "denoised_input", "indis", None]
    c = rep.validation_choice(res, keys)
    assert c["cells"] == 3 and c["picks"] == {"indis": 1, "denoised_input": 1, "projected_denoised": 1}
    assert (c["better_than_indis"], c["worse_than_indis"], c["missed"]) == (1, 1, 1)
    # chosen ratios 0.45, 0.96, 1.0; INDIS 0.9, 0.8, 1.0; INDIS-D 0.8, 0.96, 0.7; INDIS-PD 0.45, 0.8, 1.0
    assert c["median_ratio"] == {"indis": 0.9, "denoised_input": 0.8, "projected_denoised": 0.8, "chosen": 0.96}
    assert rep.validation_choice(res[3:], keys) == {"cells": 0}
    line = "".join(rep.designs_choice_lines(c))
    assert line.startswith("Trained INDIS, INDIS-D, INDIS-PD and kept the lowest validation loss (3 cells")
    assert "chosen INDIS in 1, INDIS-D in 1, INDIS-PD in 1; better than INDIS beyond the interval in 1, worse in 1" in line
    assert rep.designs_choice_lines({"cells": 0}) == []


def test_figure_has_a_panel_per_nfe_and_leaves_out_exact_cells(tmp_path, monkeypatch):
    from indis.bench import scaling_plots as sp

    def cell(d, K, cond, g, nfe, seed, ratio, god=1e-3):
        return {"cell": {"model": "random", "d": d, "K": K, "condition": cond, "guidance": g, "nfe": nfe, "seed": seed},
                "god_mse": god, "ratio": ratio, "ratio_ci": [ratio - 0.1, ratio + 0.1], "eps_half": 0.1}
    res = [cell(2, 2, "none", None, 3, 0, 0.5), cell(64, 2, "none", None, 3, 0, 0.8), cell(64, 2, "none", None, 3, 1, 1.0),
           cell(2, 10, "class", 4.0, 5, 0, 0.3), cell(8, 10, "class", 1.0, 5, 0, 1.0, god=1e-12)]
    digits = cell(64, None, "class", 1.0, 3, 0, 1e-5)  # the digits mixture: drawn too (a log axis; its interval below 0)
    digits["cell"]["model"] = "digits-gmm"
    res.insert(3, digits)
    drawn, lines_of = [], sp._lines
    monkeypatch.setattr(sp, "_lines", lambda rnd: drawn.append(rnd) or lines_of(rnd))
    assert sp.figure(res, tmp_path / "s.png") == "s.png" and (tmp_path / "s.png").stat().st_size > 0
    assert len(drawn[0]) == 5  # the cell where GOD is exact is not drawn
    lines = lines_of(drawn[0])
    assert set(lines) == {(3, 2, "none"), (3, None, "class"), (5, 10, "class CFG 4")}  # one per NFE, K and condition
    assert sorted(lines[(3, 2, "none")]) == [2, 64] and len(lines[(3, 2, "none")][64]) == 2  # seeds pooled per d
    assert sp.figure([res[-1]], tmp_path / "t.png") is None  # nothing to draw: no file


def test_prediction_figure_adds_the_pooled_panel_only_with_training_runs(tmp_path, monkeypatch):
    import indis.plots
    from indis.bench import scaling_plots as sp

    def cell(d, ratio, pred, god=1e-3):
        return {"cell": {"model": "random", "d": d, "K": 2, "condition": "none", "guidance": None, "nfe": 3, "seed": 0},
                "god_mse": god, "ratio": ratio, "ratio_ci": [ratio - 0.1, ratio + 0.1],
                "diagnosis": {"predicted_ratio": pred}}
    res = [cell(2, 0.5, 0.0), cell(64, 1.0, 1.0), cell(8, 1.0, 0.9, god=1e-12)]  # a prediction of 0 and an exact cell
    made, new = [], indis.plots.new_figure
    monkeypatch.setattr(indis.plots, "new_figure", lambda *a, **k: made.append(a) or new(*a, **k))
    assert sp.prediction_figure(res, tmp_path / "p.png") == "p.png" and (tmp_path / "p.png").stat().st_size > 0
    res[0]["training_runs"] = {"count": 3, "ratios": [0.5, 0.3, 0.7], "ratio": 0.5, "ratio_ci": [0.2, 0.9]}
    assert sp.prediction_figure(res, tmp_path / "q.png") == "q.png"
    assert [a[0] for a in made] == [1, 2]  # one panel, then the pooled one beside it
    assert sp.prediction_figure(res[-1:], tmp_path / "r.png") is None and not (tmp_path / "r.png").exists()


def test_report_only_reads_the_cells_there_and_lists_the_missing(tmp_path, capsys):
    from indis.cli import main

    from indis.diagnose import VERSION

    view = {"median_ratio": 0.5, "median_ratio_ci": [0.4, 0.6], "winsorized_ratio": 0.5, "tail": 0.01, "tail_share": 0.1,
            "reference_tail_share": 0.1}

    def write(name, protocol, version=VERSION, patience=sc.FULL["patience"]):
        c = {"model": "random", "d": 2, "K": 2, "condition": "none", "guidance": None, "nfe": 3, "seed": 0}
        budget = {"cap": sc.FULL["cap"], "patience": patience, "val_every": sc.FULL["val_every"]}
        r = {"cell": c, "name": name, "protocol": protocol, "god_mse": 1e-3, "ratio": 0.5, "ratio_ci": [0.4, 0.6],
             "oracle_over_god": 0.1, "gap_closed": 0.5, "eps_half": 0.1, "prediction_error": 0.0, "reach_prediction_error": 0.0,
             "diagnosis": {"predicted_ratio": 0.5, "predicted_ci": [0.4, 0.6], "recommendation": "INDIS",
                           "extra": {"version": version}}, "per_prior": view,
             "denoised_input": {"ratio": 0.5, "ratio_ci": [0.4, 0.6], "vs_indis": 1.0, "vs_indis_ci": [0.9, 1.1],
                                "per_prior": view}, "train": {"indis": budget}}
        (tmp_path / "cells" / name).mkdir(parents=True)
        (tmp_path / "cells" / name / "result.json").write_text(json.dumps(r))
    write("random-d2-K2-none-nfe3-s0", sc.PROTOCOL)
    write("random-d2-K2-class-g4-nfe3-s0", "an older protocol")  # not the current protocol: reported as missing
    write("random-d2-K2-class-g1-nfe3-s0", sc.PROTOCOL, version=VERSION - 1)  # a diagnosis run_cell would redo: missing
    write("random-d2-K2-embedding-g1-nfe3-s0", sc.PROTOCOL, patience=40)  # another training budget: missing
    argv = ["bench", "scaling", "--dims", "2", "--components", "2", "--conditions", "none", "class-g4", "class",
            "embedding", "--nfe", "3", "--single-seed", "--no-digits", "--report-only", "--out", str(tmp_path)]
    assert main([*argv, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in res["cells"]] == ["random-d2-K2-none-nfe3-s0"]
    assert res["missing"] == ["random-d2-K2-class-g4-nfe3-s0", "random-d2-K2-class-g1-nfe3-s0",
                              "random-d2-K2-embedding-g1-nfe3-s0"]  # in the grid's order (--conditions as given)
    assert "3 cells of the grid asked for are not computed yet" in (tmp_path / "results.md").read_text()
    assert main([*argv[:3], "8", *argv[4:]]) == 2  # nothing there for d = 8: an error, not an empty report
    assert "--report-only" in capsys.readouterr().err


def test_a_schedule_that_kept_its_warm_start_ties_with_it():
    """INDIS (or a variant) whose best validation is its GOD warm start is GOD's schedule: the ~1e-6 relative
    round-off a tight paired interval excludes there is neither a win nor a loss; the same interval after training
    (best_iter > 0) is one."""
    tight = [0.9999993, 0.9999999]  # the size of the round-off measured on the committed cells (at most 1.2e-6)
    res = [_cell(2, 0.9999996, tight, _dv(1.0000004, [1.0000001, 1.0000007])),
           _cell(8, 1.0000004, [1.0000001, 1.0000007], _dv(1.0, tight))]
    for r in res:
        r["train"] = {"indis": {"best_iter": 0}}
        r["per_prior"] = {"median_ratio_ci": tight, "reference_tail_share": 0.0}
        r["denoised_input"]["train"] = {"best_iter": 0}
        r["denoised_input"]["per_prior"] = {"median_ratio_ci": tight}
    s = rep.summarize(res)
    assert (s["indis_beyond_interval"], s["indis_worse_beyond_interval"]) == (0, 0)
    assert (s["denoised_input"]["better_than_indis"], s["denoised_input"]["worse_than_indis"]) == (0, 0)
    assert (s["per_prior"]["indis_median_below"], s["per_prior"]["denoised_median_below"]) == (0, 0)
    assert s["recommendation_right_where_decided"] == "0/0"
    res[0]["train"]["indis"]["best_iter"] = 25  # INDIS trained: its interval counts; INDIS-D (at GOD) now loses to it
    s = rep.summarize(res)
    assert (s["indis_beyond_interval"], s["indis_worse_beyond_interval"]) == (1, 0)
    assert s["denoised_input"]["worse_than_indis"] == 1 and s["recommendation_right_where_decided"] == "1/1"
    assert rep.tied_ci(res[0], "denoised_input") == [1.0, 1.0]  # INDIS-D itself is still GOD's
