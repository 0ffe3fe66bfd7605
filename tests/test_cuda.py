"""CUDA checks: every solver, its gradients, training, save/load, a zoo U-Net and the CLI give on a GPU what they give
on the CPU. Skipped where torch sees no CUDA device (CI has none); run on a GPU machine with `pytest tests/test_cuda.py`.
"""
import math
import os
import subprocess
import sys

import pytest
import torch

import indis
from indis.discretizations import GlobalSchedule, InstanceSchedule, heuristic, load_discretization
from indis.losses import mse
from indis.priors import CondSpec
from indis.solvers import SOLVERS
from indis.teacher import generate_teacher
from indis.training import TrainConfig, evaluate_loss, train_discretizer

sys.path.insert(0, os.path.dirname(__file__))
from fake_models import cli_env, ring_mixture  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DT = torch.float64
CUDA = torch.device("cuda")


def _den(sched=None) -> indis.Denoiser:
    sched = sched or indis.EDM()
    return indis.Denoiser(ring_mixture().x0_fn(sched), sched, "x0")


def _problem(B: int = 16, N: int = 4, seed: int = 0):
    """Per-sample jittered EDM times, shifts and scales on the CPU in float64."""
    g = torch.Generator().manual_seed(seed)
    sched = indis.EDM()
    base = heuristic("edm", N, sched).to(DT)
    jitter = 1 + 0.1 * torch.rand(B, N + 1, generator=g, dtype=DT)
    jitter[:, 0] = 1.0
    times = base[None] * jitter
    times[:, -1] = base[-1]
    shift = 0.02 * torch.randn(B, N, generator=g, dtype=DT) * times[:, :-1]
    scale = 1 + 0.05 * torch.randn(B, N, generator=g, dtype=DT)
    x_T = 80.0 * torch.randn(B, 2, generator=g, dtype=DT)
    return sched, x_T, times, shift, scale


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("afs", [False, True])
def test_each_solver_on_cuda_matches_cpu_and_so_do_its_time_gradients(solver, afs):
    sched, x_T, times, shift, scale = _problem()
    den = _den(sched)

    def run(device, dtype):
        t = times.to(device, dtype).requires_grad_(True)
        out = indis.sample(den, x_T.to(device, dtype), t, solver, shift=shift.to(device, dtype),
                           scale=scale.to(device, dtype), afs=afs)
        (g,) = torch.autograd.grad(out.square().sum(), t)
        return out.detach().cpu().double(), g.cpu().double()

    ref, ref_g = run("cpu", DT)
    out, g = run(CUDA, DT)
    # float64 on both: only the order of floating-point sums differs (~1e-16 per op, a few dozen ops per step)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(g, ref_g, rtol=1e-7, atol=1e-7 * float(ref_g.abs().max()))
    out32, _ = run(CUDA, torch.float32)
    # float32 (eps 1.2e-7) from x_T of size 80 down to data of size ~0.6: the error of the first steps is scaled by
    # sigma ~ 80, so ~1e-5 absolute is float32 round-off; a wrong step or device mix-up moves samples by > 1e-2
    assert float((out32 - ref).abs().max()) < 1e-3


