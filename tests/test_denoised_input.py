"""INDIS with phi reading the model's first output D(x_T, t_max) (`net={"denoised_input": True}`): the solver reuses
that output, so a sample still costs the solver's NFE; an untrained phi is its warm start; the standardisation is the
mean and spread of D over calibration priors; save/load keeps it; bad uses fail with a clear message; it trains."""
import math
import os
import sys

import pytest
import torch

import indis
from indis.discretizations import InstanceSchedule, heuristic, load_discretization
from indis.errors import InputError
from indis.losses import mse
from indis.methods import calibration_priors, learned
from indis.models import ModelHandle
from indis.priors import CondSpec
from indis.solvers import sample, solver_nfe
from indis.teacher import generate_teacher
from indis.training import TrainConfig, evaluate_loss, train_discretizer

sys.path.insert(0, os.path.dirname(__file__))
from fake_models import ring_mixture  # noqa: E402

DT = torch.float64


class Counting(indis.Denoiser):
    """The ring's exact denoiser, counting model calls (one per batch evaluation)."""

    def __init__(self, sched):
        super().__init__(ring_mixture().x0_fn(sched), sched, "x0")
        self.calls = 0

    def forward(self, x, t, cond=None):
        self.calls += 1
        return super().forward(x, t, cond)


def handle(sched=None):
    sched = sched or indis.EDM()
    return ModelHandle(Counting(sched), (2,), "ring", "class", 2)


def afs_step(x, t0, t1, scale0):
    """EDM (sigma = t): AFS takes eps = x / sqrt(1 + t0^2), scaled; the first-order step is x + (t1 - t0) eps."""
    t0, t1 = torch.as_tensor(t0, dtype=DT).reshape(-1, 1), torch.as_tensor(t1, dtype=DT).reshape(-1, 1)
    return x + (t1 - t0) * scale0 * x / torch.sqrt(1 + t0 * t0)


@pytest.mark.parametrize("solver,afs", [(sv, False) for sv in ("euler", "heun", "ipndm", "dpmpp_3m", "unipc")]
                         + [(sv, True) for sv in ("euler", "ipndm", "dpmpp_3m", "unipc")])
def test_reused_first_output_is_the_same_sample_with_one_call_less(solver, afs):
    """The first model call is at (x_T, t_0 + shift_0), or with AFS at (x_1, t_1 + shift_1), x_1 the analytic first
    step (closed form): reusing D there gives the same sample with one call less."""
    h = handle()
    den, N = h.denoiser, 4
    x = torch.randn(5, 2, dtype=DT, generator=torch.Generator().manual_seed(1 if afs else 0)) * 80
    c = torch.tensor([1, 1, 0, 1, 0] if afs else [0, 1, 0, 1, 1])
    t = heuristic("edm", N, den.schedule).to(DT)
    shift = 0.1 * torch.rand(5, N, dtype=DT) * t[:-1]
    scale = 1 + 0.05 * torch.rand(5, N, dtype=DT)
    den.calls = 0
    ref = sample(den, x, t, solver, shift=shift, scale=scale, cond=c, afs=afs)
    calls = den.calls
    assert calls == solver_nfe(solver, N, afs=afs, final_zero=bool(t[-1] == 0))
    if afs:
        first = den(afs_step(x, t[0], t[1], scale[:, :1]), t[1] + shift[:, 1], c)[0]
    else:
        first = den(x, t[0] + shift[:, 0], c)[0]
    den.calls = 0
    out = sample(den, x, t, solver, shift=shift, scale=scale, cond=c, afs=afs, first_denoised=first)
    assert den.calls == calls - 1
    # the same float64 operations on the same inputs: equal up to rounding (1e-12 relative covers any reordering)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_reused_first_output_rejects_what_cannot_be_a_first_call():
    h = handle()
    den = h.denoiser
    x, t = torch.randn(3, 2, dtype=DT) * 80, heuristic("edm", 3, den.schedule).to(DT)
    first = den(x, t[0].expand(3), torch.tensor([0, 1, 0]))[0]
    with pytest.raises(InputError, match="shape"):
        sample(den, x, t, "ipndm", cond=torch.tensor([0, 1, 0]), first_denoised=first[:2])
    with pytest.raises(InputError, match="shape"):
        sample(den, x, t, "ipndm", cond=torch.tensor([0, 1, 0]), first_denoised="D")


