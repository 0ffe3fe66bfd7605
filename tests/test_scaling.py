"""`indis bench scaling` and the INDIS diagnostic: the mixtures' exact denoisers against an independent implementation,
conditions and guidance written out by hand, the nearest-prior distance against its closed form, the reach and
prediction arithmetic, and one tiny cell end to end."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from indis.bench import scaling as sc
from indis.bench.scaling_models import EMBED_DIM, mixture_handle, random_mixture
from indis.diagnose import nearest_eps, predict
from indis.errors import InputError
from indis.metrics.stats import tail_share
from indis.toy.gmm import GaussianMixture


def test_diagonal_mixture_equals_the_full_covariance_implementation():
    mix = random_mixture(5, 4, seed=3)
    full = GaussianMixture(torch.full((4,), 0.25), mix.mu, torch.diag_embed(mix.lam), labels=mix.labels)
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 3.0, 20.0], dtype=torch.float64)
    a = mix.posterior_mean(x, sigma, None)
    b = full.posterior_mean(x, 1.0, sigma)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)  # both float64, different algebra
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(mix.posterior_mean(x, sigma, labels), full.posterior_mean(x, 1.0, sigma, cond=labels),
                               rtol=1e-9, atol=1e-9)


def test_diagonal_mixture_with_its_own_spectrum_per_component_keeps_the_log_determinant():
    """Components whose variances are not permutations of one spectrum: the log-determinant term decides part of the
    responsibilities and must stay (the random mixtures drop it, being shared); values and gradients against the
    full-covariance implementation."""
    from indis.bench.scaling_models import DiagonalMixture

    g = torch.Generator().manual_seed(5)
    mu = torch.randn(3, 4, generator=g, dtype=torch.float64)
    lam = torch.tensor([[0.01, 0.02, 0.03, 0.04], [1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    mix = DiagonalMixture(mu, lam, torch.arange(3))
    assert not mix.shared_spectrum and random_mixture(5, 4, seed=3).shared_spectrum
    full = GaussianMixture(torch.full((3,), 1 / 3), mu, torch.diag_embed(lam), labels=torch.arange(3))
    x = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor([0.02, 0.3, 1.0, 2.0, 30.0], dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, generator=g, dtype=torch.float64)
    a, b = mix.posterior_mean(x, sigma, None), full.posterior_mean(x, 1.0, sigma)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)  # float64, diagonal algebra vs Cholesky
    for u, v in zip(torch.autograd.grad((a * w).sum(), (x, sigma)), torch.autograd.grad((b * w).sum(), (x, sigma))):
        torch.testing.assert_close(u, v, rtol=1e-8, atol=1e-10)
    dropped = DiagonalMixture(mu, lam, torch.arange(3))
    dropped.shared_spectrum = True  # the term wrongly dropped: the answer moves (the test can fail)
    assert (dropped.posterior_mean(x, sigma, None) - b).abs().max() > 1e-3


def test_blocked_posterior_mean_matches_the_reference_with_gradients(monkeypatch):
    """Rows in blocks of 2 (forced): values and gradients in x and sigma equal the full-covariance implementation's."""
    import indis.bench.scaling_models as sm

    mix = random_mixture(5, 4, seed=3)
    monkeypatch.setattr(sm, "CHUNK_ELEMENTS", 2 * mix.mu.numel())
    full = GaussianMixture(torch.full((4,), 0.25), mix.mu, torch.diag_embed(mix.lam), labels=mix.labels)
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor([0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 40.0], dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, -1, 1, 0])
    ga = torch.autograd.grad((mix.posterior_mean(x, sigma, labels) * w).sum(), (x, sigma))
    gb = torch.autograd.grad((full.posterior_mean(x, 1.0, sigma, cond=labels) * w).sum(), (x, sigma))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)  # float64, different algebra (diagonal vs Cholesky)
    torch.testing.assert_close(mix.posterior_mean(x, sigma, labels), full.posterior_mean(x, 1.0, sigma, cond=labels),
                               rtol=1e-9, atol=1e-9)