def test_god_and_indis_train_on_cuda_and_reload_on_cpu(tmp_path):
    sched = indis.FlowMatching()
    den = indis.Denoiser(ring_mixture().x0_fn(sched), sched, "x0")
    ts = generate_teacher(den, tmp_path / "t", [2], 1200, times=heuristic("uniform", 60, sched), solver="ipndm",
                          batch_size=1200, dtype=DT, progress=False, cond=CondSpec("class", num_classes=2), device=CUDA)
    held = torch.arange(1000, 1200)
    cfg = dict(batch_size=200, train_indices=list(range(900)), val_indices=list(range(900, 1000)), val_every=50)
    god = GlobalSchedule(3, sched, "euler", data_shape=[2], init_times=heuristic("uniform", 3, sched), shift_bound=0.5,
                         scale_bound=0.2)
    before = evaluate_loss(god, den, ts, held, mse, dtype=DT, device=CUDA)
    train_discretizer(god, den, ts, TrainConfig(iterations=150, lr=2e-2, **cfg), dtype=DT, progress=False, device=CUDA)
    god_err = evaluate_loss(god, den, ts, held, mse, dtype=DT, device=CUDA)
    ind = InstanceSchedule(3, sched, "euler", data_shape=[2], shift_bound=0.5, scale_bound=0.2,
                           net=dict(hidden=64, depth=2, num_classes=2)).double()
    ind.warm_start(god)
    train_discretizer(ind, den, ts, TrainConfig(iterations=300, lr=3e-3, **cfg), dtype=DT, progress=False, device=CUDA,
                      out_dir=tmp_path / "run")
    ind_err = evaluate_loss(ind, den, ts, held, mse, dtype=DT, device=CUDA)
    cpu_err = evaluate_loss(ind.cpu(), den, ts, held, mse, dtype=DT)
    print(f"CUDA held-out MSE: uniform {before:.5f}, GOD {god_err:.5f}, INDIS {ind_err:.5f}")
    assert god_err < 0.8 * before and ind_err < god_err
    # the same trained phi evaluated on the CPU: float64 on both sides, only the summation order differs
    assert cpu_err == pytest.approx(ind_err, rel=1e-9)
    loaded = load_discretization(tmp_path / "run" / "best", steps=3, data_shape=(2,), schedule=sched).double()
    x, c = ts.x_T(held[:32], DT), ts.cond(held[:32])
    a, b = ind(x, c), loaded(x, c)
    torch.testing.assert_close(b.times, a.times, rtol=0, atol=0)


def test_zoo_unet_on_cuda_matches_cpu():
    h = indis.load_model("zoo:digits-cond")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, *h.data_shape, generator=g) * 2.0
    t = torch.tensor([0.05, 0.3, 1.0, 2.0, 5.0, 10.0, 40.0, 80.0])
    c = torch.arange(8) % 10
    with torch.no_grad():
        ref = h.denoiser(x, t, c)[0]
    h.denoiser.to(CUDA)
    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            out = h.denoiser(x.to(CUDA), t.to(CUDA), c.to(CUDA))[0].cpu()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev
    # float32 in both, TF32 off: kernels sum in other orders (~1e-6 relative per layer over a dozen layers)
    err = float((out - ref).abs().max() / ref.abs().max())
    print(f"zoo:digits-cond x0 CUDA vs CPU, max relative difference {err:.2e}")
    assert err < 1e-4


