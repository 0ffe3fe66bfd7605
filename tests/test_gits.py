"""GITS: DP against brute force, cost matrix against a direct transcription, anchor values, end-to-end on a GMM."""
import itertools
import math
import sys

import numpy as np
import pytest
import torch

import indis
from indis.discretizations.gits import gits, gits_cost_matrix, gits_dp, gits_teacher
from indis.discretizations.heuristics import heuristic

DT = torch.float64


def brute_force(C, steps, coeff):
    """All paths 0 < i_1 < ... < i_{steps-1} < G-1; objective sum_k coeff^k C[i_k, i_{k+1}]."""
    G = C.shape[0]
    best, arg = math.inf, None
    for mid in itertools.combinations(range(1, G - 1), steps - 1):
        p = (0,) + mid + (G - 1,)
        v = sum(coeff**k * C[p[k], p[k + 1]] for k in range(steps))
        if v < best - 1e-12:
            best, arg = v, list(p)
    return best, arg


def path_value(C, p, coeff):
    return sum(coeff**k * C[p[k], p[k + 1]] for k in range(len(p) - 1))


def synthetic_costs(G=21):
    g = np.linspace(0.0, 1.0, G) ** 1.7  # a non-uniform "time" axis
    w = 1.0 + 0.8 * np.sin(np.arange(G) * 0.9) ** 2  # per-start weights, unrelated to GITS
    smooth = (g[None, :] - g[:, None]) ** 2 * w[:, None] + 0.02 * np.abs(g[None, :] - g[:, None])
    rng = np.random.default_rng(0)
    noisy = smooth * rng.uniform(0.5, 1.5, size=(G, G)) - 0.01 * rng.uniform(size=(G, G))  # allows negative (signed) costs
    return [np.triu(smooth, 1), np.triu(noisy, 1)]


@pytest.mark.parametrize("coeff", [0.8, 1.0, 1.15, 1.5])
@pytest.mark.parametrize("steps", [2, 4, 5])
def test_dp_matches_brute_force(steps, coeff):
    for C in synthetic_costs():
        path = gits_dp(C, steps, coeff)
        best, arg = brute_force(C, steps, coeff)
        assert len(path) == steps + 1 and path[0] == 0 and path[-1] == C.shape[0] - 1
        assert all(a < b for a, b in zip(path, path[1:]))
        assert path_value(C, path, coeff) == pytest.approx(best, rel=1e-12, abs=1e-15)
        assert path == arg


def test_dp_trivial_and_torch_input():
    C = torch.from_numpy(synthetic_costs()[0])
    assert gits_dp(C, 1) == [0, 20]
    assert gits_dp(C, 20) == list(range(21))


def test_anchor_cifar10_six_steps():
    g = heuristic("edm", 60, indis.EDM())
    t = g[[0, 19, 27, 33, 39, 45, 60]].numpy()
    np.testing.assert_allclose(t, [80, 10.9836, 3.8811, 1.584, 0.5666, 0.1698, 0.002], rtol=0, atol=5.01e-5)


def direct_cost(X, d, u, metric):
    """Transcription of the GITS reference loops (per pair, per sample)."""
    G, B = X.shape[:2]
    Xf, df = X.reshape(G, B, -1), d.reshape(d.shape[0], B, -1)

    def dev(a, b):  # distance of a[b] to the line X_0[b] -> X_last[b]
        bc = Xf[-1, b] - Xf[0, b]
        ac = Xf[-1, b] - a
        e = bc / torch.linalg.norm(bc)
        return float(torch.linalg.norm(ac - torch.dot(ac, e) * e))

    C = torch.zeros(G, G, dtype=DT)
    for i in range(G - 1):
        for j in range(i + 1, G):
            xh = Xf[i] + (u[j] - u[i]) * df[i]
            if metric == "l2":
                C[i, j] = torch.stack([torch.linalg.norm(xh[b] - Xf[j, b]) for b in range(B)]).mean()
            elif metric == "l1":
                C[i, j] = torch.stack([(xh[b] - Xf[j, b]).abs().sum() for b in range(B)]).mean()
            else:
                stu = np.mean([dev(xh[b], b) for b in range(B)])
                tea = 0.0 if j == G - 1 else np.mean([dev(Xf[j, b], b) for b in range(B)])
                C[i, j] = stu - tea
    return C


