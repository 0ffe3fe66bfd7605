"""Learned discretizations on a Gaussian-mixture toy: GOD beats the best heuristic, INDIS beats GOD on held-out
priors at N=3; save/load round-trips exactly; mismatched loads fail clearly; the oracle and LD3 train."""
import os
import sys

import pytest
import torch

import indis
from indis.discretizations import (FixedSchedule, GlobalSchedule, InstanceOracle, InstanceSchedule, heuristic,
                                   load_discretization, logits_to_times, times_to_logits)
from indis.losses import mse
from indis.priors import CondSpec, prior_noise
from indis.teacher import generate_teacher
from indis.training import TrainConfig, evaluate_loss, train_discretizer

sys.path.insert(0, os.path.dirname(__file__))
from fake_models import ring_mixture  # noqa: E402

DT = torch.float64


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    sched = indis.FlowMatching()
    den = indis.Denoiser(ring_mixture().x0_fn(sched), sched, "x0")
    path = tmp_path_factory.mktemp("teacher")
    ts = generate_teacher(den, path, [2], 1500, times=heuristic("uniform", 60, sched), solver="ipndm", shard_size=500,
                          batch_size=1500, dtype=DT, progress=False, cond=CondSpec("class", num_classes=2))
    return sched, den, ts


TRAIN = list(range(0, 1000))
HELD = torch.arange(1000, 1500)


def test_parameterization_roundtrip_and_monotone():
    sched = indis.EDM()
    t = heuristic("edm", 6, sched)
    for space in ("time", "lambda"):
        lg = times_to_logits(t, sched, space)
        back = logits_to_times(lg, sched, 80.0, 0.002, space)
        assert torch.allclose(back, t, rtol=1e-10)
    lg = torch.randn(5, 6, dtype=DT) * 3
    tt = logits_to_times(lg, sched, 80.0, 0.002, "lambda")
    assert torch.all(tt[:, 1:] < tt[:, :-1]) and torch.allclose(tt[:, 0], torch.tensor(80.0, dtype=DT))
    assert torch.allclose(tt[:, -1], torch.tensor(0.002, dtype=DT))
    free = logits_to_times(torch.zeros(7, dtype=DT), sched, 80.0, 0.002, "time", free_last=True)
    assert free[-1] > 0.002 and free.shape == (7,)


@pytest.mark.parametrize("space", ["time", "lambda"])
def test_collapsed_softmax_still_gives_a_strictly_decreasing_float32_grid(space):
    """A logit far below the others makes its softmax weight underflow; the MIN_GAP floor keeps every gap positive
    after the float32 cast the solvers see (without it two adjacent times coincide)."""
    from indis.discretizations.param import MIN_GAP

    sched = indis.EDM()
    for bad in range(4):
        lg = torch.zeros(4, dtype=torch.float32)
        lg[bad] = -200.0
        t = logits_to_times(lg, sched, 80.0, 0.002, space).float()
        assert torch.all(t[1:] < t[:-1]), t
    # the floor's size: the smallest fraction of the range any gap can take (time space: plain fractions)
    t = logits_to_times(torch.tensor([0.0, -200.0, 0.0], dtype=DT), sched, 80.0, 0.002, "time")
    assert float(t[1] - t[2]) == pytest.approx(MIN_GAP * (80.0 - 0.002), rel=1e-6)


