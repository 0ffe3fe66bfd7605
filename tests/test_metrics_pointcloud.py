"""Tests for indis.metrics.pointcloud against hand-made optimal matchings and closed-form Gaussian KL."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from indis.metrics.pointcloud import kl_divergence, kl_histogram, kl_knn, mse, w2




def _gaussian_kl(m0: np.ndarray, s0: np.ndarray, m1: np.ndarray, s1: np.ndarray) -> float:
    """KL(N(m0, s0) || N(m1, s1)) in closed form."""
    s1inv = np.linalg.inv(s1)
    d = len(m0)
    dm = m1 - m0
    return 0.5 * (np.trace(s1inv @ s0) + dm @ s1inv @ dm - d + np.log(np.linalg.det(s1) / np.linalg.det(s0)))


# ----------------------------------------------------------------------------- W2
def test_w2_translation_is_exact() -> None:
    x = np.random.default_rng(0).normal(size=(60, 2))
    v = np.array([0.3, -0.4])
    assert w2(x, x + v) == pytest.approx(0.5, abs=1e-9)
    assert w2(x, x) == pytest.approx(0.0, abs=1e-12)
    # torch input, shuffled target: the matching is found, not assumed
    perm = np.random.default_rng(1).permutation(60)
    assert w2(torch.tensor(x), torch.tensor((x + v)[perm])) == pytest.approx(0.5, abs=1e-9)


def test_w2_hand_made_sets() -> None:
    # Square corners: matching straight up costs 1 per point.
    x = np.array([[0.0, 0.0], [1.0, 0.0]])
    y = np.array([[1.0, 1.0], [0.0, 1.0]])
    assert w2(x, y) == pytest.approx(1.0, abs=1e-12)
    # Unequal sizes: two points at distance 1 from the single target, W2^2 = 1.
    assert w2(np.array([[0.0, 0.0], [2.0, 0.0]]), np.array([[1.0, 0.0]])) == pytest.approx(1.0, abs=1e-12)
    # Crossing vs non-crossing in 1-D: the sorted matching is optimal, cost ((0-1)^2 + (3-5)^2)/2 = 2.5.
    assert w2(np.array([[0.0], [3.0]]), np.array([[5.0], [1.0]])) == pytest.approx(np.sqrt(2.5), abs=1e-12)


def test_w2_reports_non_optimal_solver_exit() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(RuntimeError, match="optimality"):
        w2(rng.normal(size=(200, 2)), rng.normal(size=(200, 2)), num_iter_max=3)


# ----------------------------------------------------------------------------- KL
def test_kl_knn_matches_gaussian_closed_form() -> None:
    rng = np.random.default_rng(0)
    m0, s0 = np.zeros(2), np.eye(2)
    m1, s1 = np.array([0.5, -0.3]), np.array([[1.5, 0.4], [0.4, 0.8]])
    x = rng.multivariate_normal(m0, s0, 20_000)
    y = rng.multivariate_normal(m1, s1, 20_000)
    assert kl_divergence(x, y) == pytest.approx(_gaussian_kl(m0, s0, m1, s1), abs=0.05)
    assert kl_divergence(y, x) == pytest.approx(_gaussian_kl(m1, s1, m0, s0), abs=0.05)
    # smaller samples as in the toy evaluation: looser, the estimator is biased low (see kl_knn)
    assert kl_knn(x[:5000], y[:5000], k=5) == pytest.approx(_gaussian_kl(m0, s0, m1, s1), abs=0.1)


def test_kl_same_distribution_is_near_zero() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5000, 2))
    x2 = rng.normal(size=(5000, 2))
    assert abs(kl_divergence(x, x2)) < 0.03
    assert abs(kl_divergence(torch.tensor(x, dtype=torch.float32), torch.tensor(x2), k=10)) < 0.03


def test_kl_histogram_gaussians() -> None:
    rng = np.random.default_rng(2)
    m0, s0 = np.zeros(2), np.eye(2)
    m1, s1 = np.array([1.0, 0.0]), np.eye(2) * 1.5
    x = rng.multivariate_normal(m0, s0, 20_000)
    y = rng.multivariate_normal(m1, s1, 20_000)
    same = kl_histogram(x, rng.multivariate_normal(m0, s0, 20_000), bins=30)
    assert 0 <= same < 0.05
    assert kl_divergence(x, y, method="histogram", bins=30) == pytest.approx(_gaussian_kl(m0, s0, m1, s1), abs=0.06)


# ----------------------------------------------------------------------------- MSE
def test_mse_convention() -> None:
    x = np.array([[0.0, 0.0], [1.0, 2.0]])
    y = np.array([[1.0, 1.0], [1.0, 0.0]])
    # per-sample means over coordinates: (1+1)/2 = 1 and (0+4)/2 = 2; mean over samples 1.5
    assert mse(x, y) == pytest.approx(1.5)
    a = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    b = torch.zeros_like(a)
    assert mse(a, b) == pytest.approx(float((a**2).mean()), rel=1e-6)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: w2(np.zeros(5), np.zeros((5, 2))), "x must have shape"),
        (lambda: w2(np.zeros((5, 2)), np.zeros((0, 2))), "y must hold"),
        (lambda: w2(np.zeros((5, 2)), np.zeros((5, 3))), "same dimension"),
        (lambda: w2(np.full((3, 2), np.nan), np.zeros((3, 2))), "x contains NaN"),
        (lambda: kl_divergence(np.zeros((5, 2)), np.zeros((5, 2, 1))), "reference must have shape"),
        (lambda: kl_divergence(np.zeros((1, 2)), np.zeros((5, 2))), "samples must hold"),
        (lambda: kl_divergence(np.random.rand(4, 2), np.random.rand(4, 2), k=5), "k=5"),
        (lambda: kl_divergence(np.zeros((5, 2)), np.zeros((5, 2)), method="kde"), "method"),
        (lambda: mse(np.zeros((3, 2)), np.zeros((2, 2))), "y must have the same shape"),
        (lambda: mse(np.zeros((0, 2)), np.zeros((0, 2))), "x must be a non-empty"),
        (lambda: mse(np.zeros((2, 2)), np.array([[0.0, np.inf], [0.0, 0.0]])), "y contains NaN"),
    ],
)
def test_errors_name_the_argument(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
