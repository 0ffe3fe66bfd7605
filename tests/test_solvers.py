"""Solver core checked against closed forms, scipy solve_ivp, brute-force per-sample runs and gradcheck."""
import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import indis
from indis.denoiser import bcast

DT = torch.float64
M, S = 0.3, 0.5  # Gaussian data N(M, S^2 I)


def gaussian_fn(sched, pred):
    """Exact model output for Gaussian data, written out independently of indis.Denoiser.convert."""

    def fn(x, t, c):
        a, sg = bcast(sched.alpha(t), x), bcast(sched.sigma(t), x)
        x0 = M + a * S**2 / (a**2 * S**2 + sg**2) * (x - a * M)
        eps = (x - a * x0) / sg
        if pred == "x0":
            return x0
        if pred == "eps":
            return eps
        if pred == "v":
            return a * eps - sg * x0
        return bcast(sched.alpha_dot(t), x) * x0 + bcast(sched.sigma_dot(t), x) * eps

    return indis.Denoiser(fn, sched, pred)


def gaussian_endpoint(xT, sched, T, t0):
    """PF-ODE flow for Gaussian data keeps (x - a m)/sqrt(a^2 s^2 + sigma^2) constant."""
    T, t0 = torch.tensor(T, dtype=DT), torch.tensor(t0, dtype=DT)
    aT, sT, a0, s0 = sched.alpha(T), sched.sigma(T), sched.alpha(t0), sched.sigma(t0)
    z = (xT - aT * M) / torch.sqrt(aT**2 * S**2 + sT**2)
    return a0 * M + z * torch.sqrt(a0**2 * S**2 + s0**2)


SCHEDULES = {"edm": indis.EDM(), "vp": indis.VP(), "flow": indis.FlowMatching(), "vp-discrete": indis.VP(discrete=True)}
# High-order solvers reach 1e-4 in a few hundred steps. First- and second-order ones would need tens of thousands,
# so for them the test runs n and 2n steps and checks the Richardson extrapolation (2^p x_2n - x_n) / (2^p - 1),
# whose error is O(n^-(p+1)): it can only be small if the solver converges to the closed form with order p.
STEPS = {"ipndm": 300, "ipndm_v": 300, "dpmpp_3m": 300, "unipc": 300}
RICHARDSON = {"euler": (1, 200), "ddim": (1, 200), "heun": (2, 200), "dpmpp_2m": (2, 200)}  # solver: (order p, n)
CASES = [(s, p) for s in ("edm", "vp", "flow") for p in ("eps", "x0", "v", "velocity")] + [("vp-discrete", "eps"), ("vp-discrete", "v")]


def edm_grid(sched, n, rho=7.0):
    """EDM rho=7 spacing of the VE noise level, mapped to the schedule's own time."""
    T = sched.t_max
    t0 = 1.0 if isinstance(sched, indis.VP) and sched.discrete else sched.t_min
    sT, s0 = (sched.to_edm_sigma(torch.tensor(v, dtype=DT)) for v in (T, t0))
    r = torch.linspace(0, 1, n + 1, dtype=DT)
    t = sched.from_edm_sigma((sT ** (1 / rho) + r * (s0 ** (1 / rho) - sT ** (1 / rho))) ** rho)
    t[0], t[-1] = T, t0
    return t, T, t0


@pytest.mark.parametrize("sname,pred", CASES)
def test_gaussian_endpoint_all_solvers(sname, pred):
    sched = SCHEDULES[sname]
    g = torch.Generator().manual_seed(0)
    den = gaussian_fn(sched, pred)

    def run(solver, n, xT):
        times, T, t0 = edm_grid(sched, n)
        return indis.sample(den, xT, times, solver=solver), gaussian_endpoint(xT, sched, T, t0)

    def rel(a, b):
        return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))

    for solver, n in STEPS.items():
        out, ref = run(solver, n, torch.randn(3, 2, generator=g, dtype=DT) * 1.5)
        assert rel(out, ref) < 1e-4, (solver, rel(out, ref))
    for solver, (p, n) in RICHARDSON.items():
        xT = torch.randn(3, 2, generator=g, dtype=DT) * 1.5
        (a, ref), (b, _) = run(solver, n, xT), run(solver, 2 * n, xT)
        extrapolated = (2**p * b - a) / (2**p - 1)
        assert rel(extrapolated, ref) < 1e-4, (solver, rel(extrapolated, ref))
        assert rel(b, ref) < 0.6 * rel(a, ref), (solver, rel(a, ref), rel(b, ref))  # errors shrink: ~2^-p per doubling