@pytest.mark.parametrize("solver", ["ipndm", "unipc"])
def test_after_afs_an_untrained_phi_is_its_warm_start(solver, tmp_path):
    """INDIS-D under AFS: t_1, the first scale and the first call's shift are the warm start's for every sample, phi
    places t_2..t_N; untrained it is exactly its GOD, costs the solver's NFE, and reads D at the solver's own x_1."""
    h = handle()
    god = learned(h, "god", 4, solver, init="logsnr", afs=True).double()
    with torch.no_grad():
        god.logits.add_(0.3 * torch.randn_like(god.logits))
        god.scale_logits.add_(torch.tensor([0.4, -0.2, 0.3, 0.1], dtype=DT))
        god.shift_logits.add_(torch.tensor([0.6, -0.5, 0.3, 0.2], dtype=DT))
    d = learned(h, "indis", 4, solver, afs=True, net={"denoised_input": True, "hidden": 16}).double()
    d.warm_start(god).calibrate(h.denoiser, *calibration_priors(h))
    x, c = torch.randn(6, 2, dtype=DT) * 80, torch.tensor([0, 1, 1, 0, 0, 1])
    g = god(x).detach()
    assert float(d.first_time) == pytest.approx(float(g.times[0, 1]), rel=1e-12)
    assert float(d.first_scale) == pytest.approx(float(g.scale[0, 0]), rel=1e-12) and float(d.first_scale) != 1.0
    assert float(d.first_shift) == pytest.approx(float(g.shift[0, 1]), rel=1e-12) and float(d.first_shift) != 0.0
    h.denoiser.calls = 0
    out = d.sample(h.denoiser, x, c)
    assert h.denoiser.calls == d.nfe == god.nfe
    # the warm start's times pass through log-gaps and back (float64, ~1e-15 relative): the samples agree to 1e-10
    torch.testing.assert_close(out, god.sample(h.denoiser, x, c), rtol=1e-10, atol=1e-10)
    first = d.first_output(h.denoiser, x, c)
    x1 = afs_step(x, g.times[:, 0], g.times[:, 1], g.scale[:, :1])
    # D at x_1 in closed form (the same first-order step in another arithmetic form: float64 rounding only)
    torch.testing.assert_close(first, h.denoiser(x1, g.times[:, 1] + g.shift[:, 1], c)[0], rtol=1e-9, atol=1e-9)
    with torch.no_grad():  # move phi: t_1, the first scale and the first shift stay shared
        for p in d.phi.parameters():
            p.add_(0.3 * torch.randn_like(p))
    s, _ = d.plan(h.denoiser, x, c)
    assert torch.all(s.times[:, 1] == d.first_time) and torch.all(s.scale[:, 0] == d.first_scale)
    assert torch.all(s.shift[:, 1] == d.first_shift) and s.times[:, 2:].std(0).max() > 0
    assert bool((s.times[:, 1:] < s.times[:, :-1]).all())
    back = load_discretization(d.save(tmp_path / "d")).double()
    for k in ("first_time", "first_scale", "calibrated_first", "calibrated_shift"):
        assert torch.equal(getattr(back, k), getattr(d, k))
    with torch.no_grad():
        d.first_time.mul_(0.9)
    with pytest.raises(InputError, match="not calibrated"):
        d.sample(h.denoiser, x, c)
    with pytest.raises(InputError, match="heun"):
        InstanceSchedule(3, h.schedule, "heun", afs=True, data_shape=[2], net={"denoised_input": True})
    with pytest.raises(InputError, match="steps >= 2"):
        InstanceSchedule(1, h.schedule, "ipndm", afs=True, data_shape=[2], net={"denoised_input": True})


def test_calibration_is_the_mean_and_spread_of_the_first_output():
    h = handle()
    d = learned(h, "indis", 3, "ipndm", net={"denoised_input": True, "hidden": 16}).double()
    x, c = calibration_priors(h)
    assert x.shape == (256, 2) and c.shape == (256,)
    mix, sched = ring_mixture(), h.schedule
    assert float(d.first_shift) == 0.0  # no warm start: the first evaluation is at t_max
    D = mix.x0_fn(sched)(x, torch.full((256,), sched.t_max, dtype=DT), c)  # the mixture's posterior mean, directly
    torch.testing.assert_close(d.d_mean, D.mean(0), rtol=1e-10, atol=1e-12)  # float64 sums of 256 terms
    torch.testing.assert_close(d.d_std, D.std(0), rtol=1e-10, atol=1e-12)
    x2, c2 = calibration_priors(h)
    assert torch.equal(x, x2) and torch.equal(c, c2)  # its own fixed stream


