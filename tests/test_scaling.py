"""`indis bench scaling`: one tiny cell end to end (cached, resumed, re-diagnosed), the study scripts that reopen a
finished cell, and the budget options."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indis.bench import scaling as sc
from indis.bench import scaling_cli as scli
from indis.errors import InputError
from indis.metrics.stats import tail_share


def test_one_tiny_cell_end_to_end(tmp_path):
    s = {**sc.QUICK, "train": 96, "val": 32, "test": 48, "oracle_priors": 12, "diagnose_priors": 10, "diagnose_iterations": 40, "cap": 40,
         "patience": 2, "val_every": 10, "probe": 10, "batch": 32}
    c = {"model": "random", "d": 2, "K": 2, "condition": "class", "guidance": 4.0, "nfe": 3, "seed": 0}
    r = sc.run_cell(c, s, tmp_path, log=lambda m: None)
    assert r["teacher"]["rel_error_vs_rtol_1e-9"] < 1e-6  # the exact teacher
    pol = r["train"]["god"]["polish"]  # GOD polished as INDIS is trained; kept only where validation prefers it
    assert set(pol["lr_choice"]) == {f"{lr:g}" for lr in sc.INDIS_LRS} and pol["best_val"] == min(pol["lr_choice"].values())
    assert pol["kept"] == (pol["best_val"] < r["train"]["god"]["best_val"])
    runs = [(json.loads((f / "spec.json").read_text()), json.loads((f / "info.json").read_text()))
            for f in (tmp_path / sc.cell_name(c) / "runs").glob("god-*")]
    gods = [i for sp, i in runs if "warm" not in sp["spec"]]  # the polishes are the GOD runs warm-started from GOD
    assert len(gods) == len(sc.GOD_LRS) and len(runs) == len(sc.GOD_LRS) + len(sc.INDIS_LRS)
    assert r["train"]["god"]["lr"] in sc.GOD_LRS  # GOD's rate, chosen on validation
    assert r["train"]["god"]["best_val"] == min(g["best_val"] for g in gods) == min(r["train"]["god"]["lr_choice"].values())
    assert r["ratio_ci"][0] <= r["ratio"] <= r["ratio_ci"][1] and 0 <= r["oracle_over_god"] <= 1.0 + 1e-9
    assert r["diagnosis"]["recommendation"] in ("INDIS", "GOD") and set(r["kept"]) == {f"{e:g}" for e in
                                                                                         __import__("indis").diagnose.EPS_GRID}
    dv = r["denoised_input"]  # INDIS-D beside INDIS, both from the same GOD
    assert dv["ratio_ci"][0] <= dv["ratio"] <= dv["ratio_ci"][1] and dv["vs_indis_ci"][0] <= dv["vs_indis"] <= dv["vs_indis_ci"][1]
    assert dv["ratio"] == pytest.approx(dv["vs_indis"] * r["ratio"], rel=1e-9)  # the same test priors and GOD
    for key in ("projected_input", "projected_denoised"):  # INDIS-P and INDIS-PD: the same checks
        v = r[key]
        assert v["ratio_ci"][0] <= v["ratio"] <= v["ratio_ci"][1] and v["ratio"] == pytest.approx(v["vs_indis"] * r["ratio"], rel=1e-9)
    nets = [json.loads((f / "spec.json").read_text())["spec"].get("net") for f in (tmp_path / sc.cell_name(c) / "runs").glob("indis-*")]
    assert {"input_basis": 2} in nets and {"input_basis": 2, "denoised_input": True} in nets  # min(16, d = 2) directions
    again = sc.run_cell(c, s, tmp_path, log=lambda m: None)
    assert again == r  # cached
    folder = tmp_path / sc.cell_name(c)  # a result of another training budget is not reused as this one's
    assert sc.cached_result(folder, s) == r and sc.cached_result(folder, {**s, "patience": s["patience"] + 1}) is None
    f = tmp_path / sc.cell_name(c) / "result.json"  # a cell cached before the variant existed gets it, reusing the runs
    old = json.loads(f.read_text())
    del old["denoised_input"], old["per_prior"]
    f.write_text(json.dumps(old))
    assert not sc.reportable(old)  # INDIS-D and the per-prior view are needed by the report
    added = sc.run_cell(c, s, tmp_path, log=lambda m: None)
    assert added["denoised_input"] == dv and added["per_prior"] == r["per_prior"]
    late = {k: v for k, v in r.items() if k != "projected_input"}  # a cell run before INDIS-P: reported, then completed
    assert sc.reportable(late) and sc.outdated_parts(late) == (["projected_input"], False)
    f.write_text(json.dumps(late))
    assert sc.run_cell(c, s, tmp_path, log=lambda m: None)["projected_input"] == r["projected_input"]
    pp = r["per_prior"]  # per-prior view of the same test priors: a median ratio inside its interval, shares in (0, 1]
    assert pp["median_ratio_ci"][0] <= pp["median_ratio"] <= pp["median_ratio_ci"][1]
    assert 0 < pp["tail_share"] <= 1 and 0 < pp["reference_tail_share"] <= 1 and "per_prior" in dv
    del old["protocol"]  # a cell from before GOD's polish: recomputed from its cached runs
    old["ratio"] = -1.0
    f.write_text(json.dumps(old))
    new = sc.run_cell(c, s, tmp_path, log=lambda m: None)
    assert new["train"]["god"]["polish"] == pol and new["ratio"] == pytest.approx(r["ratio"], rel=1e-12)
    stale = json.loads(f.read_text())  # a diagnosis by an older procedure: only the diagnosis is recomputed
    del stale["diagnosis"]["extra"]["version"]
    stale["diagnosis"]["predicted_ratio"] = 5.0
    f.write_text(json.dumps(stale))
    again = sc.run_cell(c, s, tmp_path, log=lambda m: None)
    assert again["diagnosis"]["predicted_ratio"] <= 1.0 and again["diagnosis"]["extra"]["global_starts"] == 3
    assert again["ratio"] == stale["ratio"] and again["prediction_error"] == again["diagnosis"]["predicted_ratio"] - again["ratio"]


def _study(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / "studies" / f"{name}.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    return study


@pytest.fixture(scope="module")
def study_cell(tmp_path_factory):
    """One tiny finished cell the study scripts reopen: (cells folder, settings, cell, result)."""
    root = tmp_path_factory.mktemp("study-cell")
    s = {**sc.QUICK, "train": 96, "val": 32, "test": 48, "oracle_priors": 12, "diagnose_priors": 10, "diagnose_iterations": 40,
         "cap": 40, "patience": 2, "val_every": 10, "probe": 10, "batch": 32}
    c = {"model": "random", "d": 2, "K": 2, "condition": "none", "guidance": None, "nfe": 3, "seed": 0}
    return root, s, c, sc.run_cell(c, s, root, log=lambda m: None)


def test_indis_variants_study_reuses_the_cell_and_validates_on_mse(study_cell):
    """benchmarks/studies/indis_variants.py on a tiny cell: the bench's own variant is the cell's cached INDIS run (same
    test ratio), a variant with another training loss still validates on teacher-MSE (its first check is the warm
    start's MSE), and the bench's hooks are restored afterwards."""
    study = _study("indis_variants")
    tmp_path, s, c, r = study_cell
    hooks = (sc._budget, sc._tcfg, sc.INDIS_LRS)
    lr = r["train"]["indis"]["lr"]
    out = study.main(tmp_path / sc.cell_name(c), s, {"bench": (lr, 32, 0, 0.0, None, "mse"),
                                                     "huber": (lr, 32, 0, 0.0, None, "pseudo_huber")})
    assert (sc._budget, sc._tcfg, sc.INDIS_LRS) == hooks
    assert out["bench"]["ratio"] == pytest.approx(r["ratio"], rel=1e-9)  # the same run, the same test priors
    assert out["huber"]["val"][0][1] == pytest.approx(out["bench"]["val"][0][1], rel=1e-9)  # MSE of the warm start


def test_god_sharpness_shares_and_cell(study_cell):
    """benchmarks/studies/god_sharpness.py: the share of a rise carried by the priors that rose most, on hand-made
    errors (a single flipped prior carries all of it, more than all where the others fell), and the study on a tiny
    cell: a jitter of 0 leaves GOD's validation error as it is."""
    study = _study("god_sharpness")
    r = study.rise_shares(np.ones(4), np.array([1.0, 1.0, 1.0, 5.0]))
    assert r["ratio"] == 2.0 and r["top0.01"] == 1.0 and r["top0.05"] == 1.0
    new = np.full(100, 0.95)
    new[37] = 11.0  # one prior up by 10, the 99 others down by 0.05 each: total rise 10 - 4.95
    r = study.rise_shares(np.ones(100), new, tops=(0.01, 0.02))
    assert r["top0.01"] == pytest.approx(10 / 5.05) and r["top0.02"] == pytest.approx((10 - 0.05) / 5.05)
    assert np.isnan(study.rise_shares(np.ones(3), np.ones(3))["top0.01"])  # no rise: no share
    assert tail_share(np.array([0.5, 3.0, 0.5, 1.0]), 0.25) == 0.6  # the worst quarter: 3 of 5
    assert tail_share(np.array([2.0, 2.0]), 0.01) == 0.5 and tail_share(np.zeros(3)) == 0.0  # one value at least
    tmp_path, s, c, _ = study_cell
    out = study.main(tmp_path / sc.cell_name(c), s, sigmas=(0.0, 0.1), reps=2)
    assert out["sigmas"][0.0]["ratio_median"] == 1.0 and out["sigmas"][0.1]["ratio_median"] != 1.0
    assert 0 < out["god_tail_share"] <= 1


def test_training_runs_add_runs_to_a_finished_cell(study_cell):
    """`--train-runs`: run 0 is the cell's own training (same test ratio), run 1 a GOD and INDIS of their own under
    another training seed; the block is stored, reused on a rerun, and a cache that no longer gives the stored ratio
    is refused."""
    root, s, c, r = study_cell
    out = sc.training_runs(c, s, root, 2, log=lambda m: None)
    b = out["training_runs"]
    assert b["count"] == 2 and b["ratios"][0] == pytest.approx(r["ratio"], rel=1e-9)
    assert b["ratio_ci"][0] <= b["ratio"] <= b["ratio_ci"][1] and min(b["ratios"]) <= b["ratio"] <= max(b["ratios"])
    assert b["prediction_error"] == pytest.approx(r["diagnosis"]["predicted_ratio"] - b["ratio"], rel=1e-12)
    specs = [json.loads((f / "spec.json").read_text())["spec"] for f in (root / sc.cell_name(c) / "runs").iterdir()]
    assert {sp["method"] for sp in specs if sp.get("run") == 1} == {"god", "indis"}  # run 1 trained its own
    f = root / sc.cell_name(c) / "result.json"
    assert json.loads(f.read_text())["training_runs"] == b
    assert sc.training_runs(c, s, root, 2, log=lambda m: None) == out  # cached
    stale = {k: v for k, v in out.items() if k != "training_runs"}
    stale["ratio"] = r["ratio"] * 1.1
    f.write_text(json.dumps(stale))
    with pytest.raises(InputError, match="recompute the cell"):
        sc.training_runs(c, s, root, 2, log=lambda m: None)
    loose = sc.training_runs(c, s, root, 2, log=lambda m: None, strict=False)["training_runs"]  # runs deleted: a new draw
    assert loose["run0_is_result"] is False and loose["ratios"] == b["ratios"] and b["run0_is_result"] is True
    f.write_text(json.dumps(out))
    bo = _study("rescore_cells").best_of_runs(root / sc.cell_name(c), s)  # keeping the lowest validation loss of the runs
    assert bo["best_god_run"] == int(np.argmin(bo["god_val"])) and bo["best_indis_run"] == int(np.argmin(bo["indis_val"]))
    assert bo["best_ratio"] == pytest.approx(bo["indis_test"][bo["best_indis_run"]] / bo["god_test"][bo["best_god_run"]])
    assert bo["indis_test"][0] / bo["god_test"][0] == pytest.approx(r["ratio"], rel=1e-9)  # run 0 is the cell's own
    ag = _study("rescore_cells").agreement(root / sc.cell_name(c), s)  # per run: ratio, interval, kept start
    assert ag["ratios"] == pytest.approx(b["ratios"], rel=1e-9) and ag["kept"] == b["kept_god"]
    assert all(lo <= x <= hi for x, (lo, hi) in zip(ag["ratios"], ag["ratio_cis"]))
    p = __import__("argparse").ArgumentParser()
    scli.add_arguments(p)
    assert scli.settings_from_args(p.parse_args(["--train-runs", "3"]))["train_runs"] == 3
    with pytest.raises(InputError, match="--train-runs"):
        scli.settings_from_args(p.parse_args(["--train-runs", "0"]))


def test_agreement_summary_by_hand():
    """benchmarks/studies/rescore_cells.py agreement --summary: the diagnostic and a cell's other runs as predictors of
    each run, counted by hand on two made-up cells; a run that kept its GOD start is a tie (decided neither way on the
    strict question although its interval, [1 + 5e-10, 1 + 2e-7], excludes 1)."""
    a = {"cell": "random-d8-K2-none-nfe3-s0", "predicted": 0.52, "recommendation": "INDIS", "ratios": [0.50, 0.53, 0.99],
         "ratio_cis": [[0.45, 0.55], [0.48, 0.58], [0.97, 1.01]], "kept": [False, False, False]}
    b = {"cell": "digits-gmm-d64-bic-none-nfe3-s0", "predicted": 0.9, "recommendation": "GOD", "ratios": [1.0000001, 0.9],
         "ratio_cis": [[1.0000000005, 1.0000002], [0.85, 0.95]], "kept": [True, False]}
    out = _study("rescore_cells").agreement_summary([a, b], tol=0.05)
    # +-0.05: a's runs 0 and 1 agree with each other and with 0.52, run 2 (0.99) with nothing; b's 0.9 hits run 1 only
    assert out["within_tolerance"] == {"diagnostic": [3, 5], "another_run": [2, 8], "median_of_others": [0, 5]}
    # strict: a's runs 0 and 1 decide a gain (run 2's interval holds 1), b's run 1 a gain, b's run 0 is a tie; another
    # run names INDIS only from an interval wholly below 1 (a's run 2 and b's tied run 0 name GOD)
    assert out["right_where_decided"] == {"diagnostic": [2, 3], "another_run": [2, 5], "always_indis": [3, 3]}
    # the 2% question: b's tied run 0 ([1, 1]) decides "no gain worth it", which GOD gets right and INDIS wrong
    assert out["right_at_threshold"] == {"diagnostic": [3, 4], "another_run": [2, 6], "always_indis": [3, 4]}
    assert sorted(out["by_group"]) == ["d = 8", "digits mixture"]  # each row of the grid on its own
    assert out["by_group"]["d = 8"]["within_tolerance"]["diagnostic"] == [2, 3]


def test_protocol_study_on_a_cell_and_its_summary(study_cell):
    """benchmarks/studies/protocol.py: the bench's side is the cell's own run 0 (same test ratio); the full-batch runs
    are trained with one batch of every training prior, the long-patience runs with the longer budget, each cached;
    the summary's counts on hand-made rows."""
    study = _study("protocol")
    root, s, c, r = study_cell
    folder = root / sc.cell_name(c)
    for protocol in study.PROTOCOLS:
        row = study.compare(folder, protocol, s)
        assert row["base_ratio"] == pytest.approx(r["ratio"], rel=1e-9)
        assert row["alt_ratio"] == pytest.approx(row["alt_indis"] / row["alt_god"], rel=1e-12)
        assert row["alt_god_kept"] == (row["alt_god_val"] < row["god_val"])  # kept only where validation says
        assert study.compare(folder, protocol, s) == row  # cached: nothing retrained
    specs = [json.loads((f / "spec.json").read_text())["spec"] for f in (folder / "runs").iterdir()]
    full = [sp for sp in specs if sp["train"]["batch"] == s["train"]]  # one batch of every training prior
    long = [sp for sp in specs if sp["train"]["patience"] == study.LONG_PATIENCE]
    assert {sp["method"] for sp in full} == {sp["method"] for sp in long} == {"god", "indis"}
    assert all(sp["train"]["cap"] == study.LONG_CAP and sp["train"]["batch"] == s["batch"] for sp in long)
    assert all(sp["train"]["patience"] == s["patience"] for sp in full)
    with pytest.raises(ValueError, match="protocol must be one of"):
        study.compare(folder, "longer", s)
    ci = [0.5, 0.9]
    rows = [{"base_ratio": 0.8, "base_ratio_ci": ci, "alt_ratio": 0.6, "alt_ratio_ci": ci,
             "god": 1.0, "indis": 0.8, "alt_god": 1.0, "alt_indis": 0.6, "alt_god_kept": False, "indis_val": 2.0,
             "alt_indis_val": 1.0, "predicted": 0.62, "indis_best_iter": 50, "alt_indis_best_iter": 25},
            {"base_ratio": 0.9, "base_ratio_ci": [0.95, 1.2], "alt_ratio": 1.0,
             "alt_ratio_ci": [1.1, 1.3], "god": 2.0, "indis": 1.8, "alt_god": 1.5, "alt_indis": 1.5,
             "alt_god_kept": True, "indis_val": 1.0, "alt_indis_val": 3.0, "predicted": 0.9, "indis_best_iter": 50,
             "alt_indis_best_iter": 25}]
    out = study.summary(rows)
    assert out["alt_lower_by_0.05"] == 1 and out["alt_higher_by_0.05"] == 1
    assert out["base_below_above_god"] == [1, 0] and out["alt_below_above_god"] == [1, 1]
    # chosen on validation: cell 1 the other protocol's INDIS / the bench's GOD (0.6), cell 2 the bench's INDIS / the
    # other protocol's GOD (1.8 / 1.5 = 1.2)
    assert out["chosen_on_validation_median"] == pytest.approx(0.9)
    assert out["chosen_lower_higher_than_base_by_0.05"] == [1, 1]
    assert out["prediction_within_0.05_of_base_alt_chosen"] == [1, 1, 1]
    assert out["god_moved_down_up_5pct"] == [1, 0] and out["indis_moved_down_up_5pct"] == [2, 0]  # 0.75x, 0.83x
    rows[1]["alt_indis_best_iter"] = 0  # that INDIS kept its GOD start: its interval above 1 is round-off, a tie
    assert study.summary(rows)["alt_below_above_god"] == [1, 0]


def test_patience_option_sets_the_budget_of_every_trained_method():
    import argparse

    p = argparse.ArgumentParser()
    scli.add_arguments(p)
    assert scli.settings_from_args(p.parse_args([]))["patience"] == sc.FULL["patience"]
    assert scli.settings_from_args(p.parse_args(["--patience", "40"]))["patience"] == 40
    assert scli.settings_from_args(p.parse_args(["--quick", "--patience", "9"]))["patience"] == 9


def test_cells_vs_rev_pairs_only_changed_cells(tmp_path):
    """benchmarks/studies/cells_vs_rev.py: a cell recomputed since the revision is paired with its committed earlier
    result; an unchanged cell and one that did not exist then are left out."""
    import json
    import subprocess

    study = _study("cells_vs_rev")
    cells = tmp_path / "cells"

    def git(*a):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path, check=True,
                       capture_output=True)

    def res(r):
        return {"ratio": r, "ratio_ci": [r - 0.1, r + 0.1], "diagnosis": {"predicted_ratio": 1.0}}

    for name, r in (("a", 0.5), ("b", 0.9)):
        (cells / name).mkdir(parents=True)
        (cells / name / "result.json").write_text(json.dumps(res(r)))
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "old")
    (cells / "a" / "result.json").write_text(json.dumps(res(0.7)))
    (cells / "c").mkdir()
    (cells / "c" / "result.json").write_text(json.dumps(res(0.3)))
    pairs = study.compare("HEAD", cells)
    assert [(n, o["ratio"], w["ratio"]) for n, o, w in pairs] == [("a", 0.5, 0.7)]