@pytest.mark.parametrize("metric", ["dev", "l2", "l1"])
def test_cost_matrix_matches_direct(metric):
    gen = torch.Generator().manual_seed(1)
    G, B = 7, 3
    X = torch.randn(G, B, 2, 3, generator=gen, dtype=DT)
    d = torch.randn(G - 1, B, 2, 3, generator=gen, dtype=DT)
    u = torch.linspace(5.0, 0.1, G, dtype=DT)
    C = gits_cost_matrix(X, d, u, metric)
    assert C.shape == (G, G) and bool((torch.tril(C) == 0).all())
    torch.testing.assert_close(C, direct_cost(X, d, u, metric), rtol=1e-10, atol=1e-12)
    # a list of per-step tensors and G derivatives (last unused) give the same matrix
    d_full = torch.cat([d, torch.randn(1, B, 2, 3, generator=gen, dtype=DT)])
    torch.testing.assert_close(gits_cost_matrix(list(X), list(d_full), u, metric), C)


# ---- a small analytic Gaussian-mixture denoiser (EDM/VE noise level) ----------------------------------------
MU = torch.tensor([[2.0, 0.0, 1.0, -1.0], [-1.5, 1.0, -1.0, 0.5], [0.0, -2.0, 0.5, 1.5]], dtype=DT)
S2 = torch.tensor([0.05, 0.2, 0.1], dtype=DT)
PI = torch.tensor([0.5, 0.3, 0.2], dtype=DT)


def gmm_x0(x, s):
    """E[x0 | x0 + s eps = x] for sum_k PI_k N(MU_k, S2_k I)."""
    v = S2[None, :] + s[:, None] ** 2  # [B, K]
    r2 = ((x[:, None, :] - MU[None]) ** 2).sum(-1)
    logw = torch.log(PI)[None] - 0.5 * r2 / v - 0.5 * MU.shape[1] * torch.log(v)
    w = torch.softmax(logw, -1)
    comp = MU[None] + (S2[None, :, None] / v[..., None]) * (x[:, None, :] - MU[None])
    return (w[..., None] * comp).sum(1)


def gmm_denoiser(schedule):
    def fn(x, t, cond):
        a, sg = schedule.alpha(t), schedule.sigma(t)
        return gmm_x0(x / a[:, None], sg / a)  # x0 of x/alpha at VE level sigma/alpha
    return indis.Denoiser(fn, schedule, prediction="x0")


def test_end_to_end_gmm_beats_uniform():
    den = gmm_denoiser(indis.EDM())
    gen = torch.Generator().manual_seed(0)
    warm = 80.0 * torch.randn(256, 4, generator=gen, dtype=DT)
    t = gits(den, warm, steps=4)
    grid = heuristic("edm", 60, indis.EDM())
    assert t.shape == (5,) and t.dtype == DT
    assert float(t[0]) == 80.0 and float(t[-1]) == 0.002 and bool((t[1:] < t[:-1]).all())
    assert all(bool(torch.isclose(grid, v).any()) for v in t)  # a sub-grid of the teacher grid
    xT = 80.0 * torch.randn(512, 4, generator=gen, dtype=DT)
    ref = indis.sample(den, xT, grid, solver="ipndm")
    err = lambda times: float((indis.sample(den, xT, times, solver="ipndm") - ref).norm(dim=1).mean())  # noqa: E731
    e_gits, e_unif = err(t), err(heuristic("uniform", 4, indis.EDM()))
    assert e_gits < e_unif


