"""The exact Gaussian-mixture models of `indis bench scaling`: the diagonal mixtures' posterior mean against an
independent full-covariance implementation, its blocked and per-class forms, its hand-written backward pass, and
conditions and guidance written out by hand."""
from __future__ import annotations

import pytest
import torch

from indis.bench.scaling_models import EMBED_DIM, mixture_handle, random_mixture
from indis.errors import InputError
from indis.toy.gmm import GaussianMixture


def test_diagonal_mixture_equals_the_full_covariance_implementation():
    mix = random_mixture(5, 4, seed=3)
    full = GaussianMixture(torch.full((4,), 0.25), mix.mu, torch.diag_embed(mix.lam), labels=mix.labels)
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 3.0, 20.0], dtype=torch.float64)
    a = mix.posterior_mean(x, sigma, None)
    b = full.posterior_mean(x, 1.0, sigma)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)  # both float64, different algebra
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(mix.posterior_mean(x, sigma, labels), full.posterior_mean(x, 1.0, sigma, cond=labels),
                               rtol=1e-9, atol=1e-9)


def test_diagonal_mixture_with_its_own_spectrum_per_component_keeps_the_log_determinant():
    """Components whose variances are not permutations of one spectrum: the log-determinant term decides part of the
    responsibilities and must stay (the random mixtures drop it, being shared); values and gradients against the
    full-covariance implementation."""
    from indis.bench.scaling_models import DiagonalMixture

    g = torch.Generator().manual_seed(5)
    mu = torch.randn(3, 4, generator=g, dtype=torch.float64)
    lam = torch.tensor([[0.01, 0.02, 0.03, 0.04], [1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    mix = DiagonalMixture(mu, lam, torch.arange(3))
    assert not mix.shared_spectrum and random_mixture(5, 4, seed=3).shared_spectrum
    full = GaussianMixture(torch.full((3,), 1 / 3), mu, torch.diag_embed(lam), labels=torch.arange(3))
    x = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor([0.02, 0.3, 1.0, 2.0, 30.0], dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, generator=g, dtype=torch.float64)
    a, b = mix.posterior_mean(x, sigma, None), full.posterior_mean(x, 1.0, sigma)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)  # float64, diagonal algebra vs Cholesky
    for u, v in zip(torch.autograd.grad((a * w).sum(), (x, sigma)), torch.autograd.grad((b * w).sum(), (x, sigma))):
        torch.testing.assert_close(u, v, rtol=1e-8, atol=1e-10)
    dropped = DiagonalMixture(mu, lam, torch.arange(3))
    dropped.shared_spectrum = True  # the term wrongly dropped: the answer moves (the test can fail)
    assert (dropped.posterior_mean(x, sigma, None) - b).abs().max() > 1e-3


def test_blocked_posterior_mean_matches_the_reference_with_gradients(monkeypatch):
    """Rows in blocks of 2 (forced): values and gradients in x and sigma equal the full-covariance implementation's."""
    import indis.bench.scaling_models as sm

    mix = random_mixture(5, 4, seed=3)
    monkeypatch.setattr(sm, "CHUNK_ELEMENTS", 2 * mix.mu.numel())
    full = GaussianMixture(torch.full((4,), 0.25), mix.mu, torch.diag_embed(mix.lam), labels=mix.labels)
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor([0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 40.0], dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, -1, 1, 0])
    ga = torch.autograd.grad((mix.posterior_mean(x, sigma, labels) * w).sum(), (x, sigma))
    gb = torch.autograd.grad((full.posterior_mean(x, 1.0, sigma, cond=labels) * w).sum(), (x, sigma))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)  # float64, different algebra (diagonal vs Cholesky)
    torch.testing.assert_close(mix.posterior_mean(x, sigma, labels), full.posterior_mean(x, 1.0, sigma, cond=labels),
                               rtol=1e-9, atol=1e-9)


