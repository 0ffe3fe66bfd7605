"""Training reaches the good basin (issue: learned schedules stuck near their initialization).

A 2-D Gaussian mixture under EDM with an exact denoiser: the optimal 3-step Euler global schedule (times only) is
found by brute force (grid over the two interior log-sigmas, refined by Nelder-Mead). GOD with the defaults users get
from `indis train` reaches it from three different initializations; phi started from a poor schedule moves its mean
schedule and ends at or below the global optimum. Plus the budget rule's pieces: plateau cuts, the patience stop,
extending a run, reusing a finished one, and multi-start choosing on validation loss."""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

import indis
from indis.commands.train import DEFAULT_LR
from indis.discretizations import GlobalSchedule, InstanceSchedule, heuristic
from indis.losses import mse
from indis.teacher import generate_teacher
from indis.toy.gmm import GaussianMixture
from indis.training import TrainConfig, TrainRun, evaluate_loss, train_discretizer, train_with_starts

DT = torch.float64
N_PRIORS = 600
ALL = list(range(N_PRIORS))


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    ang = torch.tensor([0.3, 2.0, 4.1], dtype=DT)
    means = torch.stack([ang.cos(), ang.sin()], 1) * torch.tensor([[1.5], [0.8], [1.2]], dtype=DT)
    covs = torch.stack([torch.diag(torch.tensor(v, dtype=DT)) for v in ([0.02, 0.3], [0.1, 0.01], [0.05, 0.05])])
    gmm = GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=DT), means, covs)
    sched = indis.EDM()
    den = indis.Denoiser(gmm.x0_fn(sched), sched, "x0")
    ts = generate_teacher(den, tmp_path_factory.mktemp("t"), [2], N_PRIORS, times=heuristic("edm", 60, sched), solver="ipndm",
                          shard_size=N_PRIORS, batch_size=N_PRIORS, dtype=DT, progress=False)
    return sched, den, ts


def brute_force_optimum(den, ts) -> tuple[float, np.ndarray]:
    """Minimum over the two interior times of the mean teacher-MSE of 3-step Euler on all priors."""
    _, xT, _, x0 = ts.batch(torch.arange(N_PRIORS), DT)
    lo, hi = math.log(0.002), math.log(80.0)

    def objective(l1: torch.Tensor, l2: torch.Tensor) -> torch.Tensor:
        G = l1.shape[0]
        t = torch.stack([torch.full((G,), 80.0, dtype=DT), l1.exp(), l2.exp(), torch.full((G,), 0.002, dtype=DT)], 1)
        out = indis.sample(den, xT.repeat(G, 1), t.repeat_interleave(N_PRIORS, 0), solver="euler")
        return ((out - x0.repeat(G, 1)) ** 2).mean(1).view(G, N_PRIORS).mean(1)

    g = torch.linspace(lo, hi, 62, dtype=DT)[1:-1]
    L1, L2 = torch.meshgrid(g, g, indexing="ij")
    m = L1 > L2
    vals = torch.cat([objective(a, b) for a, b in zip(L1[m].split(300), L2[m].split(300))])
    k = int(torch.argmin(vals))
    f = lambda p: float(objective(torch.tensor([p[0]], dtype=DT), torch.tensor([p[1]], dtype=DT))[0]) if hi > p[0] > p[1] > lo else 1e9  # noqa: E731
    r = minimize(f, [float(L1[m][k]), float(L2[m][k])], method="Nelder-Mead", options=dict(xatol=1e-7, fatol=1e-13))
    return float(r.fun), np.exp(r.x)


def _cfg(**kw):
    base = dict(iterations=3000, batch_size=100, lr=DEFAULT_LR["god"], train_indices=ALL, val_indices=ALL, val_every=25, patience=8)
    return TrainConfig(**{**base, **kw})


def _god(sched, init):
    return GlobalSchedule(3, sched, "euler", data_shape=[2], init_times=heuristic(init, 3, sched), space="lambda",
                          learn_shift=False, learn_scale=False)