# --- convergence order against solve_ivp on a 2-D Gaussian mixture (EDM) -----------------------------------
MU = torch.tensor([[-1.0, 0.5], [0.8, -0.3], [0.2, 1.2]], dtype=DT)
VAR = torch.tensor([0.05, 0.1, 0.02], dtype=DT)
W = torch.tensor([0.3, 0.5, 0.2], dtype=DT)


def mixture_x0(x, sigma):
    """Posterior mean of an isotropic 2-D Gaussian mixture, x [B,2], sigma [B]."""
    s2 = sigma[:, None] ** 2
    v = VAR[None] + s2  # [B,K]
    d2 = ((x[:, None, :] - MU[None]) ** 2).sum(-1)
    logw = torch.log(W)[None] - d2 / (2 * v) - torch.log(v)
    r = torch.softmax(logw, -1)
    mk = MU[None] + (VAR[None] / v)[..., None] * (x[:, None, :] - MU[None])
    return (r[..., None] * mk).sum(1)


MIX = indis.Denoiser(lambda x, t, c: mixture_x0(x, t), indis.EDM(), "x0")
X_START = torch.tensor([[0.7, -1.1], [-0.4, 2.0]], dtype=DT) * 2.0
U_HI, U_START, U_END = 3.0, 2.0, 0.6


def _rhs(u, y):
    x = torch.tensor(y.reshape(-1, 2), dtype=DT)
    return ((x - mixture_x0(x, torch.full((x.shape[0],), u, dtype=DT))) / u).numpy().ravel()


@pytest.fixture(scope="module")
def reference():
    sol = solve_ivp(_rhs, (U_HI, U_END), X_START.numpy().ravel(), method="DOP853", rtol=1e-13, atol=1e-13, dense_output=True)
    assert sol.success
    return lambda u: torch.tensor(sol.sol(u).reshape(-1, 2), dtype=DT)


def _history_edm(ref, us):
    out = []
    for u in us:
        x = ref(u)
        ut = torch.full((x.shape[0],), u, dtype=DT)
        out.append((ut, (x - mixture_x0(x, ut)) / u))
    return out


def _history_lambda(ref, lams):
    out = []
    for lam in lams:
        u = math.exp(-lam)
        x = ref(u)
        out.append((torch.full((x.shape[0],), lam, dtype=DT), mixture_x0(x, torch.full((x.shape[0],), u, dtype=DT))))
    return out


def _error(ref, solver, n, **kw):
    if solver.startswith("dpmpp"):
        lam0, lam1 = -math.log(U_START), -math.log(U_END)
        h = (lam1 - lam0) / n
        times = torch.exp(-torch.linspace(lam0, lam1, n + 1, dtype=DT))
        order = 3 if solver == "dpmpp_3m" else 0
        if order:
            kw["history"] = _history_lambda(ref, [lam0 - k * h for k in range(order - 1, 0, -1)])
            kw["lower_order_final"] = False
    else:
        h = (U_START - U_END) / n
        times = torch.linspace(U_START, U_END, n + 1, dtype=DT)
        if solver.startswith("ipndm"):
            kw["history"] = _history_edm(ref, [U_START + k * h for k in range(3, 0, -1)])
    out = indis.sample(MIX, ref(U_START), times, solver=solver, **kw)
    return float((out - ref(U_END)).abs().max())


@pytest.mark.parametrize("solver,order", [("euler", 1), ("heun", 2), ("ipndm", 4), ("ipndm_v", 4), ("dpmpp_2m", 2), ("dpmpp_3m", 3)])
def test_convergence_order(reference, solver, order):
    ns = [12, 24, 48]
    errs = [_error(reference, solver, n) for n in ns]
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(len(ns) - 1)]
    assert abs(rates[-1] - order) < 0.35, (errs, rates)