def test_god_beats_best_heuristic_and_indis_beats_god(toy, tmp_path):
    sched, den, ts = toy
    N, solver = 3, "euler"
    heur = {name: evaluate_loss(FixedSchedule(N, sched, solver, times=heuristic(name, N, sched), data_shape=[2]), den, ts, HELD, mse, dtype=DT)
            for name in ("uniform", "logsnr", "edm", "quadratic")}
    best_heur = min(heur.values())
    cfg = dict(batch_size=200, train_indices=TRAIN, val_indices=list(range(900, 1000)), val_every=50)
    god = GlobalSchedule(N, sched, solver, data_shape=[2], init_times=heuristic("uniform", N, sched), shift_bound=0.5, scale_bound=0.2)
    train_discretizer(god, den, ts, TrainConfig(iterations=250, lr=2e-2, **cfg), dtype=DT, progress=False)
    god_err = evaluate_loss(god, den, ts, HELD, mse, dtype=DT)
    ind = InstanceSchedule(N, sched, solver, data_shape=[2], shift_bound=0.5, scale_bound=0.2,
                           net=dict(hidden=64, depth=2, num_classes=2, fourier_features=16, fourier_scale=2.0)).double()
    ind.warm_start(god)
    assert torch.allclose(ind(torch.zeros(2, 2, dtype=DT), torch.tensor([0, 1])).times, god(torch.zeros(2, 2, dtype=DT)).times)
    train_discretizer(ind, den, ts, TrainConfig(iterations=500, lr=3e-3, **cfg), dtype=DT, progress=False, out_dir=tmp_path / "run")
    ind_err = evaluate_loss(ind, den, ts, HELD, mse, dtype=DT)
    print(f"held-out MSE: best heuristic {best_heur:.5f} {heur}, GOD {god_err:.5f}, INDIS {ind_err:.5f}")
    assert god_err < 0.8 * best_heur
    assert ind_err < 0.8 * god_err  # a real margin on held-out priors
    times = ind(ts.x_T(HELD[:64], DT), ts.cond(HELD[:64])).times
    assert float(times[:, 1:-1].detach().std(0).mean()) > 1e-3  # schedules really differ per instance
    # the best checkpoint was saved and loads back identically
    loaded = load_discretization(tmp_path / "run" / "best", steps=N, data_shape=(2,), schedule=sched).double()
    x, c = ts.x_T(HELD[:32], DT), ts.cond(HELD[:32])
    a, b = ind(x, c), loaded(x, c)
    assert torch.equal(a.times, b.times) and torch.equal(a.shift, b.shift) and torch.equal(a.scale, b.scale)


def test_oracle_fits_each_prior(toy):
    sched, den, ts = toy
    idx = list(range(64))
    g = GlobalSchedule(3, sched, "euler", data_shape=[2], init_times=heuristic("uniform", 3, sched))
    start = evaluate_loss(g, den, ts, torch.tensor(idx), mse, dtype=DT)
    orc = InstanceOracle.from_global(g, ts.num_samples)
    train_discretizer(orc, den, ts, TrainConfig(iterations=150, batch_size=64, lr=5e-2, train_indices=idx, val_indices=idx, val_every=150), dtype=DT, progress=False)
    assert evaluate_loss(orc, den, ts, torch.tensor(idx), mse, dtype=DT) < 0.5 * start