def test_god_reaches_brute_force_optimum_from_three_inits(problem):
    sched, den, ts = problem
    best, times = brute_force_optimum(den, ts)
    for init in ("edm", "logsnr", "uniform"):
        g = _god(sched, init)
        r = train_discretizer(g, den, ts, _cfg(), dtype=DT, progress=False)
        got = evaluate_loss(g, den, ts, torch.arange(N_PRIORS), mse, dtype=DT)
        # 2%: the brute-force optimum is refined to ~1e-10 relative, so any gap is the optimiser's
        assert got <= 1.02 * best, (init, got, best, g(torch.zeros(1, 2, dtype=DT)).times[0].tolist(), times)
        assert r.stop_reason == "patience" and r.iterations < 3000  # converged, not stopped by the cap


def test_phi_moves_its_mean_schedule_out_of_a_poor_start(problem):
    sched, den, ts = problem
    best, times = brute_force_optimum(den, ts)
    d = InstanceSchedule(3, sched, "euler", data_shape=[2], init_times=heuristic("uniform", 3, sched), space="lambda",
                         learn_shift=False, learn_scale=False, net=dict(hidden=32, depth=2)).double()
    r = train_discretizer(d, den, ts, _cfg(lr=3e-3), dtype=DT, progress=False)
    start = next(h for h in r.history if "val" in h)["log_sigma_mean"]
    end = min((h for h in r.history if "val" in h), key=lambda h: h["val"])["log_sigma_mean"]
    target = np.log(times)
    # the mean schedule travelled most of the way from the uniform start to the global optimum (log-sigma units)
    assert np.abs(np.array(end) - target).max() < 0.25 * np.abs(np.array(start) - target).max(), (start, end, target)
    got = evaluate_loss(d, den, ts, torch.arange(N_PRIORS), mse, dtype=DT)
    assert got <= 1.02 * best, (got, best)  # per-instance times do at least as well as the best global schedule


def test_multistart_chooses_the_lowest_validation_start(problem):
    sched, den, ts = problem
    d, r = train_with_starts(lambda init: _god(sched, init), ["uniform", "edm", "logsnr"], den, ts, _cfg(lr=1e-2, iterations=60),
                             probe_iterations=20, dtype=DT, progress=False)
    assert [s["start"] for s in r.starts] == ["uniform", "edm", "logsnr"]
    chosen = [s for s in r.starts if s["chosen"]]
    assert len(chosen) == 1 and chosen[0]["val"] == min(s["val"] for s in r.starts)


def test_plateau_cuts_and_patience_stop(problem, monkeypatch):
    sched, den, ts = problem
    run = TrainRun(_god(sched, "edm"), den, ts, _cfg(lr=1e-2, val_every=1, patience=7, plateau_patience=3), dtype=DT)
    vals = iter([1.0, 0.9, 0.5] + [0.5] * 20)  # the start (iteration 0), two improvements, then none
    monkeypatch.setattr(run, "validate", lambda: {"val": next(vals)})
    r = run.run(progress=False)
    assert r.history[0] == {"iteration": 0, "val": 1.0}
    lrs = [h["lr"] for h in r.history[1:]]
    assert r.stop_reason == "patience" and r.iterations == 2 + 7 and r.best_iter == 2
    # validations after iterations 3, 4, 5 fail to improve: the rate is halved for iterations 6-8, again for 9
    assert lrs == [1e-2] * 5 + [5e-3] * 3 + [2.5e-3]
    assert run.st.lr_scale == 0.25


