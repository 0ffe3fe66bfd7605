"""AMED and EPD against independent references: with fixed intermediate times they reduce to the explicit midpoint
method / iPNDM on the refined grid / Euler written out by hand; their parameters get exact gradients (gradcheck in
float64); the NFE they report equals the model calls a wrapped model counts; they train, save and reload."""
import math

import pytest
import torch

import indis
from indis.cli import main
from indis.discretizations import AMED, EPD, amed_steps, load_discretization
from indis.errors import InputError
from indis.teacher import generate_teacher

DT = torch.float64
MU = torch.tensor([[-1.0, 0.5], [0.8, -0.3], [0.2, 1.2]], dtype=DT)
VAR = torch.tensor([0.05, 0.1, 0.02], dtype=DT)
W = torch.tensor([0.3, 0.5, 0.2], dtype=DT)


def mixture_x0(x, sigma, cond=None):
    """Posterior mean of an isotropic 2-D Gaussian mixture under EDM (x [B, 2], sigma [B]), written out here."""
    v = VAR[None] + sigma.to(DT)[:, None] ** 2
    d2 = ((x[:, None, :].to(DT) - MU[None]) ** 2).sum(-1)
    r = torch.softmax(torch.log(W)[None] - d2 / (2 * v) - torch.log(v), -1)
    return (r[..., None] * (MU[None] + (VAR[None] / v)[..., None] * (x[:, None, :].to(DT) - MU[None]))).sum(1).to(x.dtype)


class Counted:
    def __init__(self):
        self.calls = 0

    def __call__(self, x, t, cond=None):
        self.calls += 1
        return mixture_x0(x, t, cond)


def den(fn=mixture_x0):
    return indis.Denoiser(fn, indis.EDM(), "x0")


def xT(b=5, seed=0):
    return torch.randn(b, 2, generator=torch.Generator().manual_seed(seed), dtype=DT) * 80


def d_of(x, u):
    return (x - mixture_x0(x, torch.full((x.shape[0],), float(u), dtype=DT))) / u


def freeze_amed_midpoint(a: AMED) -> AMED:
    """Zero the predictor's head: r = sigmoid(0) = 1/2 (geometric midpoint), direction and time scales 1."""
    with torch.no_grad():
        a.predictor.fc.weight.zero_()
        a.predictor.fc.bias.zero_()
    return a.double()


@pytest.mark.parametrize("N", [1, 3])
def test_amed_solver_at_geometric_midpoint_is_the_explicit_midpoint_method(N):
    a = freeze_amed_midpoint(AMED(N, indis.EDM(), "amed", data_shape=(2,), feature="denoised", feature_dim=2))
    x = xT()
    t = a.times.tolist()
    ref = x.clone()
    for n in range(N):  # explicit midpoint in ODE time, midpoint taken geometrically
        um = math.sqrt(t[n] * t[n + 1])
        ym = ref + (um - t[n]) * d_of(ref, t[n])
        ref = ref + (t[n + 1] - t[n]) * d_of(ym, um)
    torch.testing.assert_close(a.sample(den(), x), ref, rtol=1e-12, atol=1e-12)  # float64, same operations


def _ipndm_by_hand(x, grid):
    ab = {1: [1.0], 2: [1.5, -0.5], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}
    hist = []
    for i in range(len(grid) - 1):
        hist.append(d_of(x, grid[i]))
        order = min(4, len(hist))
        x = x + (grid[i + 1] - grid[i]) * sum(w * d for w, d in zip(ab[order], hist[::-1]))
    return x


