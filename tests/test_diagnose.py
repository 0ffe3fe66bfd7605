"""The INDIS diagnostic (`indis.diagnose`, `indis eval --diagnose`): the nearest-prior distance against its closed
form, the reach, group and learning-curve predictions on hand-made numbers, the recommendation rule, and the
diagnostic end to end on tiny mixtures."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from indis.bench import scaling as sc
from indis.bench.scaling_models import mixture_handle, random_mixture
from indis.diagnose import nearest_eps, predict
from indis.errors import InputError


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
    assert "not the spread between training runs" in out  # the printed interval says what it is not
    # GOD's tail on the scored block, printed as context: the same fits in the same process as the --json run above
    tail = lc["god_tail_share"]
    assert 0 < tail <= 1 and f"worst 1% of scored priors carry {tail:.2f} of its teacher-MSE" in out
    assert ("a few priors reach the wrong mode" in out) == (tail > 0.2)
    from indis.diagnose_curve import stalled
    assert ("phi did not leave the shared schedule" in out) == stalled(lc)  # the caveat only where phi stayed at GOD
    assert main([*argv2, "--diagnose-groups", "--json", "--train-size", "5000"]) == 0
    g = json.loads(capsys.readouterr().out)
    assert g["extra"]["groups"] and set(g["extra"]["stage_seconds"]) == set(STAGES)
    assert g["extra"]["condition_groups"] == 0  # an unconditional model: the endpoint groups are the group prediction
    assert g["extra"]["group_prediction"] == min(1.0, g["extra"]["group_over_shared"])
    # the group fits consume no random numbers the learning curve draws (it seeds its own): same process, same
    # arithmetic, so the prediction is the same to round-off
    assert g["predicted_ratio"] == pytest.approx(d["predicted_ratio"], rel=1e-12)
    assert g["predicted_ci"] == pytest.approx(d["predicted_ci"], rel=1e-12)


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


def test_a_stalled_learning_curve_is_one_where_phi_stayed_at_its_warm_start():
    from indis.diagnose_curve import STALLED, stalled

    assert stalled({"at_sizes": [1.0, 1.0 - STALLED / 2]}) and stalled({"at_sizes": [1.0 + 1e-9, 1.0]})
    assert not stalled({"at_sizes": [1.0, 0.99]}) and not stalled({"at_sizes": [0.95, 1.0]})  # phi moved on one subset
    assert not stalled(None) and not stalled({})  # no curve (a small teacher set): nothing stalled


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