def test_conditions_and_guidance_by_hand():
    mix = random_mixture(3, 6, seed=1)  # classes k mod 6: one component each
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.full((4,), 0.7, dtype=torch.float64)
    labels = torch.tensor([0, 3, 5, 2])
    cls = mixture_handle(mix, "class", 3.0)
    D, _ = cls.denoiser(x, t, labels)
    Dc, Du = mix.posterior_mean(x, t, labels), mix.posterior_mean(x, t, None)
    torch.testing.assert_close(D, Du + 3.0 * (Dc - Du), rtol=1e-10, atol=1e-10)
    emb = mixture_handle(mix, "embedding", 3.0)
    De, _ = emb.denoiser(x, t, emb.cond_table[labels])
    torch.testing.assert_close(De, D, rtol=1e-10, atol=1e-10)  # the embedding names the class, nothing else
    assert emb.cond_table.shape == (6, EMBED_DIM)


def test_posterior_mean_backward_passes_gradcheck():
    """The hand-written backward pass against finite differences (float64), with a class mask, a row of `all classes`
    and, in the second mixture, per-component log-determinants; double backward is refused, not silently wrong."""
    from indis.bench.scaling_models import DiagonalMixture

    g = torch.Generator().manual_seed(11)
    mixes = [random_mixture(3, 4, seed=2),
             DiagonalMixture(torch.randn(4, 3, generator=g, dtype=torch.float64),
                             torch.rand(4, 3, generator=g, dtype=torch.float64) + 0.05, torch.tensor([0, 1, 0, 1]))]
    for mix in mixes:
        x = torch.randn(3, 3, generator=g, dtype=torch.float64, requires_grad=True)
        sigma = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64, requires_grad=True)
        labels = torch.tensor([0, -1, 1])
        assert torch.autograd.gradcheck(lambda a, s: mix.posterior_mean(a, s, labels), (x, sigma))
    w = torch.ones(3, 3, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad((mixes[0].posterior_mean(x, sigma, None) * w).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        gx.sum().backward()


def test_per_class_gather_equals_the_masked_sum_over_all_components(monkeypatch):
    """Rows with a class are computed over that class's components only; values and gradients equal the full-covariance
    reference (which sums over all K with the others masked), for a batch mixing classes and `all` rows, in blocks of
    3 rows; unequal class sizes fall back to the mask."""
    import indis.bench.scaling_models as sm

    mix = random_mixture(5, 20, seed=4)  # 10 classes of 2 components
    assert mix.members is not None and tuple(mix.members.shape) == (10, 2)
    assert bool((mix.labels[mix.members] == torch.arange(10)[:, None]).all())
    monkeypatch.setattr(sm, "CHUNK_ELEMENTS", 3 * 2 * 5)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(9, 5, generator=g, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor([0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 40.0, 0.3, 0.8], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([3, -1, 0, 9, 3, -1, 5, 0, 7])
    w = torch.randn(9, 5, generator=g, dtype=torch.float64)
    full = GaussianMixture(torch.full((20,), 0.05), mix.mu, torch.diag_embed(mix.lam), labels=mix.labels)
    for cls in (labels, labels.clamp_min(0), torch.full((9,), -1)):  # mixed, all with a class, none with a class
        a, b = mix.posterior_mean(x, sigma, cls), full.posterior_mean(x, 1.0, sigma, cond=cls)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)  # float64, diagonal algebra vs Cholesky
        for u, v in zip(torch.autograd.grad((a * w).sum(), (x, sigma)), torch.autograd.grad((b * w).sum(), (x, sigma))):
            torch.testing.assert_close(u, v, rtol=1e-8, atol=1e-10)
    uneven = sm.DiagonalMixture(mix.mu[:3], mix.lam[:3], torch.tensor([0, 0, 1]))
    assert uneven.members is None
    ref = GaussianMixture(torch.full((3,), 1 / 3), mix.mu[:3], torch.diag_embed(mix.lam[:3]), labels=torch.tensor([0, 0, 1]))
    cls = torch.tensor([0, 1, -1, 0, 1, 1, 0, -1, 0])
    torch.testing.assert_close(uneven.posterior_mean(x, sigma, cls), ref.posterior_mean(x, 1.0, sigma, cond=cls),
                               rtol=1e-9, atol=1e-9)


def test_posterior_mean_refuses_a_class_it_does_not_have():
    mix = random_mixture(3, 4, seed=1)  # classes 0..3
    with pytest.raises(InputError, match="below 4, got 4"):
        mix.posterior_mean(torch.zeros(2, 3), torch.ones(2), torch.tensor([0, 4]))
