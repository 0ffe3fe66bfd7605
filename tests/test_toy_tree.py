"""Tests for indis.toy: exact Gaussian-mixture denoiser and the autoguidance tree mixture.

References are independent of the implementation: a brute-force quadrature of E[x0 | x_t] on a grid, the
precision-form linear-Gaussian posterior, and the VE Tweedie form D(y; s) = y + s^2 grad log p(y; s) with
explicit matrix inverses.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from indis.toy import CLASS_NAMES, GaussianMixture, tree_mixture




class FlowMatchingStandIn:
    """alpha = 1 - t, sigma = t (stand-in for indis.schedules.FlowMatching)."""

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 1 - t

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return t


def _random_mixture(seed: int = 0, k: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 1.5, size=k)
    w /= w.sum()
    mu = rng.normal(scale=1.5, size=(k, 2))
    a = rng.normal(size=(k, 2, 2)) * 0.6
    cov = a @ a.transpose(0, 2, 1) + 0.1 * np.eye(2)
    return w, mu, cov


def _as_gmm(w: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> GaussianMixture:
    return GaussianMixture(torch.tensor(w), torch.tensor(mu), torch.tensor(cov))


def _grid_posterior_mean(w, mu, cov, x, alpha, sigma, n=301) -> np.ndarray:
    """E[x0 | x] by quadrature of x0 p(x0) N(x; alpha x0, sigma^2 I) on a uniform grid covering the posterior."""
    sd = np.sqrt(np.linalg.eigvalsh(cov).max())
    lo, hi = (mu - 9 * sd).min(0), (mu + 9 * sd).max(0)
    s = sigma / alpha
    lo = np.maximum(lo, x / alpha - 12 * s)
    hi = np.minimum(hi, x / alpha + 12 * s)
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n), indexing="ij")
    pts = np.stack([g0.ravel(), g1.ravel()], axis=1)
    cinv = np.linalg.inv(cov)
    log_norm = np.log(w) - 0.5 * np.log(np.linalg.det(2 * np.pi * cov))
    log_prior = np.full(len(pts), -np.inf)
    for s0 in range(0, len(w), 16):  # explicit inverse Gaussian log-densities, a few components at a time
        d = pts[None] - mu[s0 : s0 + 16, None]
        q = np.einsum("kpi,kij,kpj->kp", d, cinv[s0 : s0 + 16], d)
        log_prior = np.logaddexp(log_prior, logsumexp(log_norm[s0 : s0 + 16, None] - 0.5 * q, axis=0))
    log_lik = -0.5 * ((x - alpha * pts) ** 2).sum(1) / sigma**2
    lw = log_prior + log_lik
    p = np.exp(lw - lw.max())
    return (p[:, None] * pts).sum(0) / p.sum()


def _tweedie_posterior_mean(w, mu, cov, x, alpha, sigma) -> np.ndarray:
    """E[x0 | x] = D_VE(x / alpha; sigma / alpha), D_VE(y; s) = y + s^2 grad_y log sum_k w_k N(y; mu_k, Sigma_k + s^2 I)."""
    y = x / alpha
    s2 = (sigma / alpha) ** 2
    c = cov + s2 * np.eye(2)
    cinv = np.linalg.inv(c)
    diff = mu[None] - y[:, None]  # [B, K, 2]
    z = np.einsum("kij,bkj->bki", cinv, diff)
    logit = np.log(w)[None] - 0.5 * (diff * z).sum(-1) - 0.5 * np.log(np.linalg.det(c))[None]
    r = np.exp(logit - logsumexp(logit, axis=1, keepdims=True))
    score = (r[..., None] * z).sum(1)
    return y + s2 * score


# ----------------------------------------------------------------------------- posterior mean: exactness
@pytest.mark.parametrize(
    "alpha,sigma",
    [(1.0, 0.002), (0.998, 0.002), (0.9, 0.05), (0.7, 0.3), (0.5, 1.0), (0.012, 0.988), (1.0, 5.0)],
)
def test_posterior_mean_matches_grid_quadrature(alpha: float, sigma: float) -> None:
    w, mu, cov = _random_mixture(seed=1)
    gmm = _as_gmm(w, mu, cov)
    rng = np.random.default_rng(7)
    comp = rng.choice(len(w), size=4, p=w)
    x0 = np.stack([rng.multivariate_normal(mu[c], cov[c]) for c in comp])
    xs = alpha * x0 + sigma * rng.normal(size=x0.shape)
    got = gmm.posterior_mean(torch.tensor(xs), alpha, sigma).numpy()
    for i, x in enumerate(xs):
        ref = _grid_posterior_mean(w, mu, cov, x, alpha, sigma)
        np.testing.assert_allclose(got[i], ref, atol=1e-9, rtol=0)


def test_posterior_mean_single_gaussian_closed_form() -> None:
    rng = np.random.default_rng(3)
    mu = np.array([0.4, -1.2])
    a = rng.normal(size=(2, 2))
    cov = a @ a.T + 0.05 * np.eye(2)
    gmm = _as_gmm(np.ones(1), mu[None], cov[None])
    x = rng.normal(size=(6, 2))
    alpha = np.array([1.0, 0.9, 0.5, 0.2, 0.998, 0.3])
    sigma = np.array([0.002, 0.1, 0.8, 3.0, 0.5, 1e-3])
    got = gmm.posterior_mean(torch.tensor(x), torch.tensor(alpha), torch.tensor(sigma)).numpy()
    prec0 = np.linalg.inv(cov)
    for i in range(len(x)):
        # posterior precision Sigma^-1 + alpha^2/sigma^2 I, mean = prec^-1 (Sigma^-1 mu + alpha/sigma^2 x)
        prec = prec0 + alpha[i] ** 2 / sigma[i] ** 2 * np.eye(2)
        ref = np.linalg.solve(prec, prec0 @ mu + alpha[i] / sigma[i] ** 2 * x[i])
        np.testing.assert_allclose(got[i], ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("t", [0.988, 0.5, 0.1, 0.02, 0.002])
def test_tree_posterior_mean_matches_tweedie(t: float) -> None:
    gmm = tree_mixture("AB")
    w, mu, cov = (a.numpy() for a in (gmm.weights, gmm.means, gmm.covs))
    g = torch.Generator().manual_seed(11)
    x0 = gmm.sample(6, generator=g)
    xt = (1 - t) * x0 + t * torch.randn(6, 2, generator=g, dtype=torch.float64)
    xt = torch.cat([xt, torch.tensor([[0.3, 0.2], [-0.7, 0.1], [1.5, -1.0]], dtype=torch.float64)])
    got = gmm.posterior_mean(xt, 1 - t, t).numpy()
    ref = _tweedie_posterior_mean(w, mu, cov, xt.numpy(), 1 - t, t)
    np.testing.assert_allclose(got, ref, atol=1e-9, rtol=0)


@pytest.mark.parametrize("t", [0.005, 0.02])
def test_tree_posterior_mean_matches_grid_quadrature(t: float) -> None:
    gmm = tree_mixture("A")
    w, mu, cov = (a.numpy() for a in (gmm.weights, gmm.means, gmm.covs))
    alpha, sigma = 1 - t, t
    xs = np.array([[0.30, 0.25], [0.62, 0.80], [0.10, 0.05]]) * alpha
    got = gmm.posterior_mean(torch.tensor(xs), alpha, sigma).numpy()
    for i, x in enumerate(xs):
        # Components farther than the quadrature box plus 0.3 (> 13 of their stds) carry no posterior mass there.
        near = np.linalg.norm(mu - x / alpha, axis=1) < 12 * sigma / alpha + 0.3
        ref = _grid_posterior_mean(w[near], mu[near], cov[near], x, alpha, sigma, n=201)
        np.testing.assert_allclose(got[i], ref, atol=1e-8, rtol=0)


def test_x0_fn_with_schedule_and_per_sample_times() -> None:
    gmm = tree_mixture("A")
    fn = gmm.x0_fn(FlowMatchingStandIn())
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0.9, 0.5, 0.2, 0.05, 0.002], dtype=torch.float64)
    np.testing.assert_allclose(fn(x, t).numpy(), gmm.posterior_mean(x, 1 - t, t).numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(fn(x, 0.3).numpy(), gmm.posterior_mean(x, 0.7, 0.3).numpy(), rtol=0, atol=1e-14)
    tg = t.clone().requires_grad_(True)
    fn(x, tg).sum().backward()
    assert torch.isfinite(tg.grad).all() and (tg.grad != 0).any()


def test_chunking_does_not_change_values_or_gradients() -> None:
    gmm = tree_mixture("A")
    g = torch.Generator().manual_seed(5)
    x = torch.randn(37, 2, generator=g, dtype=torch.float64)
    sigma = torch.rand(37, generator=g, dtype=torch.float64) * 0.5 + 0.01
    grads = []
    outs = []
    for chunk in (None, 8):
        xx = x.clone().requires_grad_(True)
        ss = sigma.clone().requires_grad_(True)
        out = gmm.posterior_mean(xx, 1 - ss, ss, chunk_size=chunk)
        (out * torch.tensor([1.0, -2.0], dtype=torch.float64)).sum().backward()
        outs.append(out.detach())
        grads.append((xx.grad, ss.grad))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-13)
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=1e-10)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=0, atol=1e-10)


def test_gradcheck_x_alpha_sigma() -> None:
    w, mu, cov = _random_mixture(seed=4, k=2)
    gmm = _as_gmm(w, mu, cov)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor([0.9, 0.6, 0.3], dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor([0.2, 0.7, 1.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: gmm.posterior_mean(a, b, c), (x, alpha, sigma))
    assert torch.autograd.gradcheck(lambda a, c: gmm.log_prob(a, 0.8, c), (x, sigma))
    # the chunked path recomputes each chunk in backward (activation checkpointing)
    assert torch.autograd.gradcheck(lambda a, b, c: gmm.posterior_mean(a, b, c, chunk_size=1), (x, alpha, sigma))


def test_far_points_small_sigma_float32_no_nan() -> None:
    gmm = tree_mixture("A")
    x = torch.tensor([[5.0, -5.0], [100.0, 100.0], [-3.0, 0.0], [0.5, 0.5]], dtype=torch.float32, requires_grad=True)
    for alpha in (1.0, 0.998):
        out = gmm.posterior_mean(x, alpha, 0.002)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()
        # Far from the data the likelihood dominates the Gaussian tails, so E[x0|x] stays near x / alpha: check exactness.
        w, mu, cov = (a.numpy() for a in (gmm.weights, gmm.means, gmm.covs))
        ref = _tweedie_posterior_mean(w, mu, cov, x.detach().double().numpy(), alpha, 0.002)
        np.testing.assert_allclose(out.detach().double().numpy(), ref, rtol=2e-6, atol=1e-6)
        out.sum().backward()
        assert torch.isfinite(x.grad).all()
        x.grad = None
        assert torch.isfinite(gmm.log_prob(x.detach(), alpha, 0.002)).all()


# ----------------------------------------------------------------------------- cond routing
def test_cond_routes_to_class_components() -> None:
    ab, a, b = tree_mixture("AB"), tree_mixture("A"), tree_mixture("B")
    g = torch.Generator().manual_seed(9)
    x = torch.randn(12, 2, generator=g, dtype=torch.float64) * 0.6
    t = torch.rand(12, generator=g, dtype=torch.float64) * 0.9 + 0.01
    ref_a = a.posterior_mean(x, 1 - t, t)
    ref_b = b.posterior_mean(x, 1 - t, t)
    ref_ab = ab.posterior_mean(x, 1 - t, t)
    torch.testing.assert_close(ab.posterior_mean(x, 1 - t, t, cond=0), ref_a, rtol=0, atol=1e-12)
    cond = torch.tensor([0, 1, -1] * 4)
    mixed = ab.posterior_mean(x, 1 - t, t, cond=cond)
    expect = torch.where((cond == 0)[:, None], ref_a, torch.where((cond == 1)[:, None], ref_b, ref_ab))
    torch.testing.assert_close(mixed, expect, rtol=0, atol=1e-12)
    torch.testing.assert_close(ab.posterior_mean(x, 1 - t, t, cond=-1), ref_ab, rtol=0, atol=0)
    torch.testing.assert_close(ab.log_prob(x, 1 - t, t, cond=1), b.log_prob(x, 1 - t, t), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="cond"):
        a.posterior_mean(x, 0.5, 0.5, cond=1)  # class A mixture has no label-1 components
    with pytest.raises(ValueError, match="cond"):
        _as_gmm(*_random_mixture()).posterior_mean(x, 0.5, 0.5, cond=0)


def test_sample_moments_and_cond() -> None:
    ab = tree_mixture("AB")
    g = torch.Generator().manual_seed(0)
    n = 200_000
    s = ab.sample(n, generator=g)
    assert s.shape == (n, 2) and s.dtype == torch.float64
    cov = ab.covariance()
    se = (cov.diagonal() / n).sqrt()
    assert ((s.mean(0) - ab.mean()).abs() < 5 * se).all()
    torch.testing.assert_close(torch.cov(s.T), cov, rtol=0, atol=0.01)
    sa = ab.sample(50_000, generator=g, cond=0)
    torch.testing.assert_close(sa.mean(0), ab.mean(cond=0), rtol=0, atol=0.01)
    torch.testing.assert_close(ab.mean(cond=0), tree_mixture("A").mean(), rtol=0, atol=1e-14)
    s1 = ab.sample(10, generator=torch.Generator().manual_seed(3))
    s2 = ab.sample(10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(s1, s2)
    assert ab.to(dtype=torch.float32).sample(4).dtype == torch.float32
    ab.to(dtype=torch.float64)


def test_log_prob_matches_scipy_and_normalises() -> None:
    w, mu, cov = _random_mixture(seed=2)
    gmm = _as_gmm(w, mu, cov)
    x = np.random.default_rng(0).normal(size=(5, 2))
    alpha, sigma = 0.8, 0.4
    ref = logsumexp(
        np.stack([np.log(w[i]) + multivariate_normal(alpha * mu[i], alpha**2 * cov[i] + sigma**2 * np.eye(2)).logpdf(x) for i in range(3)]),
        axis=0,
    )
    np.testing.assert_allclose(gmm.log_prob(torch.tensor(x), alpha, sigma).numpy(), ref, rtol=0, atol=1e-12)
    grid = np.linspace(-12, 12, 601)
    g0, g1 = np.meshgrid(grid, grid, indexing="ij")
    pts = torch.tensor(np.stack([g0.ravel(), g1.ravel()], 1))
    mass = gmm.log_prob(pts).exp().sum().item() * (grid[1] - grid[0]) ** 2
    assert abs(mass - 1) < 1e-6


def test_input_validation() -> None:
    gmm = tree_mixture("A")
    with pytest.raises(ValueError, match="x must have shape"):
        gmm.posterior_mean(torch.zeros(3, 3), 1.0, 0.1)
    with pytest.raises(ValueError, match="sigma"):
        gmm.posterior_mean(torch.zeros(3, 2), 1.0, torch.ones(4))
    with pytest.raises(ValueError, match="covs"):
        GaussianMixture(torch.ones(2), torch.zeros(2, 2), torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(-torch.ones(2), torch.zeros(2, 2), torch.eye(2).repeat(2, 1, 1))
    with pytest.raises(ValueError, match="classes"):
        tree_mixture("C")


# ----------------------------------------------------------------------------- the tree itself
def test_tree_component_counts_and_labels() -> None:
    assert CLASS_NAMES == ("A", "B")
    a, b, ab = tree_mixture("A"), tree_mixture("B"), tree_mixture("AB")
    assert a.num_components == 1016 and b.num_components == 1016 and ab.num_components == 2032
    assert set(a.labels.tolist()) == {0} and set(b.labels.tolist()) == {1}
    assert int((ab.labels == 0).sum()) == 1016
    torch.testing.assert_close(ab.means[:1016], a.means, rtol=0, atol=0)
    torch.testing.assert_close(ab.means[1016:], b.means, rtol=0, atol=0)
    assert abs(ab.weights.sum().item() - 1) < 1e-12 and abs(a.weights.sum().item() - 1) < 1e-12


def test_tree_moments_match_reference() -> None:
    ab = tree_mixture("AB")
    m, c = ab.mean(), ab.covariance()
    std = c.diagonal().sqrt()
    np.testing.assert_allclose(m.numpy(), [-0.00014, 0.00057], atol=6e-6)
    np.testing.assert_allclose(std.numpy(), [0.49985, 0.49990], atol=6e-6)
    assert abs((c[0, 1] / (std[0] * std[1])).item() - 0.35) < 0.006
    a = tree_mixture("A")
    ca = a.covariance()
    np.testing.assert_allclose(a.mean().numpy(), [0.372, 0.365], atol=6e-4)
    np.testing.assert_allclose(ca.diagonal().sqrt().numpy(), [0.333, 0.341], atol=6e-4)
    np.testing.assert_allclose(a.means.min(0).values.numpy(), [-0.479, -0.615], atol=6e-4)
    np.testing.assert_allclose(a.means.max(0).values.numpy(), [1.281, 1.450], atol=6e-4)
    comp_std = a.eigvals.sqrt()
    assert abs(comp_std.min().item() - 0.0039) < 6e-5 and abs(comp_std.max().item() - 0.0217) < 6e-5


def test_posterior_mean_of_20000_points_is_finite() -> None:
    """A demo-sized batch in one call (chunked internally); its speed is measured by `indis bench solvers`, not here."""
    gmm = tree_mixture("A")
    x = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(0))
    out = gmm.posterior_mean(x, 0.5, 0.5)
    assert out.shape == (20_000, 2) and torch.isfinite(out).all()
