"""Heuristic schedules against published / independently computed numbers, diffusers, and basic invariants."""
import math

import numpy as np
import pytest
import torch

import indis
from indis.discretizations import heuristics as H
from indis.solvers import check_times

# notes §1c table: sigma_min 0.002, sigma_max 80, 4-decimal values
TABLE = {
    3: {"edm": [80, 9.7232, 0.47, 0.002], "logsnr": [80, 2.3392, 0.0684, 0.002],
        "time_uniform": [80, 6.9502, 1.2867, 0.002], "time_quadratic": [80, 2.3043, 0.3843, 0.002]},
    4: {"edm": [80, 17.5278, 2.5152, 0.1698, 0.002], "logsnr": [80, 5.6569, 0.4, 0.0283, 0.002],
        "time_uniform": [80, 11.7343, 2.8237, 0.8565, 0.002], "time_quadratic": [80, 4.1238, 0.9263, 0.2238, 0.002]},
    5: {"edm": [80, 24.4083, 5.8389, 0.9654, 0.0851, 0.002], "logsnr": [80, 9.609, 1.1542, 0.1386, 0.0167, 0.002],
        "time_uniform": [80, 16.5062, 4.7463, 1.7541, 0.6502, 0.002],
        "time_quadratic": [80, 6.2923, 1.56, 0.556, 0.1503, 0.002]},
    6: {"edm": [80, 30.1833, 9.7232, 2.5152, 0.47, 0.0515, 0.002],
        "logsnr": [80, 13.6798, 2.3392, 0.4, 0.0684, 0.0117, 0.002],
        "time_uniform": [80, 20.9655, 6.9502, 2.8237, 1.2867, 0.5272, 0.002],
        "time_quadratic": [80, 8.6725, 2.3043, 0.9263, 0.3843, 0.1098, 0.002]},
    7: {"edm": [80, 34.9922, 13.6986, 4.6371, 1.2866, 0.2675, 0.0352, 0.002],
        "logsnr": [80, 17.6057, 3.8745, 0.8527, 0.1876, 0.0413, 0.0091, 0.002],
        "time_uniform": [80, 25.0153, 9.3123, 4.0679, 2.0043, 1.0249, 0.4447, 0.002],
        "time_quadratic": [80, 11.1468, 3.1622, 1.3371, 0.6452, 0.2863, 0.0849, 0.002]},
}