def test_curve_forms_study_by_hand():
    """benchmarks/studies/curve_forms.py: each form through r(500) = 0.9, r(1000) = 0.8 at 2,000 priors by hand, the
    log form never below 0 where 1/n clips, and the table scores a hand-made cell per dimension group."""
    import math

    study = _study("curve_forms")
    r, n = [0.9, 0.8], [500, 1000]
    assert study.FORMS["1/n"](r, n, 2000) == pytest.approx(0.75, abs=1e-12)  # 0.8 - 100 * (1/1000 - 1/2000)
    a = math.log(0.9 / 0.8) / (1 / 500 - 1 / 1000)
    assert study.FORMS["log 1/n"](r, n, 2000) == pytest.approx(0.8 * math.exp(-a / 2000), rel=1e-12)  # 0.754
    assert study.FORMS["power"](r, n, 2000) == pytest.approx(0.8 * (0.8 / 0.9), rel=1e-12)  # halves n: one more factor
    assert study.FORMS["last"](r, n, 2000) == 0.8
    assert study.FORMS["1/n"]([0.9, 0.3], n, 10**6) == 0.0 and study.FORMS["log 1/n"]([0.9, 0.3], n, 10**6) > 0.0
    assert study.FORMS["power"]([0.9, 1.2], n, 2000) == 1.0  # worse with more priors: capped at 1

    def cell(d, ratio, god=1e-3):
        return {"cell": {"d": d}, "god_mse": god, "ratio": ratio,
                "diagnosis": {"extra": {"curve": {"at_sizes": r, "sizes": n, "train_size": 2000}}}}

    rows = {(x["form"], x["group"]): x for x in study.table([cell(2, 0.76), cell(64, 0.9), cell(64, 0.5, god=1e-9)])}
    assert rows[("1/n", "all")]["cells"] == 2  # the cell GOD solves is not counted
    assert rows[("1/n", "d <= 8")]["within"] == 1.0 and rows[("1/n", "d >= 64")]["within"] == 0.0  # 0.75 vs 0.76, 0.9
    assert rows[("last", "d >= 64")]["mean_abs_error"] == pytest.approx(0.1)