def test_finished_run_is_reused_and_a_larger_cap_extends_it(problem, tmp_path):
    sched, den, ts = problem
    cfg = _cfg(lr=1e-2, iterations=20, val_every=10, patience=0)
    a = train_discretizer(_god(sched, "edm"), den, ts, cfg, out_dir=tmp_path / "a", dtype=DT, progress=False)
    assert a.stop_reason == "cap" and not a.reused and a.seconds > 0
    again = train_discretizer(_god(sched, "edm"), den, ts, cfg, out_dir=tmp_path / "a", dtype=DT, progress=False)
    assert again.reused and again.iterations == 20 and again.seconds == a.seconds  # reports the original training time
    more = _cfg(lr=1e-2, iterations=40, val_every=10, patience=0)
    ext = _god(sched, "edm")
    e = train_discretizer(ext, den, ts, more, out_dir=tmp_path / "a", dtype=DT, progress=False)
    ref = _god(sched, "edm")
    train_discretizer(ref, den, ts, more, out_dir=tmp_path / "b", dtype=DT, progress=False)
    assert e.iterations == 40 and not e.reused
    # same code, same inputs, one process: the extended run equals an uninterrupted 40-iteration run bit for bit
    assert all(torch.equal(ext.state_dict()[k], ref.state_dict()[k]) for k in ref.state_dict())
    with pytest.raises(indis.InputError, match="other settings"):
        train_discretizer(_god(sched, "edm"), den, ts, _cfg(lr=2e-2, iterations=40, val_every=10), out_dir=tmp_path / "a",
                          dtype=DT, progress=False)


def _snapshot(run):
    return [p.detach().clone() for p in run.params]


def test_ema_result_is_the_moving_average_of_the_raw_weights(problem):
    sched, den, ts = problem
    d = 0.8
    run = TrainRun(_god(sched, "edm"), den, ts, _cfg(lr=1e-2, iterations=15, val_indices=[], patience=0, ema=d), dtype=DT)
    raw = [_snapshot(run)]
    r = run.run(progress=False, callback=lambda it, loss: raw.append(_snapshot(run)))
    assert r.iterations == 15 and len(raw) == 16
    ref = raw[0]
    for w in raw[1:]:  # EMA by its definition: e_0 = w_0, e_t = d e_{t-1} + (1 - d) w_t
        ref = [d * e + (1 - d) * x for e, x in zip(ref, w)]
    assert not torch.allclose(raw[-1][0], ref[0])  # the average differs from the last raw weights
    # no validation set: the result is the final average; 1e-6 relative covers float32 rounding of 15 updates
    for p, e in zip(run.params, ref):
        torch.testing.assert_close(p.detach(), e, rtol=1e-6, atol=1e-9)


def test_ema_validates_the_average_and_resumes_exactly(problem, tmp_path):
    sched, den, ts = problem
    cfg = _cfg(lr=1e-2, iterations=20, val_every=5, patience=0, ema=0.7)
    run = TrainRun(_god(sched, "edm"), den, ts, cfg, dtype=DT, out_dir=tmp_path / "a")
    seen = []
    orig = run.validate
    run.validate = lambda: (seen.append((_snapshot(run), [e.clone() for e in run.ema])), orig())[1]
    with pytest.raises(KeyboardInterrupt):
        run.run(progress=False, callback=lambda it, loss: it == 10 and (_ for _ in ()).throw(KeyboardInterrupt))
    assert len(seen) == 3  # iterations 0, 5 and 10; each saw the averaged weights in place of the raw ones
    for params, ema in seen:
        assert all(torch.equal(p, e) for p, e in zip(params, ema))
    a = _god(sched, "edm")
    train_discretizer(a, den, ts, cfg, out_dir=tmp_path / "a", dtype=DT, progress=False)
    b = _god(sched, "edm")
    train_discretizer(b, den, ts, cfg, out_dir=tmp_path / "b", dtype=DT, progress=False)
    # same code, same inputs, one process: resuming restores the average, so both runs end bit for bit equal
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in b.state_dict())
    with pytest.raises(indis.InputError, match="ema"):  # an EMA run is not resumed without EMA, or vice versa
        train_discretizer(_god(sched, "edm"), den, ts, _cfg(lr=1e-2, iterations=20, val_every=5, patience=0),
                          out_dir=tmp_path / "a", dtype=DT, progress=False)
    with pytest.raises(indis.InputError, match=r"ema must be a decay in \[0, 1\)"):
        TrainConfig(ema=1.0).check()