def test_conditions_and_guidance_by_hand():
    mix = random_mixture(3, 6, seed=1)  # classes k mod 6: one component each
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.full((4,), 0.7, dtype=torch.float64)
    labels = torch.tensor([0, 3, 5, 2])
    cls = mixture_handle(mix, "class", 3.0)
    D, _ = cls.denoiser(x, t, labels)
    Dc, Du = mix.posterior_mean(x, t, labels), mix.posterior_mean(x, t, None)
    torch.testing.assert_close(D, Du + 3.0 * (Dc - Du), rtol=1e-10, atol=1e-10)
    emb = mixture_handle(mix, "embedding", 3.0)
    De, _ = emb.denoiser(x, t, emb.cond_table[labels])
    torch.testing.assert_close(De, D, rtol=1e-10, atol=1e-10)  # the embedding names the class, nothing else
    assert emb.cond_table.shape == (6, EMBED_DIM)


def test_nearest_prior_distance():
    """One other prior in d dimensions: cos ~ N(0, 1/d), so eps = sqrt(1 - cos^2) has median ~ 1 - 0.23/d; more priors
    bring the nearest closer; in 2-D thousands of priors sit at a tiny angle."""
    one = nearest_eps(64, 1, queries=512, seed=0)
    assert abs(one - (1 - 0.5 * 0.4549 / 64)) < 0.01  # median of chi^2_1 is 0.4549: eps = sqrt(1 - 0.4549/64)
    assert nearest_eps(64, 1000) < nearest_eps(64, 10) < one
    assert nearest_eps(2, 2000) < 0.01


def test_reach_and_prediction_arithmetic():
    assert sc.eps_half({"0.1": 0.8, "0.2": 0.4, "0.5": 0.1}) == pytest.approx(math.exp(np.log(0.1) + 0.75 * np.log(2)))
    assert sc.eps_half({"0.1": 0.9, "0.5": 0.7}) is None
    gains = {"0": np.array([2.0, 2.0]), "0.1": np.array([1.0, 1.0]), "0.5": np.array([0.0, -1.0])}
    god, orc = np.array([1.0, 1.0]), np.array([0.5, 0.5])
    gap, ratio, ci, curve = predict(gains, god, orc, 0.1, replicates=20)
    assert curve == {"0.1": 0.5, "0.5": -0.25} and gap == 0.5 and ratio == pytest.approx(1 - 0.5 * 0.5)
    gap, ratio, _, _ = predict(gains, god, orc, 0.5, replicates=20)
    assert gap == 0.0 and ratio == 1.0  # a negative kept share is clipped: INDIS is never predicted worse than GOD


def test_recommendation_needs_one_prediction_wholly_below_the_threshold():
    from indis.diagnose import EXACT_BELOW, RECOMMEND_BELOW, recommend

    assert recommend([0.0, 0.5], [0.9, 1.0]) == "INDIS"  # the reach prediction alone sees a gain
    assert recommend([0.9, 1.0], [0.8, RECOMMEND_BELOW - 0.01]) == "INDIS"  # the group prediction alone
    assert recommend([0.5, RECOMMEND_BELOW], [0.5, 1.0]) == "GOD"  # an interval that reaches the threshold is no gain
    assert recommend([0.9, 1.0], [0.9, 1.0]) == "GOD"
    assert recommend([0.0, 0.5], [0.0, 0.5], global_error=EXACT_BELOW / 2) == "GOD"  # an exact global schedule: nothing to gain