def test_rescore_curve_study_reproduces_the_stored_curve(tmp_path):
    """benchmarks/studies/rescore_cells.py curve refits the diagnostic's GOD and phi on a tiny cell with a learning curve
    (150 training priors: subsets of 45 and 90) and reproduces the curve the cell stored before scoring the same fits on
    the test priors (the fits are deterministic given their seeds; 1e-9 leaves room for summation order only)."""
    study = _study("rescore_cells")
    s = {**sc.QUICK, "train": 150, "val": 32, "test": 48, "oracle_priors": 12, "diagnose_priors": 10,
         "diagnose_iterations": 40, "cap": 40, "patience": 2, "val_every": 10, "probe": 10, "batch": 32}
    c = {"model": "random", "d": 2, "K": 2, "condition": "class", "guidance": 4.0, "nfe": 3, "seed": 0}
    r = sc.run_cell(c, s, tmp_path, log=lambda m: None)
    out = study.curve_on_test(tmp_path / sc.cell_name(c), s)
    assert out["sizes"] == r["diagnosis"]["extra"]["curve"]["sizes"] == [45, 90]
    assert out["at_sizes_block"] == pytest.approx(out["at_sizes_stored"], rel=1e-9)
    assert len(out["at_sizes_test"]) == 2 and all(v > 0 for v in out["at_sizes_test"] + out["phi_over_bench_god"])
    assert out["bench_ratio"] == r["ratio"] and out["diag_god_over_bench_god"] > 0