def test_cli_sample_on_cuda(tmp_path):
    out = tmp_path / "s"
    r = subprocess.run([sys.executable, "-m", "indis", "sample", "--model", "zoo:digits-cond", "--method", "edm",
                        "--steps", "5", "--num", "16", "--device", "cuda", "--out", str(out)],
                       env=cli_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert any(out.iterdir())


def test_diagnostic_on_cuda_gives_what_it_gives_on_cpu(tmp_path):
    """`diagnose(..., device="cuda")`: every fit runs on the GPU (the model is moved there) and the diagnosis equals
    the CPU's."""
    from indis.bench import scaling as sc
    from indis.diagnose import diagnose
    from indis.experiment import Experiment, ExperimentConfig

    c = {"model": "random", "d": 8, "K": 2, "condition": "class", "guidance": 4.0, "nfe": 3, "seed": 0}
    h = sc.handle_for(c)
    cfg = ExperimentConfig(model=h.spec, sizes={"train": 200, "val": 8, "test": 8}, teacher_steps=1,
                           teacher_solver="exact", dtype="float64")
    t = Experiment(tmp_path, h, cfg, dtype=torch.float64, progress=False, log=lambda m: None).teacher("train")
    kw = dict(priors=16, cluster_priors=200, iterations=20, curve_iterations=20, replicates=50)
    cpu = diagnose(h, t, 3, **kw)
    gpu = diagnose(h, t, 3, device=CUDA, **kw)
    # The solver runs in float64 on both sides, but the schedules' parameters are float32: where a float64 gradient
    # (summed in another order, ~1e-16 apart) lands near a float32 rounding boundary, an Adam step differs by one ulp
    # (6e-8 relative), and over the fits' few hundred steps the losses drift apart by ~1e-6 relative (4e-6 measured
    # on an H200 for the oracle; CPUs with other thread counts differ as much from each other). A device mix-up or a
    # skipped fit changes these by more than 1e-2.
    assert gpu.extra["global_mse"] == pytest.approx(cpu.extra["global_mse"], rel=1e-4)
    assert gpu.oracle_over_global == pytest.approx(cpu.oracle_over_global, rel=1e-4)
    assert gpu.predicted_ratio == pytest.approx(cpu.predicted_ratio, abs=5e-3)
    assert gpu.recommendation == cpu.recommendation


def test_every_row_of_the_digits_protocol_runs_on_cuda(tmp_path):
    """Each row of `indis bench digits` (tiny sizes, CFG 4, NFE 3) trains and samples on the GPU: the priors of GITS'
    warm-up, AMED's probe call and the denoised-input calibration follow the model onto its device."""
    from indis.bench.digits import add_arguments, load_handle, settings_from_args
    from indis.bench.digits_run import DigitsRun

    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--quick", "--model", "zoo:digits-cond", "--guidance", "4", "--nfe", "3", "--cap", "10",
                         "--probe", "5", "--num-train", "128", "--num-val", "64", "--num-test", "64",
                         "--oracle-priors", "16"])
    s = settings_from_args(args) | {"quick": True}
    r = DigitsRun(s, 0, tmp_path, load_handle(s["model"], s["guidance"]), device="cuda", progress=False)
    rows = {m: (r.fixed_row if m in ("best-heuristic", "dmn", "gits") else r.learned_row)(m, 3, "main")
            for m in ("best-heuristic", "dmn", "gits", "ld3", "god", "amed", "epd")}
    rows["indis"] = r.indis_row(3, "main", rows)
    plus = r.indis_row(3, "main", rows, "plus-denoised")
    oracle = r.oracle(3, rows)
    for row in [*rows.values(), plus]:
        assert math.isfinite(row["test"]["fd"]) and math.isfinite(row["val"]["mse"])
    assert oracle and r.exp.load(rows["indis"]["spec"]).phi is not None


def test_a_scaling_cell_on_cuda_gives_what_it_gives_on_cpu(tmp_path):
    """`indis bench scaling --device cuda`: one tiny cell (exact mixture, CFG 4) trained on the GPU and on the CPU."""
    from indis.bench import scaling as sc

    s = {**sc.QUICK, "train": 96, "val": 32, "test": 48, "oracle_priors": 12, "diagnose_priors": 10,
         "diagnose_iterations": 40, "cap": 40, "patience": 2, "val_every": 10, "probe": 10, "batch": 32}
    c = {"model": "random", "d": 8, "K": 2, "condition": "class", "guidance": 4.0, "nfe": 3, "seed": 0}
    cpu = sc.run_cell(c, s, tmp_path / "cpu", log=lambda m: None)
    gpu = sc.run_cell(c, s, tmp_path / "gpu", log=lambda m: None, device="cuda")
    # float32 schedule parameters trained in float64 arithmetic (see the diagnostic's test): ~1e-6 relative apart
    assert gpu["god_mse"] == pytest.approx(cpu["god_mse"], rel=1e-4)
    assert gpu["ratio"] == pytest.approx(cpu["ratio"], abs=5e-3)
    assert gpu["oracle_over_god"] == pytest.approx(cpu["oracle_over_god"], abs=5e-3)
