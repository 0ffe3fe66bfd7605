"""Tests for indis.metrics.features: Fréchet distance, KID, and the digits feature extractor (FD-digits)."""
import numpy as np
import pytest
import scipy.linalg
import torch

from indis.errors import InputError
from indis.metrics.features import DigitsFeatureExtractor, fd_digits, frechet_distance, kid, real_digits_features




def test_fd_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    d, n = 4, 200_000
    m1, m2 = np.array([0.0, 1.0, -1.0, 2.0]), np.array([0.5, 1.0, 0.0, 1.0])
    s1, s2 = np.array([1.0, 4.0, 0.25, 2.0]), np.array([2.0, 1.0, 0.25, 0.5])  # variances
    a = m1 + np.sqrt(s1) * rng.standard_normal((n, d))
    b = m2 + np.sqrt(s2) * rng.standard_normal((n, d))
    closed = ((m1 - m2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert frechet_distance(a, b) == pytest.approx(closed, abs=0.05)


def test_fd_matches_sqrtm_formula_on_sample_moments():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((500, 6)) @ rng.standard_normal((6, 6))
    b = rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6)) + 0.3
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-8, abs=1e-8)
    assert frechet_distance(torch.from_numpy(a).float(), b) == pytest.approx(ref, rel=1e-4)


def test_fd_of_identical_sets_is_zero_and_rank_deficient_is_fine():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 128))  # N < D: singular covariance
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(x, x + 1.0) == pytest.approx(128.0, rel=1e-6)


def test_fd_bad_input():
    with pytest.raises(InputError, match="feats_a"):
        frechet_distance(np.zeros(5), np.zeros((5, 2)))
    with pytest.raises(InputError, match="dimension"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 2)))
    with pytest.raises(InputError, match="NaN"):
        frechet_distance(np.full((5, 2), np.nan), np.zeros((5, 2)))


def _mmd2_unbiased_loops(x, y, degree=3, coef0=1.0):
    d, m = x.shape[1], x.shape[0]
    k = lambda u, v: (float(u @ v) / d + coef0) ** degree  # noqa: E731
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return sxx + syy - 2 * sxy


def test_kid_equals_unbiased_mmd_on_full_sets():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((30, 5)), rng.standard_normal((30, 5)) + 0.5
    mean, std = kid(x, y, subsets=3, subset_size=30)
    assert mean == pytest.approx(_mmd2_unbiased_loops(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)  # every subset is the full set, only permuted


def test_kid_near_zero_for_same_distribution_and_positive_for_shift():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((2000, 16)), rng.standard_normal((2000, 16))
    same_mean, same_std = kid(a, b, subsets=20, subset_size=500)
    shift_mean, shift_std = kid(a, b + 0.5, subsets=20, subset_size=500)
    assert abs(same_mean) < 3 * same_std + 1e-3
    assert shift_mean > 10 * max(abs(same_mean), same_std)


def test_digits_feature_extractor_and_fd_digits():
    from indis.zoo.digits import load_digits_tensor

    ext = DigitsFeatureExtractor()
    x, y = load_digits_tensor("heldout")
    f = ext.features(x)
    assert f.shape == (x.shape[0], ext.num_features) and f.dtype == torch.float32
    assert torch.equal(ext.features(x.reshape(-1, 64)), f)
    assert float((ext.predict(x) == y).float().mean()) > 0.95
    floor = fd_digits(x)  # held-out real digits vs all real digits
    noise = fd_digits(torch.rand(x.shape[0], 1, 8, 8) * 2 - 1)
    assert floor < 10.0 and noise > 20 * floor
    assert real_digits_features("all").shape == (1797, ext.num_features)
    with pytest.raises(InputError, match="images"):
        ext.features(torch.zeros(3, 3, 8, 8))


def test_torchmetrics_fid_with_digits_features():
    fid_mod = pytest.importorskip("torchmetrics.image.fid")
    from indis.zoo.digits import load_digits_tensor

    xh, _ = load_digits_tensor("heldout")
    xt, _ = load_digits_tensor("train")
    m = fid_mod.FrechetInceptionDistance(feature=DigitsFeatureExtractor(), normalize=True)
    m.update(xt, real=True)
    m.update(xh, real=False)
    ours = frechet_distance(real_digits_features("heldout"), real_digits_features("train"))
    assert float(m.compute()) == pytest.approx(ours, rel=1e-3)


def test_digits_perceptual_loss_matches_lpips_formula_by_hand():
    from indis.losses import get_loss
    from indis.zoo import load_classifier

    loss = get_loss("digits-perceptual")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    y = (x + 0.3 * torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64)).clamp(-1, 1)
    body = load_classifier().body.double()
    acts = {}
    for i, m in enumerate(body):
        if isinstance(m, torch.nn.SiLU):
            m.register_forward_hook(lambda mod, inp, out, i=i: acts.setdefault(i, []).append(out))
    body(x), body(y)
    ref = torch.zeros(5, dtype=torch.float64)
    for fx, fy in acts.values():  # LPIPS eq. 1, unit weights: channel-normalise, squared distance, spatial mean
        nx = fx / fx.norm(dim=1, keepdim=True)
        ny = fy / fy.norm(dim=1, keepdim=True)
        dd = (nx - ny).pow(2).sum(1)
        ref += dd.flatten(1).mean(1) if dd.dim() > 1 else dd
    assert len(acts) == 4
    got = loss(x, y)
    # float64 on both sides; only the 1e-10 guard in the normaliser differs
    torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-12)
    assert (got > 0).all() and float(loss(x, x).abs().max()) < 1e-12
    torch.testing.assert_close(loss(y, x), got, rtol=1e-10, atol=0)  # symmetric
    torch.testing.assert_close(loss(x[2:3], y[2:3]), got[2:3], rtol=1e-10, atol=0)  # per sample, not per batch
    xf = x.float().requires_grad_(True)
    loss(xf, y.float()).sum().backward()
    assert torch.isfinite(xf.grad).all() and xf.grad.abs().sum() > 0
    with pytest.raises(InputError, match=r"\[B,1,8,8\]"):
        loss(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))