def test_amed_plugin_at_geometric_midpoint_is_ipndm_on_the_refined_grid():
    a = freeze_amed_midpoint(AMED(3, indis.EDM(), "ipndm", data_shape=(2,), feature="denoised", feature_dim=2))
    t = a.times.tolist()
    grid = [v for n in range(3) for v in (t[n], math.sqrt(t[n] * t[n + 1]))] + [t[-1]]
    x = xT()
    torch.testing.assert_close(a.sample(den(), x), _ipndm_by_hand(x, grid), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("solver", ["epd", "ipndm"])
def test_epd_one_direction_at_the_step_start_is_euler(solver):
    e = EPD(3, indis.EDM(), solver, data_shape=(2,), num_points=1).double()
    with torch.no_grad():
        e.r_logits.fill_(-60.0)  # r = sigmoid(-60) ~ 1e-26: the intermediate time is t_n
    x = xT()
    t = e.times.tolist()
    ref = x.clone()
    for n in range(3):
        ref = ref + (t[n + 1] - t[n]) * d_of(ref, t[n])
    # with K = 1 the simplex weight is exactly 1; u_mid differs from u_n by a factor 1 + O(1e-25)
    torch.testing.assert_close(e.sample(den(), x), ref, rtol=1e-12, atol=1e-12)


class _Sampler(torch.nn.Module):
    """Makes `sample` the forward of a module, so torch.func.functional_call can substitute parameters."""

    def __init__(self, d):
        super().__init__()
        self.d = d

    def forward(self, x):
        return self.d.sample(den(), x)


def _gradcheck(d, names, x):
    def f(*ps):
        return torch.func.functional_call(_Sampler(d), {f"d.{k}": p for k, p in zip(names, ps)}, (x,))

    start = tuple(dict(d.named_parameters())[k].detach().clone().requires_grad_() for k in names)
    return torch.autograd.gradcheck(f, start)


def test_gradients_are_exact_float64():
    x = xT(3)
    # one step: AMED's feature is read detached (as in the reference's hook), so over several steps the path through
    # later features is not part of its gradient by design; within one step the gradient is exact
    a = AMED(1, indis.EDM(), "amed", data_shape=(2,), feature="denoised", feature_dim=2, scale_time=0.2).double()
    assert _gradcheck(a, ["predictor.fc.weight", "predictor.fc.bias", "predictor.enc.2.weight"], x)
    e = EPD(2, indis.EDM(), "ipndm", data_shape=(2,), num_points=2, scale_dir=0.1, scale_time=0.1).double()
    assert _gradcheck(e, ["r_logits", "weight_logits", "dir_logits", "time_logits"], x)


@pytest.mark.parametrize("cls,solver", [(AMED, "amed"), (AMED, "ipndm"), (EPD, "epd"), (EPD, "ipndm")])
@pytest.mark.parametrize("N,afs", [(1, False), (2, True), (3, False), (3, True)])
def test_nfe_equals_counted_model_calls(cls, solver, N, afs):
    kw = dict(feature="denoised", feature_dim=2) if cls is AMED else dict(num_points=3)
    d = cls(N, indis.EDM(), solver, afs=afs, data_shape=(2,), **kw).double()
    fn = Counted()
    d.sample(den(fn), xT())
    assert fn.calls == d.nfe == 2 * N - int(afs)
    assert amed_steps(d.nfe, afs) == N


def test_unreachable_nfe_and_bad_k():
    with pytest.raises(InputError, match="AFS"):
        amed_steps(4, True)
    with pytest.raises(InputError, match="AFS"):
        amed_steps(3, False)
    with pytest.raises(InputError, match="K >= 1"):
        EPD(2, indis.EDM(), data_shape=(2,), num_points=0)


@pytest.fixture(scope="module")
def gmm_teacher(tmp_path_factory):
    ts = generate_teacher(den(), tmp_path_factory.mktemp("t"), [2], 400, times=indis.heuristic("edm", 40, indis.EDM()),
                          shard_size=400, batch_size=400, dtype=DT, progress=False)
    return ts


@pytest.mark.parametrize("cls,solver", [(AMED, "ipndm"), (EPD, "epd")])
def test_training_lowers_the_teacher_error_and_reloads_bit_identically(cls, solver, gmm_teacher, tmp_path):
    from indis.losses import mse
    from indis.training import TrainConfig, evaluate_loss, train_discretizer

    # a fine per-step teacher (M=8): its states then lie on the 40-step teacher's path, whose endpoints we compare with
    kw = dict(feature="denoised", feature_dim=2) if cls is AMED else {}
    d = cls(2, indis.EDM(), solver, afs=True, data_shape=(2,), teacher_M=8, **kw).double()
    idx = torch.arange(300, 400)  # held-out priors (the predictor can memorise a few dozen 2-D training points)
    before = evaluate_loss(d, den(), gmm_teacher, idx, mse, dtype=DT)
    cfg = TrainConfig(iterations=150, batch_size=100, lr=2e-2, train_indices=list(range(300)), val_indices=idx.tolist(), val_every=25)
    train_discretizer(d, den(), gmm_teacher, cfg, out_dir=tmp_path / "run", dtype=DT, progress=False)
    after = evaluate_loss(d, den(), gmm_teacher, idx, mse, dtype=DT)
    assert after < 0.7 * before, (before, after)  # measured: AMED-Plugin 0.071 -> 0.038, EPD-Solver 5.8 -> 0.67
    loaded = load_discretization(tmp_path / "run" / "best", steps=2, data_shape=(2,)).double()
    assert type(loaded) is cls and loaded.nfe == 3
    x = xT()
    # same code and inputs in one process: the reloaded discretization samples bit-identically
    assert torch.equal(loaded.sample(den(), x), d.sample(den(), x))


def test_cli_rejects_unreachable_amed_nfe_and_bad_k(tmp_path, capsys):
    base = ["train", "--model", "zoo:digits", "--teacher", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(base + ["--method", "amed", "--nfe", "4", "--afs"]) == 2
    assert "AFS" in capsys.readouterr().err
    assert main(base + ["--method", "epd", "--nfe", "3", "--num-points", "0"]) == 2
    assert "--num-points" in capsys.readouterr().err
    assert main(base + ["--method", "god", "--nfe", "3", "--solver", "amed"]) == 2
    assert "amed" in capsys.readouterr().err
    assert main(base + ["--method", "god", "--nfe", "3", "--base", "logsnr"]) == 2
    assert "--base" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["amed", "epd"])
def test_base_schedule_is_the_named_heuristic(method):
    """`base` picks the grid whose steps are split: the buffer equals the heuristic computed independently."""
    from indis.methods import learned_solver
    from indis.models import ModelHandle

    h = ModelHandle(den(), (2,), spec="gmm")
    for base in ("edm", "logsnr", "time_uniform"):
        d = learned_solver(h, method, 3, afs=True, base=base)
        assert torch.allclose(d.times, indis.heuristic(base, 3, indis.EDM()), rtol=0, atol=0)
    with pytest.raises(InputError, match="base schedule"):
        learned_solver(h, method, 3, base="bogus")


# -- the reference recipes (issue 27): initialisation, teacher grids, objectives, step-by-step updates -----------------
def _euler_by_hand(x, t):
    for n in range(len(t) - 1):
        x = x + (t[n + 1] - t[n]) * d_of(x, t[n])
    return x


@pytest.mark.parametrize("solver", ["epd", "ipndm"])
def test_untrained_epd_is_euler_like_and_tends_to_euler(solver):
    """The default start: distinct r per direction in [0.02, 0.1], uniform weights, unit scales. As r -> 0 the EPD
    step (both the solver and the plugin, whose Adams-Bashforth slope only moves the intermediate points) becomes
    Euler on the same grid, with an error linear in r."""
    e = EPD(3, indis.EDM(), solver, data_shape=(2,), num_points=3).double()
    p = e.step_params()
    assert torch.allclose(p["r"][0], torch.tensor([0.02, 0.06, 0.1], dtype=DT)) and torch.equal(p["r"][0], p["r"][2])
    assert torch.allclose(p["w"], torch.full_like(p["w"], 1 / 3)) and torch.equal(p["c"], torch.ones_like(p["c"]))
    assert torch.equal(p["a"], torch.ones_like(p["a"]))
    x, t = xT(), e.times.tolist()
    ref = _euler_by_hand(x.clone(), t)
    errs = []
    for factor in (1e-3, 1e-4):
        with torch.no_grad():
            e.r_logits.copy_(torch.logit(factor * torch.tensor([0.02, 0.06, 0.1], dtype=DT)).expand(3, 3))
        errs.append(float((e.sample(den(), x) - ref).detach().abs().max()))
    # r scaled by 1/10 shrinks the departure from Euler tenfold (first order in r; 0.05 slack for the O(r^2) term)
    assert errs[1] < errs[0] / 10 * 1.05 and errs[1] < 1e-3 * float(ref.abs().max()), errs


def test_epd_reference_init_is_seeded_standard_normal():
    a = EPD(2, indis.EDM(), data_shape=(2,), init="randn", seed=3)
    b = EPD(2, indis.EDM(), data_shape=(2,), init="randn", seed=3)
    c = EPD(2, indis.EDM(), data_shape=(2,), init="randn", seed=4)
    assert torch.equal(a.r_logits, b.r_logits) and not torch.equal(a.r_logits, c.r_logits)
    g = torch.Generator().manual_seed(3)  # the reference's order: r, scale_dir, scale_time, weight
    r, sd, st, w = (torch.randn(2, 2, generator=g, dtype=DT) for _ in range(4))
    assert torch.equal(a.r_logits.data, r) and torch.equal(a.weight_logits.data, w) and torch.equal(a.time_logits.data, st)
    with pytest.raises(InputError, match="init"):
        EPD(2, indis.EDM(), data_shape=(2,), init="zeros")


def _diff_sampler_time_uniform(n):
    """diff-sampler / EPD `get_schedule(n, 0.002, 80, 'time_uniform', rho=1)`, written out with numpy."""
    import numpy as np

    eps, smin, smax = 1e-3, 0.002, 80.0
    beta_d = 2 * (np.log(smin**2 + 1) / eps - np.log(smax**2 + 1)) / (eps - 1)
    beta_min = np.log(smax**2 + 1) - 0.5 * beta_d
    tau = 1 + np.arange(n) / (n - 1) * (eps - 1)
    return np.sqrt(np.exp(0.5 * beta_d * tau**2 + beta_min * tau) - 1)


def test_teacher_grids_follow_the_reference_formulas():
    from indis.discretizations.midpoint import teacher_grid

    a = AMED(2, indis.EDM(), "amed", data_shape=(2,), feature="denoised", feature_dim=2)  # Heun, M = 1, time_uniform
    grid, stride = a.teacher_grid()
    assert stride == 2 and a.teacher_solver == "heun"
    torch.testing.assert_close(grid, torch.from_numpy(_diff_sampler_time_uniform(5)), rtol=1e-9, atol=0)  # (M+1)N+1
    torch.testing.assert_close(grid[::stride], a.times.double(), rtol=1e-9, atol=0)  # the coarse grid is nested
    e = EPD(2, indis.EDM(), data_shape=(2,))  # Heun, M = 3, two rho = 7 substeps per interval (`inner_steps=3`)
    grid, stride = e.teacher_grid()
    fine = _diff_sampler_time_uniform(9)
    by_hand = []
    for hi, lo in zip(fine[:-1], fine[1:]):
        by_hand += [hi, (0.5 * hi ** (1 / 7) + 0.5 * lo ** (1 / 7)) ** 7]
    torch.testing.assert_close(grid, torch.tensor(by_hand + [fine[-1]], dtype=DT), rtol=1e-9, atol=0)
    assert stride == 8 and e.teacher_M == 3 and e.teacher_solver == "heun"
    p = AMED(2, indis.EDM(), "ipndm", data_shape=(2,), feature="denoised", feature_dim=2)  # plugin: iPNDM, M = 2, edm
    g, s = p.teacher_grid()
    torch.testing.assert_close(g, indis.heuristic("edm", 6, indis.EDM()).double(), rtol=1e-12, atol=0)
    assert s == 3 and p.teacher_solver == "ipndm"
    with pytest.raises(InputError, match="substeps"):
        teacher_grid("edm", 2, 1, indis.EDM(), 80.0, 0.002, substeps=0)


def test_epd_teacher_states_are_heun_on_the_substep_grid():
    e = EPD(2, indis.EDM(), data_shape=(2,)).double()
    grid, stride = e.teacher_grid()
    x = xT(3)
    states = e.teacher_states(den(), x, None)
    y = x.clone()
    g = grid.tolist()
    for i in range(len(g) - 1):  # Heun (EDM alg. 1, correction on every step since the last time is 0.002)
        d = d_of(y, g[i])
        ye = y + (g[i + 1] - g[i]) * d
        y = y + (g[i + 1] - g[i]) * 0.5 * (d + d_of(ye, g[i + 1]))
        if (i + 1) % stride == 0:
            torch.testing.assert_close(states[(i + 1) // stride - 1], y, rtol=1e-10, atol=1e-10)  # float64, same order


def test_endpoint_objective_gradient_reaches_every_step():
    """EPD's reference objective runs the student's own trajectory with the graph kept: the final-sample loss has an
    exact (finite-difference checked, float64) gradient in every step's parameters, and it is non-zero there."""
    from indis.losses import mse

    e = EPD(3, indis.EDM(), "epd", data_shape=(2,), num_points=2, teacher_M=1, teacher_substeps=1).double()
    x = xT(4)
    target = e.teacher_states(den(), x, None)

    class Loss(torch.nn.Module):  # the objective as a module's forward, so functional_call can substitute parameters
        def __init__(self):
            super().__init__()
            self.e = e

        def forward(self):
            return self.e._loop(den(), x, None, afs=False, checkpoint=False, targets=target, loss_fn=mse)[1].sum()

    def f(r, w):
        return torch.func.functional_call(Loss(), {"e.r_logits": r, "e.weight_logits": w}, ())

    r0 = e.r_logits.detach().clone().requires_grad_()
    w0 = e.weight_logits.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (r0, w0))
    gr, gw = torch.autograd.grad(f(r0, w0), (r0, w0))
    assert bool((gr.abs().sum(1) > 0).all()) and bool((gw.abs().sum(1) > 0).all())  # steps 0, 1 and 2 all get gradient
    assert e.objective == "endpoint"
    # the per-step variant restarts each step from the teacher state: the last step's loss no longer reaches step 0
    ps = EPD(3, indis.EDM(), "epd", data_shape=(2,), num_points=2, teacher_M=1, teacher_substeps=1,
             objective="per-step").double()
    ps._loop(den(), x, None, afs=False, checkpoint=False, targets=target)[1].sum().backward()
    assert ps.r_logits.grad is not None and bool((ps.r_logits.grad.abs().sum(1) > 0).all())


def test_amed_updates_after_every_step_as_its_reference():
    """`update` is called once per step with that step's per-sample loss, before the next step runs (so the next step
    sees updated weights); the returned loss is their sum."""
    a = AMED(3, indis.EDM(), "amed", data_shape=(2,), feature="denoised", feature_dim=2).double()
    x = xT(4)
    target = a.teacher_states(den(), x, None)
    seen, biases = [], []

    def update(step_loss):
        seen.append(step_loss.detach().clone())
        biases.append(float(a.predictor.fc.bias[0].detach()))
        with torch.no_grad():
            a.predictor.fc.bias[0] += 1.0  # a visible "optimiser step"

    total = a._loop(den(), x, None, afs=False, checkpoint=False, targets=target, update=update)[1]
    assert len(seen) == 3 and biases == [0.0, 1.0, 2.0]
    torch.testing.assert_close(total, sum(seen))
    assert a.stepwise_updates and not getattr(EPD, "stepwise_updates", False)


def test_amed_predictor_starts_as_the_reference():
    """EDM `Linear` default (kaiming-normal weights of std fan_in^-1/2, zero biases) for the encoder and the heads."""
    torch.manual_seed(0)
    p = indis.discretizations.amed.AMEDPredictor(feature_dim=256, hidden=512)
    for lin in (p.enc[0], p.enc[2], p.fc):
        assert torch.equal(lin.bias, torch.zeros_like(lin.bias))
    w = p.enc[0].weight.detach()
    assert abs(float(w.std()) * 256 ** 0.5 - 1) < 0.02  # 131k draws: the std estimate is within ~0.4% (5 sigma 2%)


def test_amed_feature_is_the_unpooled_bottleneck_channel_mean():
    from indis.discretizations.amed import _Feature

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mid = torch.nn.Identity()

        def forward(self, x, sigma, cond=None):
            self.mid(x.repeat(1, 3, 2, 2))  # a [B, 3, 16, 16] "bottleneck" of the [B, 1, 8, 8] input
            return x * 0

    net = Net()
    d = indis.Denoiser(net, indis.EDM(), "x0", bottleneck=net.mid)
    x = torch.randn(2, 1, 8, 8)
    with _Feature(d, "bottleneck") as f:
        D, _ = d(x, torch.full((2,), 1.0), None)
    assert f.get(2, D).shape == (2, 256)  # 16 x 16 positions, no pooling (the reference keeps all 8x8 = 64)
    with _Feature(d, "denoised") as f:
        D = torch.randn(2, 4, 32, 32)
        assert torch.allclose(f.get(2, D), torch.nn.functional.adaptive_avg_pool2d(D.mean(1, keepdim=True), 8).flatten(1))


def test_cli_trains_epd_with_its_reference_recipe_and_keeps_the_final_weights(tmp_path, capsys):
    """`indis train --method epd` defaults to the reference recipe: Adam lr 0.2 with cosine decay to 0.01, batch 32, no
    clipping, the final weights (not the best validation), the endpoint objective; an explicit flag overrides it."""
    import json

    assert main(["teacher", "--model", "zoo:digits", "--out", str(tmp_path / "t"), "--num", "96", "--no-progress"]) == 0
    out = tmp_path / "epd"
    assert main(["train", "--model", "zoo:digits", "--teacher", str(tmp_path / "t"), "--method", "epd", "--nfe", "3",
                 "--iterations", "6", "--val-every", "2", "--loss", "digits-features", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    hist = json.loads((out / "history.json").read_text())["history"]
    lrs = [h["lr"] for h in hist if "lr" in h]
    assert lrs[0] == pytest.approx(0.2) and lrs[-1] < lrs[0] and lrs == sorted(lrs, reverse=True)  # cosine decay
    cfg = json.loads((out / "best" / "config.json").read_text())
    assert cfg["extra"]["train"]["keep"] == "last" and cfg["extra"]["train"]["loss"] == "digits-features"
    assert cfg["kwargs"]["objective"] == "endpoint" and cfg["kwargs"]["base"] == "time_uniform"
    from safetensors.torch import load_file

    state = load_file(str(out / "train_state.safetensors"))
    saved = load_file(str(out / "best" / "model.safetensors"))
    keys = [k for k in saved if k.endswith("_logits")]
    assert keys and all(torch.equal(saved[k], state[f"model.{k}"]) for k in keys)  # the final weights, not the best


def test_target_cache_keeps_the_newest_entries_within_its_budget():
    from indis.discretizations.midpoint import TargetCache

    cache = TargetCache(max_bytes=3 * 2 * 8)  # three priors of two float64 values each
    calls = []
    for batch in ([0, 1], [2, 3], [3, 0]):
        ids = torch.tensor(batch)

        def compute(rows):  # rows: positions in the batch; the "teacher state" of prior i is (i, -i)
            calls.append(ids[rows].tolist())
            return [torch.stack([ids[rows].double(), -ids[rows].double()], 1)]

        out = cache.get(("t", ids), compute)[0]
        assert torch.equal(out[:, 0], torch.tensor(batch, dtype=DT)) and torch.equal(out[:, 1], -out[:, 0])
    assert calls == [[0, 1], [2, 3], [0]]  # 3 was cached; 0 had been evicted to make room for 2 and 3
    assert cache.used <= cache.max_bytes and list(cache.store) == [("t", 2), ("t", 3), ("t", 0)]


def test_epd_solver_and_plugin_share_one_teacher_computation():
    """The reference teacher depends only on the teacher set, grid and solver: EPD's own solver and its iPNDM plugin
    on the same base schedule compute each prior's targets once between them (and get the same targets)."""
    from indis.discretizations.midpoint import SHARED_TARGETS

    SHARED_TARGETS.store.clear()
    SHARED_TARGETS.used = 0
    a = EPD(2, indis.EDM(), "epd", data_shape=(2,)).double()
    b = EPD(2, indis.EDM(), "ipndm", data_shape=(2,)).double()
    assert torch.equal(a.teacher_grid()[0], b.teacher_grid()[0])
    c = Counted()
    x, idx = xT(4), torch.arange(4)
    key = ("/teacher-set-a", idx)
    a.train_loss(den(c), x, None, x, index=key)
    first = c.calls
    assert first > 0
    b.train_loss(den(c), x, None, x, index=key)
    own = b.steps * 2  # b's own trajectory: two model calls per step, no teacher calls
    assert c.calls - first == own
    b.train_loss(den(c), x, None, x, index=("/teacher-set-b", idx))  # another teacher set: computed afresh
    assert c.calls - first - own > own