def test_untrained_phi_is_its_warm_start_and_costs_the_solvers_nfe(tmp_path):
    h = handle()
    god = learned(h, "god", 3, "ipndm", init="logsnr").double()
    with torch.no_grad():  # a trained-looking warm start, with a first shift the variant must keep
        god.logits.add_(0.2 * torch.randn_like(god.logits))
        god.scale_logits.add_(0.3)
        god.shift_logits.add_(torch.tensor([0.8, -0.5, 0.3], dtype=DT))
    d = learned(h, "indis", 3, "ipndm", net={"denoised_input": True, "hidden": 16}).double()
    d.warm_start(god)
    x, c = torch.randn(6, 2, dtype=DT) * 80, torch.tensor([0, 1, 1, 0, 0, 1])
    with pytest.raises(InputError, match="not calibrated"):  # warm_start moved the first evaluation: measure again
        d.sample(h.denoiser, x, c)
    d.calibrate(h.denoiser, *calibration_priors(h))
    h.denoiser.calls = 0
    out = d.sample(h.denoiser, x, c)
    assert h.denoiser.calls == d.nfe == 3
    torch.testing.assert_close(out, god.sample(h.denoiser, x, c), rtol=1e-12, atol=1e-12)  # same steps, same arithmetic
    with pytest.raises(InputError, match="first output"):
        d(x, c)
    s, first = d.plan(h.denoiser, x, c)
    g = god(x[:1]).detach()
    assert first.shape == x.shape and float(g.shift[0, 0]) != 0
    assert torch.all(s.shift[:, 0] == g.shift[0, 0])  # every sample: the warm start's first evaluation time
    with torch.no_grad():  # move phi so the round trip has something to keep
        for p in d.parameters():
            p.add_(0.05 * torch.randn_like(p))
    back = load_discretization(d.save(tmp_path / "d")).double()
    for k in ("d_mean", "d_std", "first_shift", "calibrated_shift"):
        assert torch.equal(getattr(back, k), getattr(d, k))
    a, b = d(x, c, denoised=first), back(x, c, denoised=first)
    for u, v in ((a.times, b.times), (a.shift, b.shift), (a.scale, b.scale)):
        # equal weights; BLAS may pick another kernel for the loaded (freshly allocated) tensors: float64 rounding only
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-15)
    raw = InstanceSchedule(3, h.schedule, "ipndm", data_shape=[2], net={"denoised_input": True, "num_classes": 2}).double()
    with pytest.raises(InputError, match="not calibrated"):  # never calibrated: no silent unit standardisation
        raw.sample(h.denoiser, x, c)


@pytest.mark.parametrize("afs", [False, True])
def test_it_trains_below_its_warm_start(tmp_path, afs):
    sched = indis.FlowMatching()
    h = handle(sched)
    ts = generate_teacher(h.denoiser, tmp_path / "t", [2], 1200, times=heuristic("uniform", 60, sched), solver="ipndm",
                          shard_size=600, batch_size=600, dtype=DT, progress=False, cond=CondSpec("class", num_classes=2))
    held = torch.arange(1000, 1200)
    god = learned(h, "god", 3, "euler", init="uniform", afs=afs).double()
    d = learned(h, "indis", 3, "euler", afs=afs, net={"denoised_input": True, "hidden": 64}).double()
    d.warm_start(god).calibrate(h.denoiser, *calibration_priors(h))
    start = evaluate_loss(d, h.denoiser, ts, held, mse, dtype=DT)
    cfg = TrainConfig(iterations=200, batch_size=200, lr=3e-3, train_indices=list(range(900)),
                      val_indices=list(range(900, 1000)), val_every=50)
    train_discretizer(d, h.denoiser, ts, cfg, dtype=DT, progress=False)
    assert evaluate_loss(d, h.denoiser, ts, held, mse, dtype=DT) < 0.8 * start


def test_cli_trains_saves_and_evaluates_it(tmp_path, capsys):
    import json
    import os
    import sys

    sys.path.insert(0, os.path.dirname(__file__))  # python:fake_models:... imports the module from tests/
    from indis.cli import main

    gmm = "python:fake_models:make_gmm"
    for name, seed in (("t", "0"), ("held", "1")):
        assert main(["teacher", "--model", gmm, "--steps", "8", "--num", "64", "--out", str(tmp_path / name), "--seed", seed,
                     "--no-progress"]) == 0
    small = ["--steps", "3", "--iterations", "6", "--val-every", "3", "--batch-size", "16", "--no-progress", "--json"]
    assert main(["train", "--model", gmm, "--teacher", str(tmp_path / "t"), "--method", "god", "--starts", "1",
                 "--out", str(tmp_path / "god"), *small]) == 0
    assert main(["train", "--model", gmm, "--teacher", str(tmp_path / "t"), "--method", "indis", "--denoised-input",
                 "--init", str(tmp_path / "god" / "best"), "--out", str(tmp_path / "ind"), *small]) == 0
    capsys.readouterr()
    d = load_discretization(tmp_path / "ind" / "best")
    god = load_discretization(tmp_path / "god" / "best")
    assert d.denoised_input and float(d.first_shift) == pytest.approx(float(god(torch.zeros(1, 3)).shift[0, 0].detach()))
    assert main(["eval", "--model", gmm, "--teacher", str(tmp_path / "held"), "--discretization", str(tmp_path / "ind" / "best"),
                 "--replicates", "20", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["results"][0]["nfe"] == 3 and math.isfinite(res["results"][0]["mse"])
    rc = main(["train", "--model", gmm, "--teacher", str(tmp_path / "t"), "--method", "god", "--denoised-input",
               "--out", str(tmp_path / "bad"), *small])
    err = capsys.readouterr().err
    assert rc == 2 and "--denoised-input is an option of phi" in err