def test_save_load_roundtrip_and_mismatch_errors(tmp_path):
    sched = indis.EDM()
    for d in [FixedSchedule(4, sched, "ipndm", times=heuristic("edm", 4, sched), data_shape=[1, 8, 8]),
              GlobalSchedule(4, sched, "ipndm", data_shape=[1, 8, 8], space="lambda"),
              InstanceSchedule(4, sched, "ipndm", data_shape=[1, 8, 8], net=dict(hidden=32, num_classes=10))]:
        with torch.no_grad():
            for p in d.parameters():
                p.add_(0.1 * torch.randn_like(p))
        path = d.save(tmp_path / d.method)
        back = load_discretization(path)
        x = torch.randn(3, 1, 8, 8) * 80
        c = torch.tensor([1, 2, 3])
        a, b = d(x, c), back(x, c)
        assert torch.equal(a.times, b.times)
        assert (a.shift is None and b.shift is None) or torch.equal(a.shift, b.shift)
        assert back.config()["kwargs"] == d.config()["kwargs"]
        with pytest.raises(ValueError, match="N=4 steps but N=5"):
            load_discretization(path, steps=5)
        with pytest.raises(ValueError, match=r"shape \[1, 8, 8\].*\[3, 32, 32\]"):
            load_discretization(path, data_shape=(3, 32, 32))
        with pytest.raises(ValueError, match="edm schedule but the model uses flow"):
            load_discretization(path, schedule=indis.FlowMatching())
    with pytest.raises(ValueError, match="no saved discretization"):
        load_discretization(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_discretization(tmp_path / "bad")


def test_untrained_phi_equals_warm_start_heuristic():
    sched = indis.EDM()
    t = heuristic("logsnr", 5, sched)
    d = InstanceSchedule(5, sched, data_shape=[3, 16, 16], init_times=t, space="lambda")
    s = d(torch.randn(4, 3, 16, 16) * 80)
    assert torch.allclose(s.times.double(), t.expand(4, 6), rtol=1e-5)
    assert torch.all(s.shift == 0) and torch.all(s.scale == 1)


def test_prior_net_shapes_and_conditions():
    from indis.discretizations.prior_net import PriorNet, pool_condition

    assert PriorNet((4, 3, 8, 8), 9)(torch.randn(2, 4, 3, 8, 8)).shape == (2, 9)  # video (C, F, H, W)
    net = PriorNet((4, 8, 8), 9, cond_dim=48)
    cond = {"t5": torch.randn(2, 7, 16), "clip": torch.randn(2, 32)}
    assert pool_condition(cond).shape == (2, 48)
    assert net(torch.randn(2, 4, 8, 8), cond).shape == (2, 9)
    with pytest.raises(ValueError, match="condition"):
        net(torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="x_T of shape"):
        net(torch.randn(2, 4, 4, 4), cond)


def test_teacher_regenerates_noise_and_resumes(toy, tmp_path):
    sched, den, ts = toy
    x1 = ts.x_T([5, 7], DT)
    x2 = prior_noise([5, 7], ts.config.seed, [2], ts.config.prior_std, DT)
    assert torch.equal(x1, x2)
    # an interrupted run (one shard of three) resumes to the same result as the complete run
    kw = dict(times=heuristic("uniform", 60, sched), solver="ipndm", shard_size=500, batch_size=500, dtype=DT, progress=False,
              cond=CondSpec("class", num_classes=2))
    part = generate_teacher(den, tmp_path / "t", [2], 1500, stop_after_shards=1, **kw)
    assert part.missing_shards() == [1, 2]
    full = generate_teacher(den, tmp_path / "t", [2], 1500, **kw)
    assert torch.equal(full.x0(), ts.x0())
    with pytest.raises(ValueError, match="would drop some"):
        generate_teacher(den, tmp_path / "t", [2], 1400, **kw)
    with pytest.raises(ValueError, match="different settings.*seed"):
        generate_teacher(den, tmp_path / "t", [2], 1500, **{**kw, "seed": 1})
    # a larger number of samples extends a set; its partial last shard is remade with the new size
    small = generate_teacher(den, tmp_path / "e", [2], 1200, **kw)
    kept = {k: small.shard_path(k).stat().st_mtime_ns for k in (0, 1)}
    grown = generate_teacher(den, tmp_path / "e", [2], 1500, **kw)
    assert grown.num_samples == 1500 and {k: grown.shard_path(k).stat().st_mtime_ns for k in (0, 1)} == kept
    assert torch.equal(grown.x0(), ts.x0())  # same process, same seeds and model: the same pairs


def test_ld3_learnable_noise_stays_in_ball_keeps_only_improving_moves(toy, tmp_path):
    from safetensors.torch import load_file

    from indis.training.loop import NoiseBall

    sched, den, ts = toy
    g = GlobalSchedule(3, sched, "euler", data_shape=[2], init_times=heuristic("uniform", 3, sched), space="lambda",
                       learn_scale=False)
    r = 0.05
    cfg = TrainConfig(iterations=20, batch_size=100, lr=5e-3, optimizer="rmsprop", train_indices=list(range(200)),
                      val_indices=list(range(200, 300)), noise_radius=r, noise_lr=1.0, ckpt_every=10)
    train_discretizer(g, den, ts, cfg, dtype=DT, progress=False, out_dir=tmp_path / "ld3")
    off = load_file(str(tmp_path / "ld3" / "train_state.safetensors"))["extra.noise_offsets"]
    norms = off.flatten(1).norm(dim=1)
    assert off.shape == (ts.num_samples, 2)
    assert float(norms[:200].max()) <= r * (1 + 1e-9)  # projected onto the ball (1e-9: float64 rounding of the scaling)
    assert int((norms[:200] > 0).sum()) > 0  # some training priors moved
    assert float(norms[200:].abs().max()) == 0.0  # validation noise never moves

    # the keep-if-better rule, with a loss we control: a move is kept exactly where it lowers that sample's loss
    ball = NoiseBall(4, (2,), radius=10.0, lr=1.0, std=1.0, dtype=DT, device="cpu")
    idx, xT = torch.arange(4), torch.zeros(4, 2, dtype=DT)
    x, o = ball.perturb(idx, xT)
    (x * torch.tensor([1.0, 0.0], dtype=DT)).sum().backward()  # gradient (1, 0): SGD moves every offset to (-1, 0)
    target = torch.tensor([[-1.0, 0.0], [5.0, 0.0], [-1.0, 0.0], [5.0, 0.0]], dtype=DT)
    ball.update(idx, xT, o, loss_before=((x - target) ** 2).sum(1), resolve=lambda xn: ((xn - target) ** 2).sum(1))
    assert ball.offsets.tolist() == [[-1.0, 0.0], [0.0, 0.0], [-1.0, 0.0], [0.0, 0.0]]


@pytest.mark.parametrize("switch", ["use_instance", "use_cond", "learn_shift", "learn_scale", "times_only"])
def test_each_ablation_switch_changes_exactly_what_it_names(switch):
    sched = indis.FlowMatching()
    base = dict(data_shape=[2], shift_bound=0.5, scale_bound=0.2)
    net = dict(hidden=16, depth=2, num_classes=2)
    flags = {"learn_shift": {"learn_shift": False}, "learn_scale": {"learn_scale": False},
             "times_only": {"learn_shift": False, "learn_scale": False}}.get(switch, {})
    if switch in ("use_instance", "use_cond"):
        net[switch] = False
    d = InstanceSchedule(3, sched, "euler", net=net, **base, **flags).double()
    with torch.no_grad():  # a non-trivial phi: random head weights
        d.phi.head.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(4, 2, generator=g, dtype=DT), torch.randn(4, 2, generator=g, dtype=DT)
    c1, c2 = torch.tensor([0, 0, 1, 1]), torch.tensor([1, 1, 0, 0])
    s = d(x1, c1)
    assert (s.shift is None) == (switch in ("learn_shift", "times_only"))
    assert (s.scale is None) == (switch in ("learn_scale", "times_only"))
    depends_on_x = not torch.equal(d(x2, c1).times, s.times)
    depends_on_c = not torch.equal(d(x1, c2).times, s.times)
    assert depends_on_x == (switch != "use_instance") and depends_on_c == (switch != "use_cond")


def test_oracle_beats_god_on_every_prior(toy):
    sched, den, ts = toy
    idx = list(range(16))
    god = GlobalSchedule(3, sched, "euler", data_shape=[2], init_times=heuristic("uniform", 3, sched), shift_bound=0.5,
                         scale_bound=0.2)
    train_discretizer(god, den, ts, TrainConfig(iterations=150, batch_size=200, lr=5e-2, train_indices=TRAIN,
                                                val_indices=list(range(900, 1000)), val_every=50), dtype=DT, progress=False)
    orc = InstanceOracle.from_global(god, 16)
    train_discretizer(orc, den, ts, TrainConfig(iterations=100, batch_size=16, lr=5e-2, train_indices=idx, val_indices=idx,
                                                val_every=100, grad_clip=0.0), dtype=DT, progress=False)
    i, xT, c, x0 = ts.batch(torch.tensor(idx), DT)
    with torch.no_grad():
        e_god = mse(god.sample(den, xT, c), x0)
        e_orc = mse(orc.sample(den, xT, c, i), x0)
    # each prior's parameters start at GOD's and descend on that prior's own loss
    assert bool((e_orc < e_god).all()), (e_orc / e_god).tolist()