def test_dpmpp_3m_legacy_weight_is_only_second_order(reference):
    errs = [_error(reference, "dpmpp_3m", n, legacy_3m=True) for n in (24, 48)]
    assert abs(math.log2(errs[0] / errs[1]) - 2) < 0.35


def test_ipndm_v_weights_exact_on_cubics():
    from indis.solvers import ab_weights

    nodes = [torch.tensor(v, dtype=DT) for v in (0.9, 1.7, 2.1, 3.4)]  # non-uniform, newest first
    u_next = torch.tensor(0.3, dtype=DT)
    w = ab_weights(nodes, u_next)
    h = u_next - nodes[0]
    for p in range(4):  # integrates polynomials of degree <= 3 exactly
        exact = (u_next ** (p + 1) - nodes[0] ** (p + 1)) / (p + 1)
        approx = h * sum(wj * nj**p for wj, nj in zip(w, nodes))
        assert abs(float(exact - approx)) < 1e-12
    uni = ab_weights([torch.tensor(-float(k), dtype=DT) for k in range(4)], torch.tensor(1.0, dtype=DT))
    assert np.allclose([float(v) for v in uni], [55 / 24, -59 / 24, 37 / 24, -9 / 24])


# --- per-sample times, gradients, checkpointing ------------------------------------------------------------
def _per_sample_times(B, N, hi=80.0, lo=0.002):
    base = torch.linspace(0, 1, N + 1, dtype=DT)
    rho = torch.linspace(3, 8, B, dtype=DT)[:, None]
    return (hi ** (1 / rho) + base * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho


@pytest.mark.parametrize("solver", indis.SOLVERS)
def test_per_sample_times_equal_individual(solver):
    B, N = 3, 5
    t = _per_sample_times(B, N)
    xT = torch.randn(B, 2, generator=torch.Generator().manual_seed(1), dtype=DT) * 80
    shift = torch.rand(B, N, dtype=DT) * 0.01
    scale = 1 + 0.01 * torch.rand(B, N, dtype=DT)
    batched = indis.sample(MIX, xT, t, solver=solver, shift=shift, scale=scale)
    for b in range(B):
        single = indis.sample(MIX, xT[b : b + 1], t[b], solver=solver, shift=shift[b], scale=scale[b])
        assert torch.allclose(batched[b], single[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("solver", indis.SOLVERS)
def test_gradcheck_times_shift_scale(solver):
    B, N = 2, 3
    xT = torch.randn(B, 2, generator=torch.Generator().manual_seed(2), dtype=DT) * 5
    t = _per_sample_times(B, N, 5.0, 0.05).clone().requires_grad_()
    shift = (0.01 * torch.randn(B, N, dtype=DT)).requires_grad_()
    scale = (1 + 0.01 * torch.randn(B, N, dtype=DT)).requires_grad_()

    def f(t, shift, scale):
        return indis.sample(MIX, xT, t, solver=solver, shift=shift, scale=scale)

    assert torch.autograd.gradcheck(f, (t, shift, scale), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradients_reach_model_parameters_and_xT():
    lin = torch.nn.Linear(2, 2).double()
    den = indis.Denoiser(lambda x, t, c: lin(x) / (1 + bcast(t, x)), indis.EDM(), "x0")
    xT = torch.randn(4, 2, dtype=DT, requires_grad=True)
    out = indis.sample(den, xT, torch.tensor([2.0, 1.0, 0.1], dtype=DT), solver="ipndm")
    out.sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    assert xT.grad is not None and xT.grad.abs().sum() > 0


@pytest.mark.parametrize("solver", ["ipndm", "heun", "unipc", "dpmpp_3m"])
def test_checkpoint_same_values_and_grads(solver):
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()
    den = indis.Denoiser(lambda x, t, c: net(torch.cat([x, bcast(torch.log(t), x[:, :1]).expand(-1, 1)], 1)), indis.EDM(), "eps")
    xT = torch.randn(3, 2, dtype=DT, generator=torch.Generator().manual_seed(3)) * 10
    results = []
    for ck in (False, True):
        net.zero_grad()
        t = _per_sample_times(3, 4).clone().requires_grad_()
        sc = torch.ones(3, 4, dtype=DT, requires_grad=True)
        out = indis.sample(den, xT, t, solver=solver, scale=sc, checkpoint=ck)
        out.pow(2).sum().backward()
        results.append((out.detach(), t.grad.clone(), sc.grad.clone(), net[0].weight.grad.clone()))
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def test_afs_saves_one_call_and_uses_analytic_first_step():
    calls = []

    def fn(x, t, c):
        calls.append(1)
        return mixture_x0(x, t)

    den = indis.Denoiser(fn, indis.EDM(), "x0")
    xT = torch.randn(2, 2, dtype=DT) * 80
    t = torch.tensor([80.0, 10.0, 1.0, 0.002], dtype=DT)
    indis.sample(den, xT, t, solver="ipndm", afs=True)
    assert len(calls) == 2 == indis.solver_nfe("ipndm", 3, afs=True)
    calls.clear()
    indis.sample(den, xT, t, solver="heun")
    assert len(calls) == indis.solver_nfe("heun", 3) == 6
    # first Euler step with AFS equals an Euler step with D = x - t * x/sqrt(1+t^2)
    out = indis.sample(den, xT, t[:2], solver="euler", afs=True)
    d0 = xT / math.sqrt(1 + 80.0**2)
    assert torch.allclose(out, xT + (10.0 - 80.0) * d0)


def test_classifier_free_guidance_one_batched_call():
    seen = []

    def fn(x, t, c):
        seen.append(x.shape[0])
        return x * 0 + c[:, None].to(x.dtype)

    den = indis.Denoiser(fn, indis.EDM(), "x0", guidance_scale=3.0, uncond=torch.tensor([0]))
    x0, _ = den(torch.zeros(2, 1, dtype=DT), torch.ones(2, dtype=DT), torch.tensor([1, 2]))
    assert seen == [4]
    assert torch.allclose(x0[:, 0], torch.tensor([3.0, 6.0], dtype=DT))  # u + 3 (c - u)


# --- bad input ---------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    xT = torch.randn(2, 2, dtype=DT)
    good = torch.tensor([2.0, 1.0, 0.5], dtype=DT)
    with pytest.raises(ValueError, match="strictly decreasing"):
        indis.sample(MIX, xT, torch.tensor([1.0, 2.0, 0.5], dtype=DT))
    with pytest.raises(ValueError, match="shape"):
        indis.sample(MIX, xT, torch.ones(2, 2, 3, dtype=DT))
    with pytest.raises(ValueError, match="N >= 1"):
        indis.sample(MIX, xT, torch.tensor([1.0], dtype=DT))
    with pytest.raises(ValueError, match="batch size"):
        indis.sample(MIX, xT, good.expand(3, 3))
    with pytest.raises(ValueError, match="unknown solver 'rk4'"):
        indis.sample(MIX, xT, good, solver="rk4")
    with pytest.raises(ValueError, match="unknown prediction 'noise'"):
        indis.Denoiser(lambda x, t, c: x, indis.EDM(), "noise")
    with pytest.raises(ValueError, match="shift must have shape"):
        indis.sample(MIX, xT, good, shift=torch.zeros(3, dtype=DT))
    with pytest.raises(ValueError, match="scale must have shape"):
        indis.sample(MIX, xT, good, scale=torch.ones(5, 2, dtype=DT))
    with pytest.raises(ValueError, match="<= 1"):
        indis.sample(indis.Denoiser(lambda x, t, c: x, indis.FlowMatching(), "velocity"), xT, torch.tensor([1.5, 0.5], dtype=DT))
    with pytest.raises(ValueError, match="indis.Denoiser"):
        indis.sample(lambda x, t, c: x, xT, good)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        indis.solver_nfe("euler", 0)


def test_nan_from_model_raises():
    den = indis.Denoiser(lambda x, t, c: x * float("nan"), indis.EDM(), "x0")
    with pytest.raises(RuntimeError, match="NaN or Inf"):
        indis.sample(den, torch.randn(2, 2, dtype=DT), torch.tensor([2.0, 1.0], dtype=DT))
    den = indis.Denoiser(lambda x, t, c: x[:, :1], indis.EDM(), "x0")
    with pytest.raises(RuntimeError, match="shape"):
        indis.sample(den, torch.randn(2, 2, dtype=DT), torch.tensor([2.0, 1.0], dtype=DT))


def test_float32_and_trajectory():
    xT = torch.randn(2, 2) * 80
    t = torch.tensor([80.0, 5.0, 0.5, 0.002])
    den = indis.Denoiser(lambda x, t, c: mixture_x0(x.double(), t.double()).float(), indis.EDM(), "x0")
    out, traj = indis.sample(den, xT, t, solver="ipndm", return_trajectory=True)
    assert out.dtype == torch.float32
    assert len(traj.states) == 4 and len(traj.denoised) == 3
    assert torch.equal(traj.states[0], xT) and torch.equal(traj.states[-1], out)


def test_heun_decides_the_last_correction_per_row():
    """A batch mixing rows that end at t = 0 (no final correction, EDM) with rows that end above 0 (corrected) gives
    each row what it gets alone; it used to raise "produced NaN or Inf"."""
    x = torch.tensor([[0.7, -1.1], [-0.4, 2.0], [1.5, 0.3]], dtype=DT) * 80
    t = torch.tensor([[80.0, 5.0, 0.5, 0.0], [80.0, 5.0, 0.5, 0.002], [80.0, 3.0, 0.2, 0.0]], dtype=DT)
    out = indis.sample(MIX, x, t, solver="heun")
    for i in range(3):
        alone = indis.sample(MIX, x[i:i + 1], t[i:i + 1], solver="heun")
        assert torch.allclose(out[i], alone[0], rtol=1e-12, atol=1e-12)  # float64, the same operations per row


def test_exact_ode_matches_the_gaussian_closed_form():
    """For data N(mu, s^2 I) under EDM the flow is x(sigma) = mu + (x_T - mu) sqrt((s^2 + sigma^2) / (s^2 + sigma_T^2)):
    the adaptive solver (rtol 1e-7) lands within 1e-6 relative of it, on EDM (log-u path) and flow matching to t = 0
    (u path), where the closed form is x(t) = mu' + ... written out below."""
    from indis.exact_ode import exact_ode

    mu, s = torch.tensor([0.7, -1.2, 0.3], dtype=torch.float64), 0.4
    den = indis.Denoiser(lambda x, t, c=None: mu + s * s / (s * s + t[:, None] ** 2) * (x - mu), indis.EDM(), "x0")
    x_T = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80
    ref = mu + (x_T - mu) * math.sqrt((s * s + 0.002**2) / (s * s + 80.0**2))
    out = exact_ode(den, x_T, 80.0, 0.002)
    assert float((out - ref).norm() / ref.norm()) < 1e-6
    # flow matching x_t = (1 - t) x0 + t eps: E[x0 | x_t] for x0 ~ N(mu, s^2 I) is linear in x_t; the ODE ends at t = 0
    fm = indis.FlowMatching()

    def x0_fm(x, t, c=None):
        a, b = (1 - t)[:, None], t[:, None]
        return mu + a * s * s / (a * a * s * s + b * b) * (x - a * mu)

    den2 = indis.Denoiser(x0_fm, fm, "x0")
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t0 = 0.999
    x_start = (1 - t0) * mu + torch.sqrt(torch.tensor((1 - t0) ** 2 * s * s + t0 * t0, dtype=torch.float64)) * z
    ref2 = mu + s * z  # the flow keeps the standardised coordinate z = (x - a mu) / sqrt(a^2 s^2 + t^2)
    out2 = exact_ode(den2, x_start, t0, 0.0)
    assert float((out2 - ref2).norm() / ref2.norm()) < 1e-6


def test_denoiser_device_is_where_the_weights_are():
    """`Denoiser.device`: the model's parameters' device (what priors for probe calls are put on), cpu without any."""
    import torch.nn as nn

    net = nn.Linear(2, 2).double()
    den = indis.Denoiser(lambda x, t, c=None: net(x), indis.EDM(), "x0")
    assert den.device == torch.device("cpu")  # a plain function: no weights registered, follows its inputs
    mod = indis.Denoiser(net, indis.EDM(), "x0")
    assert mod.device == next(net.parameters()).device
    mod.to("meta")
    assert mod.device.type == "meta"