SCHEDULES = {
    "edm": indis.EDM(), "vp": indis.VP(), "vp-discrete": indis.VP(discrete=True), "flow": indis.FlowMatching(),
    "sd": indis.VP(discrete=True, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
}
GENERIC = ("uniform", "logsnr", "edm", "quadratic", "time_uniform", "time_quadratic", "shift")


@pytest.mark.parametrize("steps", sorted(TABLE))
@pytest.mark.parametrize("name", ["edm", "logsnr", "time_uniform", "time_quadratic"])
def test_published_table(name, steps):
    got = H.heuristic(name, steps, indis.EDM()).numpy()
    assert got.dtype == np.float64 and got.shape == (steps + 1,)
    np.testing.assert_allclose(got, TABLE[steps][name], rtol=0, atol=5.01e-5)


def test_fitted_betas():
    beta_d, beta_min = H.fitted_vp_betas(80.0, 0.002)
    assert abs(beta_d - 17.537957) < 5e-7 and abs(beta_min - (-0.0047690)) < 5e-8
    sig = lambda tau: math.sqrt(math.exp(0.5 * beta_d * tau**2 + beta_min * tau) - 1)  # noqa: E731
    assert sig(1.0) == pytest.approx(80.0, rel=1e-12) and sig(1e-3) == pytest.approx(0.002, rel=1e-9)


def test_closed_forms_edm():
    N, r = 6, np.arange(7) / 6
    np.testing.assert_allclose(H.edm(N).numpy(), (80 ** (1 / 7) + r * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7, rtol=1e-12)
    np.testing.assert_allclose(H.logsnr(N).numpy(), 80 * (0.002 / 80) ** r, rtol=1e-12)
    np.testing.assert_allclose(H.uniform(N).numpy(), 80 + r * (0.002 - 80), rtol=1e-10)
    np.testing.assert_allclose(H.quadratic(N).numpy(), (80**0.5 + r * (0.002**0.5 - 80**0.5)) ** 2, rtol=1e-12)
    np.testing.assert_allclose(H.edm(N, rho=3.0, t_max=10.0, t_min=0.1).numpy(),
                               (10 ** (1 / 3) + r * (0.1 ** (1 / 3) - 10 ** (1 / 3))) ** 3, rtol=1e-12)


def test_schedule_conventions():
    # the fitted virtual VP of a continuous VP(0.1, 20) schedule is that schedule: time_uniform == uniform
    vp = indis.VP()
    np.testing.assert_allclose(H.time_uniform(5, vp).numpy(), H.uniform(5, vp).numpy(), rtol=1e-9)
    # logsnr is uniform in lambda on every schedule; edm is Karras spacing of the VE sigma on every schedule
    for s in SCHEDULES.values():
        lam = s.lambda_(H.logsnr(5, s)).numpy()
        if math.isfinite(lam[-1]):
            np.testing.assert_allclose(np.diff(lam), np.full(5, (lam[-1] - lam[0]) / 5), rtol=1e-6)
        sig = s.to_edm_sigma(H.edm(5, s)).numpy() ** (1 / 7)
        np.testing.assert_allclose(np.diff(sig), np.full(5, (sig[-1] - sig[0]) / 5), rtol=1e-6, atol=1e-9)


# notes §3 examples (before zeroing the last value)
AYS_EXAMPLES = [
    ("sd15", 4, [14.6146, 3.2266, 1.3944, 0.5094, 0.0292]),
    ("sd15", 5, [14.6146, 3.8637, 1.8842, 0.9643, 0.3977, 0.0292]),
    ("sd15", 6, [14.6146, 4.5892, 2.3917, 1.3944, 0.7431, 0.2883, 0.0292]),
    ("sdxl", 5, [14.6146, 3.7682, 1.3405, 0.5551, 0.2332, 0.0292]),
    ("svd", 5, [700, 15.886, 4.248, 0.981, 0.173, 0.002]),
]


@pytest.mark.parametrize("model,steps,expected", AYS_EXAMPLES)
def test_ays_examples(model, steps, expected):
    np.testing.assert_allclose(H.ays(steps, indis.EDM(), model=model).numpy(), expected, rtol=0, atol=5.01e-5)
    np.testing.assert_allclose(H.heuristic("ays", steps, indis.EDM(), model=model).numpy(), expected, atol=5.01e-5)


def test_ays_ten_steps_and_final_conventions():
    for m, sig in H.AYS_SIGMAS.items():
        np.testing.assert_allclose(H.ays_sigmas(10, m).numpy(), sig, rtol=1e-12)
    z = H.ays_sigmas(5, "sd15", final="zero").numpy()
    assert z[-1] == 0 and np.allclose(z[:-1], H.ays_sigmas(5, "sd15").numpy()[:-1])
    a = H.ays_sigmas(5, "sd15", final="append_zero").numpy()
    assert a.shape == (6,) and a[-1] == 0 and np.allclose(a[:-1], H.ays_sigmas(4, "sd15").numpy())
    t = H.ays(5, indis.EDM(), model="sd15", final="zero")
    check_times(t, indis.EDM())
    assert float(t[-1]) == 0.0


def test_ays_on_stable_diffusion_gives_published_timesteps():
    sd = SCHEDULES["sd"]
    idx = H.ays(10, sd, model="sd15").numpy()
    assert np.round(idx).tolist() == [999, 850, 736, 645, 545, 455, 343, 233, 124, 24, 0]
    assert np.round(H.ays(10, sd, model="sdxl").numpy()).tolist() == [999, 845, 730, 587, 443, 310, 193, 116, 53, 13, 0]


def test_ays_range_error():
    with pytest.raises(indis.InputError, match="do not fit"):
        H.ays(5, indis.VP(), model="svd")  # sigma 700 is beyond the continuous VP's noise range


def test_rds_mu_formula():
    assert H.rds_mu(256) == pytest.approx(0.5) and H.rds_mu(4096) == pytest.approx(1.15)
    assert H.rds_mu(1024) == pytest.approx(0.5 + (1.15 - 0.5) * (1024 - 256) / (4096 - 256))


def test_shift_formula_and_endpoints():
    fm = indis.FlowMatching(1.0, 0.0)
    base = np.linspace(1, 0, 9)
    np.testing.assert_allclose(H.flow_shift(8, fm, shift=3.0).numpy(), 3 * base / (1 + 2 * base), rtol=1e-12)
    mu = 0.8
    with np.errstate(divide="ignore"):
        ref = math.exp(mu) / (math.exp(mu) + (1 / base - 1))
    np.testing.assert_allclose(H.rds(8, fm, mu=mu).numpy(), ref, rtol=1e-12)
    # shift s is the same as the exponential time shift with mu = log s; shift 1 is uniform
    np.testing.assert_allclose(H.flow_shift(8, fm, shift=2.5).numpy(), H.rds(8, fm, mu=math.log(2.5)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(H.flow_shift(6, shift=1.0).numpy(), H.uniform(6, indis.FlowMatching()).numpy(), rtol=1e-12)


def test_shift_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    N = 7
    fm = indis.FlowMatching(1.0, 0.0)
    s = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    s.set_timesteps(sigmas=np.linspace(1.0, 1 / N, N))
    np.testing.assert_allclose(H.flow_shift(N, fm, shift=3.0).numpy(), s.sigmas.double().numpy(), atol=2e-7)
    for L in (256, 1024, 4096):  # FLUX: dynamic shifting with mu from the image token count
        s = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
        s.set_timesteps(sigmas=np.linspace(1.0, 1 / N, N), mu=H.rds_mu(L))
        np.testing.assert_allclose(H.rds(N, fm, image_seq_len=L).numpy(), s.sigmas.double().numpy(), atol=2e-7)


OVERRIDES = {"edm": (60.0, 0.01), "vp": (0.9, 0.002), "vp-discrete": (900.0, 2.0), "flow": (0.9, 0.005), "sd": (900.0, 2.0)}


@pytest.mark.parametrize("sname", sorted(SCHEDULES))
@pytest.mark.parametrize("name", GENERIC + ("rds",))
def test_decreasing_with_exact_endpoints(name, sname):
    s = SCHEDULES[sname]
    kw = {"mu": 0.9} if name == "rds" else {}
    for steps in (1, 2, 5, 12):
        t = H.heuristic(name, steps, s, **kw)
        assert t.dtype == torch.float64 and t.shape == (steps + 1,)
        assert bool((t[1:] < t[:-1]).all())
        assert float(t[0]) == s.t_max and float(t[-1]) == s.t_min
        check_times(t, s)
    hi, lo = OVERRIDES[sname]
    t = H.heuristic(name, 4, s, t_max=hi, t_min=lo, **kw)
    assert float(t[0]) == hi and float(t[-1]) == lo and bool((t[1:] < t[:-1]).all())


@pytest.mark.parametrize("sname", ["edm", "vp-discrete", "flow", "sd"])
@pytest.mark.parametrize("model", sorted(H.AYS_SIGMAS))
def test_ays_decreasing_all_schedules(model, sname):
    s = SCHEDULES[sname]
    if sname in ("vp-discrete", "sd") and model == "svd":
        pytest.skip("SVD's sigma 700 exceeds the discrete VP noise range")
    sig = H.ays_sigmas(7, model)
    t = H.ays(7, s, model=model)
    assert bool((t[1:] < t[:-1]).all())
    check_times(t, s)
    if sname != "vp-discrete":
        np.testing.assert_allclose(s.to_edm_sigma(t).numpy(), sig.numpy(), rtol=1e-4)


def test_errors():
    with pytest.raises(indis.InputError, match="uniform, logsnr, edm"):
        H.heuristic("nope", 5)
    for bad in (0, -1, 2.5):
        with pytest.raises(indis.InputError, match="steps"):
            H.heuristic("edm", bad)
    with pytest.raises(indis.InputError, match="sd15, sdxl, svd"):
        H.ays(5, model="sd3")
    with pytest.raises(indis.InputError, match="final"):
        H.ays_sigmas(5, final="drop")
    with pytest.raises(indis.InputError, match="image_seq_len"):
        H.rds(5)
    with pytest.raises(indis.InputError, match="t_min"):
        H.uniform(5, indis.EDM(), t_max=1.0, t_min=2.0)
    with pytest.raises(indis.InputError, match="log-SNR"):
        H.logsnr(5, indis.FlowMatching(1.0, 0.0))
    with pytest.raises(indis.InputError, match="not monotone"):
        H.time_uniform(5, indis.EDM(), t_max=72.0, t_min=8.0)  # the fitted VP needs a wide noise range
    with pytest.raises(indis.InputError, match="rho"):
        H.edm(5, rho=0.0)
    with pytest.raises(indis.InputError, match="keyword"):
        H.heuristic("uniform", 5, indis.EDM(), rho=3)
    assert isinstance(indis.InputError("x"), ValueError)