def test_group_prediction_is_measured_against_a_shared_schedule_fitted_the_same_way():
    """One Gaussian mode: no schedule can know more than a shared one, so group schedules gain nothing; measured
    against the untrained (time-uniform) global schedule they start from, the fit alone would look like a large gain."""
    from indis.diagnose import _fit_groups, cluster_ratio
    from indis.discretizations import heuristic
    from indis.losses import mse
    from indis.methods import learned
    from indis.solvers import sample

    torch.set_num_threads(1)
    h = mixture_handle(random_mixture(4, 1, seed=5))
    x_T = 80.0 * torch.randn(64, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x0 = sample(h.denoiser, x_T, heuristic("edm", 200, h.schedule).double(), "ipndm")  # a 200-step teacher
    god = learned(h, "god", 3, "ipndm", init="uniform").double()
    ratio, ci = cluster_ratio(h.denoiser, god, x_T, None, x0, k=4, iterations=150, replicates=200)
    assert ci[0] <= ratio <= ci[1] and ratio > 0.9  # four schedules fitted on a quarter of the priors each: no gain
    one, score = torch.zeros(64, dtype=torch.long), torch.arange(48, 64)
    shared = _fit_groups(h.denoiser, god, x_T, None, x0, one, 1, torch.arange(32), torch.arange(32, 48), 150)
    with torch.no_grad():
        fitted = mse(shared.sample(h.denoiser, x_T[score], None, one[score]), x0[score]).mean()
        start = mse(god.sample(h.denoiser, x_T[score]), x0[score]).mean()
    assert float(fitted) < 0.5 * float(start)  # what a comparison with the start would have called an instance gain


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


def test_eval_diagnose_cli(tmp_path, capsys, monkeypatch):
    import json
    import os
    import sys

    import indis.training

    sys.path.insert(0, os.path.dirname(__file__))
    from indis.cli import main

    probed, real = [], indis.training.train_with_starts

    def spy(build, starts, *a, **kw):  # the global fit must probe GOD's own starts, not logSNR alone
        probed.append(list(starts))
        return real(build, starts, *a, **kw)

    monkeypatch.setattr(indis.training, "train_with_starts", spy)

    gmm = "python:fake_models:make_gmm"
    assert main(["teacher", "--model", gmm, "--out", str(tmp_path / "t"), "--num", "40", "--steps", "8", "--no-progress"]) == 0
    capsys.readouterr()
    argv = ["eval", "--model", gmm, "--teacher", str(tmp_path / "t"), "--diagnose", "--nfe", "3", "--diagnose-priors", "12",
            "--diagnose-iterations", "40",
            "--replicates", "50"]
    assert main([*argv, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["priors"] == 12 and d["train_size"] == 40 and d["recommendation"] in ("INDIS", "GOD")
    assert d["predicted_ci"][0] <= d["predicted_ratio"] <= d["predicted_ci"][1] + 1e-12
    assert d["predicted_ratio"] == min(1.0, d["extra"]["group_over_shared"])  # INDIS never predicted worse than its GOD
    assert probed == [["logsnr", "edm", "dmn"]] * 3  # at each of the three learning rates
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # the stage bar shows only on a terminal
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "Recommendation:" in out.out and "oracle's reach" in out.err and "endpoint groups" in out.err
    assert main([*argv, "--no-progress"]) == 0  # still on a "terminal": the patch above lasts the whole test
    assert "oracle's reach" not in capsys.readouterr().err
    assert main([a for a in argv if a not in ("--nfe", "3")]) == 2  # --diagnose without --nfe
    assert "--nfe" in capsys.readouterr().err
    # a set of 120 priors is large enough for phi's learning curve (subsets of 36 and 72): it becomes the prediction
    assert main(["teacher", "--model", gmm, "--out", str(tmp_path / "t2"), "--num", "120", "--steps", "8", "--no-progress"]) == 0
    argv2 = [*argv, "--diagnose-curve-iterations", "20", "--no-progress"]
    argv2[argv2.index(str(tmp_path / "t"))] = str(tmp_path / "t2")
    capsys.readouterr()
    assert main([*argv2, "--json", "--train-size", "5000"]) == 0
    d = json.loads(capsys.readouterr().out)
    lc = d["extra"]["curve"]
    assert lc["sizes"] == [36, 72] and lc["train_size"] == d["train_size"] == 5000 and d["predicted_ratio"] == lc["ratio"]
    from indis.diagnose import EXACT_BELOW, GROUP_STAGES, RECOMMEND_BELOW, STAGES
    wins = d["predicted_ci"][1] < RECOMMEND_BELOW and d["extra"]["global_over_variance"] >= EXACT_BELOW
    assert d["recommendation"] == ("INDIS" if wins else "GOD")
    assert not d["extra"]["groups"] and "group_over_shared" not in d["extra"]  # context only beside the curve: skipped
    assert set(d["extra"]["stage_seconds"]) == set(STAGES) - set(GROUP_STAGES)
    # other subset sizes for the curve (a large teacher set): they are the ones trained, and bad sizes are refused
    assert main([*argv2, "--json", "--diagnose-curve-sizes", "24", "48"]) == 0
    assert json.loads(capsys.readouterr().out)["extra"]["curve"]["sizes"] == [24, 48]
    for bad in (["48", "24"], ["30"], ["4", "40"]):
        assert main([*argv2, "--diagnose-curve-sizes", *bad]) == 2
        assert "--diagnose-curve-sizes" in capsys.readouterr().err
    assert main(argv2) == 0
    out = capsys.readouterr().out
    assert "phi trained on 36 and 72 priors" in out and "endpoint groups" not in out and "phi on subsets" in out
    # GOD's tail on the scored block, printed as context: the same fits in the same process as the --json run above
    tail = lc["god_tail_share"]
    assert 0 < tail <= 1 and f"worst 1% of scored priors carry {tail:.2f} of its teacher-MSE" in out
    assert ("a few priors reach the wrong mode" in out) == (tail > 0.2)
    assert main([*argv2, "--diagnose-groups", "--json", "--train-size", "5000"]) == 0
    g = json.loads(capsys.readouterr().out)
    assert g["extra"]["groups"] and set(g["extra"]["stage_seconds"]) == set(STAGES)
    assert g["extra"]["condition_groups"] == 0  # an unconditional model: the endpoint groups are the group prediction
    assert g["extra"]["group_prediction"] == min(1.0, g["extra"]["group_over_shared"])
    # the group fits consume no random numbers the learning curve draws (it seeds its own): same process, same
    # arithmetic, so the prediction is the same to round-off
    assert g["predicted_ratio"] == pytest.approx(d["predicted_ratio"], rel=1e-12)
    assert g["predicted_ci"] == pytest.approx(d["predicted_ci"], rel=1e-12)


def test_report_counts_and_columns():
    from indis.bench import scaling_report as rep

    def cell(d, ratio, ci, dv, god=1e-3, pred=0.9):
        return {"cell": {"model": "random", "d": d, "K": 2, "condition": "none", "guidance": None, "nfe": 3, "seed": 0},
                "name": f"c{d}", "god_mse": god, "ratio": ratio, "ratio_ci": ci, "oracle_over_god": 0.5, "gap_closed": 0.1,
                "eps_half": 0.2, "prediction_error": pred - ratio, "reach_prediction_error": 0.0,
                "diagnosis": {"predicted_ratio": pred, "predicted_ci": [pred - 0.1, pred + 0.1], "reach_ratio": ratio,
                              "recommendation": "INDIS"},
                "denoised_input": dv}
    dv = lambda r, ci: {"ratio": r, "ratio_ci": ci, "vs_indis": r, "vs_indis_ci": ci, "mse": 0.0, "train": {}}  # noqa: E731
    res = [cell(2, 0.5, [0.4, 0.6], dv(0.8, [0.7, 0.9])), cell(8, 1.0, [0.98, 1.02], dv(1.1, [1.05, 1.2])),
           cell(64, 0.9, [0.85, 0.95], dv(1.0, [0.9, 1.1])), cell(256, 1.0, [1.0, 1.0], None, god=1e-9),
           cell(1024, 1.4, [1.1, 2.0], None)]
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
    assert s["denoised_input"] == {"cells": 3, "better_than_indis": 1, "worse_than_indis": 1, "median_vs_indis": 1.0,
                                   "median_vs_god": 1.0, "median_indis_vs_god": 0.9}  # INDIS at 0.5, 1.0, 0.9 there
    assert s["variants"]["projected_input"] == {"cells": 0, "better_than_indis": 0, "worse_than_indis": 0,
                                                "median_vs_indis": None}
    assert "INDIS-P (phi reads" not in rep.to_markdown({"cells": res, "summary": s})  # no cell has it: no line
    res[0]["projected_input"] = dv(0.6, [0.5, 0.7])  # a later variant on one cell only: counted over that cell
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
    for r in res:
        del r["diagnosis"]["extra"]
    more = [dict(cell(2, 0.53, [0.4, 0.6], None), cell={**res[0]["cell"], "seed": 1}),
            dict(cell(2, 0.70, [0.6, 0.8], None), cell={**res[0]["cell"], "seed": 2})]
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
    from indis.bench import scaling_report as rep

    def cell(d, K, cond, g, nfe, seed, ratio, god=1e-3):
        return {"cell": {"model": "random", "d": d, "K": K, "condition": cond, "guidance": g, "nfe": nfe, "seed": seed},
                "god_mse": god, "ratio": ratio, "ratio_ci": [ratio - 0.1, ratio + 0.1], "eps_half": 0.1}
    res = [cell(2, 2, "none", None, 3, 0, 0.5), cell(64, 2, "none", None, 3, 0, 0.8), cell(64, 2, "none", None, 3, 1, 1.0),
           cell(2, 10, "class", 4.0, 5, 0, 0.3), cell(8, 10, "class", 1.0, 5, 0, 1.0, god=1e-12)]
    digits = cell(64, None, "class", 1.0, 3, 0, 1e-5)  # the digits mixture: drawn too (a log axis; its interval below 0)
    digits["cell"]["model"] = "digits-gmm"
    res.insert(3, digits)
    drawn, lines_of = [], rep._lines
    monkeypatch.setattr(rep, "_lines", lambda rnd: drawn.append(rnd) or lines_of(rnd))
    assert rep.figure(res, tmp_path / "s.png") == "s.png" and (tmp_path / "s.png").stat().st_size > 0
    assert len(drawn[0]) == 5  # the cell where GOD is exact is not drawn
    lines = lines_of(drawn[0])
    assert set(lines) == {(3, 2, "none"), (3, None, "class"), (5, 10, "class CFG 4")}  # one per NFE, K and condition
    assert sorted(lines[(3, 2, "none")]) == [2, 64] and len(lines[(3, 2, "none")][64]) == 2  # seeds pooled per d
    assert rep.figure([res[-1]], tmp_path / "t.png") is None  # nothing to draw: no file


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


def test_condition_groups_by_hand():
    from indis.diagnose import condition_groups

    g, k = condition_groups(torch.tensor([3, 1, 3, 0]))
    assert k == 3 and g[0] == g[2] and len({int(g[0]), int(g[1]), int(g[3])}) == 3
    emb = torch.tensor([[0.5, 1.0], [0.0, 0.0], [0.5, 1.0]])  # one embedding per class, rows repeat
    g, k = condition_groups(emb)
    assert k == 2 and g[0] == g[2] != g[1]
    assert condition_groups(None) is None and condition_groups({"class": torch.tensor([0, 1])}) is None
    assert condition_groups(torch.tensor([2, 2, 2])) is None  # one value: nothing to group
    assert condition_groups(torch.tensor([0, 1, 2]), max_groups=2) is None  # too many values to fit on few priors


def test_condition_prediction_sees_a_per_class_schedule_gain():
    """Two classes at very different scales (variance 0.01 vs 4: the PF-ODE bends near sigma ~ 0.1 for one and ~2 for
    the other) want different times, and one schedule per class beats a shared one; with both classes at the same scale
    there is nothing to gain (the ratio is 1 up to the fits' noise)."""
    from indis.bench.scaling_models import DiagonalMixture
    from indis.diagnose import condition_groups, group_ratio, scored_mse
    from indis.discretizations import heuristic
    from indis.methods import learned
    from indis.solvers import sample

    torch.set_num_threads(1)
    ratios = {}
    for lam1 in (4.0, 1e-2):
        mix = DiagonalMixture(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), torch.tensor([[1e-2, 1e-2], [lam1, lam1]]),
                              torch.tensor([0, 1]))
        h = mixture_handle(mix, "class")
        x_T = 80.0 * torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        c = torch.arange(64) % 2
        x0 = sample(h.denoiser, x_T, heuristic("edm", 200, h.schedule).double(), "ipndm", cond=c)  # a 200-step teacher
        god = learned(h, "god", 3, "ipndm", init="edm").double()
        ratios[lam1] = group_ratio(h.denoiser, god, x_T, c, x0, *condition_groups(c), iterations=60, replicates=200)
    shared = scored_mse(h.denoiser, god, x_T, c, x0, torch.zeros(64, dtype=torch.long), 1, 60)
    again = group_ratio(h.denoiser, god, x_T, c, x0, *condition_groups(c), iterations=60, replicates=200, shared=shared)
    assert again == ratios[1e-2]  # a precomputed shared fit is the same full-batch fit: identical, not merely close
    assert ratios[4.0][1][1] < 0.5  # the whole interval far below 1 (measured 0.12 with 96 priors)
    assert ratios[1e-2][0] > 0.99  # identical classes: no gain


def test_learning_curve_extrapolation_by_hand():
    """r(n) = r_inf + a / n through two sizes recovers r_inf + a / M exactly; capped at 1; one size is its own value."""
    from indis.diagnose_curve import extrapolate

    r_inf, a = 0.7, 30.0
    assert extrapolate([r_inf + a / 250, r_inf + a / 500], [250, 500], 2000) == pytest.approx(r_inf + a / 2000, abs=1e-12)
    # 2 r(2n) - r(n) at infinity; at M = 1e9 the a / M term adds 0.1 * 200 / 1e9 = 2e-8
    assert extrapolate([1.0, 0.9], [100, 200], 10**9) == pytest.approx(0.8, abs=1e-7)
    assert extrapolate([0.9, 1.2], [250, 500], 2000) == 1.0  # worse with more priors: INDIS keeps its warm start
    assert extrapolate([0.85], [500], 2000) == 0.85
    assert extrapolate([0.9, 0.3], [250, 500], 10**6) == 0.0  # a steep curve would extrapolate to -0.3
    with pytest.raises(InputError, match="one ratio per positive size"):
        extrapolate([0.9, 0.8], [250], 2000)


def test_learning_curve_rows_are_nested_and_disjoint_from_validation_and_scoring():
    from indis.diagnose_curve import CURVE_MIN, curve_rows

    fits, val, score = curve_rows(2000)
    assert [len(f) for f in fits] == [500, 1000] and len(val) == 300 and len(score) == 700  # scored: every prior left
    assert fits[0] == fits[1][:500] and not set(fits[1]) & set(val) and not set(val) & set(score)
    assert max(score) == 1999 and max(fits[1]) < min(val) < max(val) < min(score)
    assert len(curve_rows(10_000)[2]) == 2000  # at most CURVE_SCORE_MAX scored
    fits, val, score = curve_rows(300)  # a small set: 60 validation, 60 scored, the subsets shrink in proportion
    assert [len(f) for f in fits] == [90, 180] and len(val) == len(score) == 60 and max(score) == 299
    assert curve_rows(CURVE_MIN - 1) is None


def test_learning_curve_prediction_end_to_end(tmp_path):
    """On a tiny 2-D cell (a set of 120 priors): subsets of 36 and 72 priors, 24 validation and 24 scored; the
    prediction is the extrapolation of the measured ratios, inside its bootstrap interval, never above 1."""
    from indis.diagnose import fit_global_and_oracle
    from indis.diagnose_curve import curve_ratio, extrapolate
    from indis.experiment import Experiment, ExperimentConfig

    c = {"model": "random", "d": 2, "K": 2, "condition": "class", "guidance": 4.0, "nfe": 3, "seed": 0}
    h = sc.handle_for(c)
    cfg = ExperimentConfig(model=h.spec, sizes={"train": 120, "val": 8, "test": 8}, teacher_steps=1, teacher_solver="exact",
                           dtype="float64")
    t = Experiment(tmp_path, h, cfg, dtype=torch.float64, progress=False, log=lambda m: None).teacher("train")
    god, _ = fit_global_and_oracle(h, t, 3, 12, iterations=20)
    r = curve_ratio(h, t, god, 1000, iterations=30, replicates=50)
    assert r["sizes"] == [36, 72] and r["scored"] == 24 and r["train_size"] == 1000
    assert r["ratio"] == pytest.approx(extrapolate(r["at_sizes"], r["sizes"], 1000), rel=1e-12) and r["ratio"] <= 1.0
    # the bootstrap replicates are extrapolations too (capped at 1); the point estimate lies inside their range
    assert r["ci"][0] <= r["ratio"] + 1e-12 and r["ci"][1] <= 1.0


def test_diagnostic_fits_the_solver_it_is_told(tmp_path, monkeypatch):
    """`solver` / `afs`: the global fit, the oracle and every phi of the learning curve use that sampler at the asked
    NFE (UniPC with AFS makes 3 calls in 4 steps), and a solver that cannot make that many calls is refused."""
    import indis.diagnose as dg
    import indis.diagnose_curve as dc
    from indis.experiment import Experiment, ExperimentConfig
    from indis.solvers import solver_nfe

    c = {"model": "random", "d": 2, "K": 2, "condition": "none", "guidance": None, "nfe": 3, "seed": 0}
    h = sc.handle_for(c)
    cfg = ExperimentConfig(model=h.spec, sizes={"train": 120, "val": 8, "test": 8}, teacher_steps=1, teacher_solver="exact",
                           dtype="float64")
    t = Experiment(tmp_path, h, cfg, dtype=torch.float64, progress=False, log=lambda m: None).teacher("train")
    god, oracle = dg.fit_global_and_oracle(h, t, 3, 12, iterations=20, solver="unipc", afs=True)
    assert (god.solver, god.afs, oracle.solver, oracle.afs) == ("unipc", True, "unipc", True)
    assert solver_nfe(god.solver, god.steps, god.afs) == 3
    seen, real = [], dc._fit_from

    def spy(disc, *a, **kw):
        seen.append((type(disc).__name__, disc.solver, disc.afs))
        return real(disc, *a, **kw)

    monkeypatch.setattr(dc, "_fit_from", spy)
    dc.curve_ratio(h, t, god, 1000, iterations=10, replicates=10)
    assert seen and all(s[1:] == ("unipc", True) for s in seen), seen
    with pytest.raises(InputError, match="heun cannot make exactly 3 model calls"):  # Heun without AFS: 2N calls
        dg.fit_global_and_oracle(h, t, 3, 12, iterations=20, solver="heun", afs=False)


def test_patience_option_sets_the_budget_of_every_trained_method():
    import argparse

    p = argparse.ArgumentParser()
    sc.add_arguments(p)
    assert sc.settings_from_args(p.parse_args([]))["patience"] == sc.FULL["patience"]
    assert sc.settings_from_args(p.parse_args(["--patience", "40"]))["patience"] == 40
    assert sc.settings_from_args(p.parse_args(["--quick", "--patience", "9"]))["patience"] == 9


def test_posterior_mean_backward_passes_gradcheck():
    """The hand-written backward pass against finite differences (float64), with a class mask, a row of `all classes`
    and, in the second mixture, per-component log-determinants; double backward is refused, not silently wrong."""
    from indis.bench.scaling_models import DiagonalMixture

    g = torch.Generator().manual_seed(11)
    mixes = [random_mixture(3, 4, seed=2),
             DiagonalMixture(torch.randn(4, 3, generator=g, dtype=torch.float64),
                             torch.rand(4, 3, generator=g, dtype=torch.float64) + 0.05, torch.tensor([0, 1, 0, 1]))]
    for mix in mixes:
        x = torch.randn(3, 3, generator=g, dtype=torch.float64, requires_grad=True)
        sigma = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64, requires_grad=True)
        labels = torch.tensor([0, -1, 1])
        assert torch.autograd.gradcheck(lambda a, s: mix.posterior_mean(a, s, labels), (x, sigma))
    w = torch.ones(3, 3, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad((mixes[0].posterior_mean(x, sigma, None) * w).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        gx.sum().backward()


def test_per_class_gather_equals_the_masked_sum_over_all_components(monkeypatch):
    """Rows with a class are computed over that class's components only; values and gradients equal the full-covariance
    reference (which sums over all K with the others masked), for a batch mixing classes and `all` rows, in blocks of
    3 rows; unequal class sizes fall back to the mask."""
    import indis.bench.scaling_models as sm

    mix = random_mixture(5, 20, seed=4)  # 10 classes of 2 components
    assert mix.members is not None and tuple(mix.members.shape) == (10, 2)
    assert bool((mix.labels[mix.members] == torch.arange(10)[:, None]).all())
    monkeypatch.setattr(sm, "CHUNK_ELEMENTS", 3 * 2 * 5)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(9, 5, generator=g, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor([0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 40.0, 0.3, 0.8], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([3, -1, 0, 9, 3, -1, 5, 0, 7])
    w = torch.randn(9, 5, generator=g, dtype=torch.float64)
    full = GaussianMixture(torch.full((20,), 0.05), mix.mu, torch.diag_embed(mix.lam), labels=mix.labels)
    for cls in (labels, labels.clamp_min(0), torch.full((9,), -1)):  # mixed, all with a class, none with a class
        a, b = mix.posterior_mean(x, sigma, cls), full.posterior_mean(x, 1.0, sigma, cond=cls)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)  # float64, diagonal algebra vs Cholesky
        for u, v in zip(torch.autograd.grad((a * w).sum(), (x, sigma)), torch.autograd.grad((b * w).sum(), (x, sigma))):
            torch.testing.assert_close(u, v, rtol=1e-8, atol=1e-10)
    uneven = sm.DiagonalMixture(mix.mu[:3], mix.lam[:3], torch.tensor([0, 0, 1]))
    assert uneven.members is None
    ref = GaussianMixture(torch.full((3,), 1 / 3), mix.mu[:3], torch.diag_embed(mix.lam[:3]), labels=torch.tensor([0, 0, 1]))
    cls = torch.tensor([0, 1, -1, 0, 1, 1, 0, -1, 0])
    torch.testing.assert_close(uneven.posterior_mean(x, sigma, cls), ref.posterior_mean(x, 1.0, sigma, cond=cls),
                               rtol=1e-9, atol=1e-9)


def test_posterior_mean_refuses_a_class_it_does_not_have():
    mix = random_mixture(3, 4, seed=1)  # classes 0..3
    with pytest.raises(InputError, match="below 4, got 4"):
        mix.posterior_mean(torch.zeros(2, 3), torch.ones(2), torch.tensor([0, 4]))