@pytest.mark.parametrize("schedule", [indis.VP(), indis.FlowMatching()], ids=["vp", "flow"])
def test_teacher_coordinates_any_schedule(schedule):
    """An Euler teacher moves exactly along its own derivative: the one-step l2 cost C[k, k+1] vanishes."""
    den = gmm_denoiser(schedule)
    grid = heuristic("edm", 12, schedule)
    sg = float(schedule.sigma(torch.tensor(schedule.t_max, dtype=DT)))
    x = sg * torch.randn(16, 4, generator=torch.Generator().manual_seed(3), dtype=DT)
    X, d, u = gits_teacher(den, x, grid, "euler")
    assert X.shape == (13, 16, 4) and d.shape == (12, 16, 4)
    C = gits_cost_matrix(X, d, u, "l2")
    assert float(torch.diagonal(C, 1).abs().max()) < 1e-10 * float(C.abs().max())
    t = gits(den, x, steps=3, num_grid=13, teacher_solver="heun")
    assert t.shape == (4,) and float(t[0]) == schedule.t_max and float(t[-1]) == schedule.t_min
    assert bool((t[1:] < t[:-1]).all())


def test_errors():
    C = synthetic_costs()[0]
    with pytest.raises(indis.InputError, match="steps"):
        gits_dp(C, 0)
    with pytest.raises(indis.InputError, match="<= 20"):
        gits_dp(C, 21)
    with pytest.raises(indis.InputError, match="square"):
        gits_dp(C[:, :5], 2)
    X = torch.zeros(4, 2, 3, dtype=DT)
    with pytest.raises(indis.InputError, match="dev, l2, l1"):
        gits_cost_matrix(X, X, torch.arange(4.0), metric="l3")
    with pytest.raises(indis.InputError, match="grid_u"):
        gits_cost_matrix(X, X, torch.arange(3.0))
    den = gmm_denoiser(indis.EDM())
    with pytest.raises(indis.InputError, match="teacher_solver"):
        gits(den, torch.zeros(2, 4, dtype=DT), 3, num_grid=11, teacher_solver="rk45")
    with pytest.raises(indis.InputError, match="steps must be <= 10"):
        gits(den, torch.zeros(2, 4, dtype=DT), 11, num_grid=11)


def test_cache_runs_the_teacher_once_and_changes_nothing(monkeypatch):
    """The cost matrix does not depend on the step count: with a cache, schedules for several step counts equal the
    uncached ones (the same deterministic computation, so exactly) and the teacher runs once."""
    G = sys.modules["indis.discretizations.gits"]  # the package re-exports a function of the same name
    den = gmm_denoiser(indis.EDM())
    warm = 80.0 * torch.randn(64, 4, generator=torch.Generator().manual_seed(5), dtype=DT)
    plain = {n: gits(den, warm, steps=n, num_grid=21) for n in (2, 3, 5)}
    calls = []
    real = G.gits_teacher
    monkeypatch.setattr(G, "gits_teacher", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache: dict = {}
    cached = {n: gits(den, warm, steps=n, num_grid=21, cache=cache) for n in (5, 2, 3)}
    assert len(calls) == 1 and len(cache) == 1
    assert all(torch.equal(plain[n], cached[n]) for n in plain)
    gits(den, warm, steps=3, num_grid=21, metric="l2", cache=cache)  # another metric: its own entry
    assert len(calls) == 2 and len(cache) == 2


def test_methods_fixed_cache_keys_on_guidance():
    """`methods.fixed` keeps one cost matrix per warm-up set and guidance scale of the handle."""
    from indis.methods import fixed
    from indis.models import ModelHandle

    h = ModelHandle(gmm_denoiser(indis.EDM()), (4,))
    cache: dict = {}
    a = fixed(h, "gits", 3, warmup=32, seed=1, cache=cache)
    b = fixed(h, "gits", 3, warmup=32, seed=1)
    assert torch.equal(a.times, b.times) and len(cache) == 1
    fixed(h, "gits", 4, warmup=32, seed=1, cache=cache)
    assert len(cache) == 1 and len(next(iter(cache.values()))) == 1
    h.denoiser.guidance_scale = 2.0  # an unconditional denoiser ignores it, but the key must not
    fixed(h, "gits", 3, warmup=32, seed=1, cache=cache)
    assert len(cache) == 2
    h.denoiser.guidance_scale = torch.tensor([3.0])  # a tensor scale is keyed by its value, not lumped with None
    fixed(h, "gits", 3, warmup=32, seed=1, cache=cache)
    assert len(cache) == 3
