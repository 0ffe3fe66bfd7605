"""Gaussian mixtures with an exact, differentiable posterior mean E[x0 | x_t] (the ideal denoiser).

The forward process is x_t = alpha * x0 + sigma * eps with eps ~ N(0, I) and x0 drawn from the mixture
sum_k w_k N(mu_k, Sigma_k). Every component's covariance is eigendecomposed once, Sigma_k = Q_k diag(L_k) Q_k^T,
so the noised covariance C_k = alpha^2 Sigma_k + sigma^2 I = Q_k diag(alpha^2 L_k + sigma^2) Q_k^T is diagonal
in a fixed per-component basis: inverses and log-determinants cost O(D) per component and sample.
All arithmetic is done in float64 whatever the input dtype.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Protocol

import torch
from torch.utils.checkpoint import checkpoint

from indis.errors import InputError

__all__ = ["GaussianMixture", "NoiseSchedule"]

_F64 = torch.float64
# Elements of one [chunk, K, D] float64 work tensor (4 MiB): bounds peak memory and stays cache-friendly.
_CHUNK_ELEMENTS = 1 << 19


class NoiseSchedule(Protocol):
    """Anything with per-sample alpha(t) and sigma(t), e.g. indis.schedules.EDM or FlowMatching."""

    def alpha(self, t: torch.Tensor) -> torch.Tensor: ...

    def sigma(self, t: torch.Tensor) -> torch.Tensor: ...


def _as_tensor(name: str, value: Any, ndim: int) -> torch.Tensor:
    t = torch.as_tensor(value)
    if t.ndim != ndim:
        raise InputError(f"{name} must have {ndim} dimension(s), got shape {tuple(t.shape)}")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise InputError(f"{name} contains NaN or Inf values")
    return t


class GaussianMixture:
    """A D-dimensional Gaussian mixture with exact denoiser, density, sampling and moments.

    Parameters are stored as float64 master copies. ``.to(device, dtype)`` moves them to ``device``; ``dtype``
    only sets the dtype of tensors this object creates (``sample``, ``mean``, ``covariance``), because the
    computations always run in float64 and return in the dtype of their input ``x``.
    """

    def __init__(
        self,
        weights: torch.Tensor,
        means: torch.Tensor,
        covs: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> None:
        weights = _as_tensor("weights", weights, 1).to(_F64)
        means = _as_tensor("means", means, 2).to(_F64)
        covs = _as_tensor("covs", covs, 3).to(_F64)
        k, d = means.shape
        if k == 0 or d == 0:
            raise InputError(f"means must be a non-empty [K, D] tensor, got shape {tuple(means.shape)}")
        if weights.shape != (k,):
            raise InputError(f"weights must have shape [K]=[{k}], got {tuple(weights.shape)}")
        if covs.shape != (k, d, d):
            raise InputError(f"covs must have shape [K, D, D]=[{k}, {d}, {d}], got {tuple(covs.shape)}")
        if (weights < 0).any() or weights.sum() <= 0:
            raise InputError("weights must be non-negative with a positive sum")
        if not torch.allclose(covs, covs.transpose(1, 2), rtol=1e-10, atol=1e-14):
            raise InputError("covs must be symmetric")
        evals, evecs = torch.linalg.eigh(covs)
        if (evals < -1e-12 * evals.abs().amax(dim=1, keepdim=True).clamp_min(1e-300)).any():
            raise InputError("covs must be positive semi-definite")
        if labels is not None:
            labels = _as_tensor("labels", labels, 1)
            if labels.shape != (k,) or labels.is_floating_point() or labels.dtype == torch.bool:
                raise InputError(f"labels must be an integer tensor of shape [K]=[{k}], got {labels.dtype} {tuple(labels.shape)}")
            labels = labels.to(torch.long)
            if (labels < 0).any():
                raise InputError("labels must be non-negative (-1 is reserved for 'all components' in cond)")

        self._w = weights / weights.sum()
        self._mu = means
        self._cov = covs
        self._L = evals.clamp_min(0.0)
        self._Q = evecs
        self._labels = labels
        self.dtype: torch.dtype = _F64
        self._derive()

    def _derive(self) -> None:
        """Recompute the cached tensors that depend only on the stored parameters."""
        k, d = self._mu.shape
        with torch.no_grad():
            self._logw = torch.log(self._w)
            # [D, D*K] with column j*K + k = Q_k[:, j]: per-sample work tensors are [b, D, K], so sums over D
            # run over D contiguous [b, K] slabs (about 2x faster than [b, K, D] for D = 2)
            self._Qcat = self._Q.permute(1, 2, 0).reshape(d, d * k).contiguous()
            self._muq = torch.einsum("kij,ki->jk", self._Q, self._mu)  # (Q_k^T mu_k)_j as [D, K]
            self._Lt = self._L.T.contiguous()  # [D, K]
            if self._labels is not None:
                self._label_values = torch.unique(self._labels)
            else:
                self._label_values = torch.empty(0, dtype=torch.long, device=self._mu.device)

    # ------------------------------------------------------------------ properties
    @property
    def weights(self) -> torch.Tensor:
        """Normalised component weights [K] (float64)."""
        return self._w

    @property
    def means(self) -> torch.Tensor:
        """Component means [K, D] (float64)."""
        return self._mu

    @property
    def covs(self) -> torch.Tensor:
        """Component covariances [K, D, D] (float64)."""
        return self._cov

    @property
    def eigvals(self) -> torch.Tensor:
        """Eigenvalues of each component covariance [K, D] (float64, ascending)."""
        return self._L

    @property
    def labels(self) -> torch.Tensor | None:
        """Class label of each component [K] (long), or None."""
        return self._labels

    @property
    def num_components(self) -> int:
        return int(self._mu.shape[0])

    @property
    def dim(self) -> int:
        return int(self._mu.shape[1])

    @property
    def device(self) -> torch.device:
        return self._mu.device

    def __repr__(self) -> str:
        nl = "none" if self._labels is None else str(self._label_values.tolist())
        return f"GaussianMixture(K={self.num_components}, D={self.dim}, labels={nl}, device={self.device})"

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "GaussianMixture":
        """Move the parameters to ``device``; ``dtype`` sets the output dtype of sample/mean/covariance. Returns self."""
        if dtype is not None:
            if not dtype.is_floating_point:
                raise InputError(f"dtype must be a floating dtype, got {dtype}")
            self.dtype = dtype
        if device is not None:
            self._w, self._mu, self._cov, self._L, self._Q = (
                t.to(device) for t in (self._w, self._mu, self._cov, self._L, self._Q)
            )
            if self._labels is not None:
                self._labels = self._labels.to(device)
            self._derive()
        return self

    # ------------------------------------------------------------------ argument handling
    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x, dtype=_F64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InputError(f"x must have shape [B, {self.dim}], got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise InputError(f"x must be a floating tensor, got {x.dtype}")
        return x

    def _per_sample(self, name: str, v: Any, b: int) -> torch.Tensor:
        """alpha/sigma as a float64 [B] tensor (scalars and [1], [B], [B, 1] accepted); keeps autograd."""
        if not isinstance(v, torch.Tensor):
            v = torch.as_tensor(v, dtype=_F64)
        v = v.to(device=self.device, dtype=_F64)
        if v.numel() == 1:
            return v.reshape(1).expand(b)
        if v.numel() != b or (v.ndim == 2 and v.shape[1] != 1) or v.ndim > 2:
            raise InputError(f"{name} must be a scalar or have shape [B]=[{b}], got {tuple(v.shape)}")
        return v.reshape(b)

    def _per_sample_cond(self, cond: Any, b: int) -> torch.Tensor | None:
        """cond as a long [B] tensor, or None when every sample uses all components."""
        if cond is None:
            return None
        c = torch.as_tensor(cond, device=self.device)
        if c.is_floating_point() or c.dtype == torch.bool:
            raise InputError(f"cond must hold integer class labels, got {c.dtype}")
        c = c.to(torch.long)
        if c.numel() == 1:
            c = c.reshape(1).expand(b)
        elif c.shape != (b,):
            raise InputError(f"cond must be an int or have shape [B]=[{b}], got {tuple(c.shape)}")
        if bool((c < 0).all()):
            return None
        present = c[c >= 0]
        if self._labels is None:
            raise InputError("cond gives class labels but this mixture has no labels; use cond=None or -1")
        unknown = present[~torch.isin(present, self._label_values)]
        if unknown.numel():
            raise InputError(
                f"cond contains labels {sorted(set(unknown.tolist()))} that no component has; "
                f"known labels: {self._label_values.tolist()} (or -1 for all components)"
            )
        return c

    def _mask(self, cond: torch.Tensor) -> torch.Tensor:
        """[b, K] boolean: which components each sample may use."""
        assert self._labels is not None
        return (self._labels[None, :] == cond[:, None]) | (cond[:, None] < 0)

    def _chunk_size(self, chunk_size: int | None) -> int:
        if chunk_size is not None:
            if chunk_size < 1:
                raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
            return int(chunk_size)
        return max(1, _CHUNK_ELEMENTS // (self.num_components * self.dim))

    # ------------------------------------------------------------------ core math
    def _component_terms(
        self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per sample b and component k: y = Q_k^T (x - alpha mu_k), c = eigenvalues of C_k (both [b, D, K]),
        log w_k N(x; alpha mu_k, C_k) [b, K]."""
        b = x.shape[0]
        k, d = self._mu.shape
        a = alpha[:, None, None]
        y = (x @ self._Qcat).view(b, d, k) - a * self._muq[None]
        c = (a * a) * self._Lt[None] + (sigma * sigma)[:, None, None]
        logits = self._logw[None] - 0.5 * ((y * y) / c).sum(1) - 0.5 * torch.log(c.prod(1)) - 0.5 * d * math.log(2 * math.pi)
        return y, c, logits

    def _posterior_mean_chunk(
        self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None
    ) -> torch.Tensor:
        b = x.shape[0]
        k, d = self._mu.shape
        y, c, logits = self._component_terms(x, alpha, sigma)
        if cond is not None:
            logits = logits.masked_fill(~self._mask(cond), float("-inf"))
        r = torch.softmax(logits, dim=-1)  # responsibilities [b, K]
        # E[x0 | x, k] = mu_k + alpha Sigma_k C_k^{-1} (x - alpha mu_k) = mu_k + alpha Q_k diag(L_k / c_k) y_k
        v = (r[:, None, :] * self._Lt[None] / c) * y
        return r @ self._mu + alpha[:, None] * (v.reshape(b, d * k) @ self._Qcat.T)

    def _log_prob_chunk(
        self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None
    ) -> torch.Tensor:
        _, _, logits = self._component_terms(x, alpha, sigma)
        if cond is None:
            return torch.logsumexp(logits, dim=-1)
        mask = self._mask(cond)
        log_norm = torch.logsumexp(self._logw[None].masked_fill(~mask, float("-inf")), dim=-1)
        return torch.logsumexp(logits.masked_fill(~mask, float("-inf")), dim=-1) - log_norm

    def _chunked(
        self,
        fn: Callable[..., torch.Tensor],
        x: torch.Tensor,
        alpha: torch.Tensor,
        sigma: torch.Tensor,
        cond: torch.Tensor | None,
        chunk_size: int | None,
    ) -> torch.Tensor:
        b = x.shape[0]
        n = self._chunk_size(chunk_size)
        if b <= n:
            return fn(x, alpha, sigma, cond)
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, alpha, sigma))
        outs = []
        for s in range(0, b, n):
            args = (x[s : s + n], alpha[s : s + n], sigma[s : s + n], None if cond is None else cond[s : s + n])
            # With autograd, recompute each chunk in backward instead of keeping its [chunk, K, D] intermediates.
            outs.append(checkpoint(fn, *args, use_reentrant=False) if needs_grad else fn(*args))
        return torch.cat(outs, dim=0)

    # ------------------------------------------------------------------ public API
    def posterior_mean(
        self,
        x: torch.Tensor,
        alpha: torch.Tensor | float,
        sigma: torch.Tensor | float,
        cond: torch.Tensor | int | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """E[x0 | x_t = x] for x_t = alpha x0 + sigma eps: the exact (ideal) x0-prediction / denoiser.

        x: [B, D]; alpha, sigma: scalars or per-sample [B]; cond: None, an int or a long [B] of class labels, a sample
        with label c using only components with ``labels == c`` (weights renormalised) and -1 meaning all components.
        Computed in float64 (log-sum-exp responsibilities), returned in x's dtype, differentiable w.r.t. x, alpha and
        sigma. Batches are processed in chunks of ``chunk_size`` samples (default: about 4 MiB per work tensor).
        """
        x = self._check_x(x)
        b = x.shape[0]
        alpha64 = self._per_sample("alpha", alpha, b)
        sigma64 = self._per_sample("sigma", sigma, b)
        c = self._per_sample_cond(cond, b)
        x64 = x.to(device=self.device, dtype=_F64)
        out = self._chunked(self._posterior_mean_chunk, x64, alpha64, sigma64, c, chunk_size)
        return out.to(device=x.device, dtype=x.dtype)

    def log_prob(
        self,
        x: torch.Tensor,
        alpha: torch.Tensor | float = 1.0,
        sigma: torch.Tensor | float = 0.0,
        cond: torch.Tensor | int | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """Log density [B] of the noised marginal p(x_t = x) = sum_k w_k N(x; alpha mu_k, alpha^2 Sigma_k + sigma^2 I).

        The defaults (alpha=1, sigma=0) give the data density. ``cond`` restricts to one class as in posterior_mean.
        """
        x = self._check_x(x)
        b = x.shape[0]
        alpha64 = self._per_sample("alpha", alpha, b)
        sigma64 = self._per_sample("sigma", sigma, b)
        c = self._per_sample_cond(cond, b)
        x64 = x.to(device=self.device, dtype=_F64)
        out = self._chunked(self._log_prob_chunk, x64, alpha64, sigma64, c, chunk_size)
        return out.to(device=x.device, dtype=x.dtype)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        cond: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """Exact samples [n, D] from the (noise-free) data mixture, in ``self.dtype``; ``cond`` picks the class per sample."""
        if int(n) != n or n < 0:
            raise InputError(f"n must be a non-negative integer, got {n}")
        n = int(n)
        if n == 0:
            return torch.empty(0, self.dim, dtype=self.dtype, device=self.device)
        c = self._per_sample_cond(cond, n)
        comp = torch.empty(n, dtype=torch.long, device=self.device)
        if c is None:
            comp = torch.multinomial(self._w, n, replacement=True, generator=generator)
        else:
            for value in torch.unique(c).tolist():
                idx = (c == value).nonzero().squeeze(1)
                w = self._w if value < 0 else self._w * (self._labels == value)
                comp[idx] = torch.multinomial(w, idx.numel(), replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=_F64, device=self.device)
        x = self._mu[comp] + torch.einsum("nij,nj->ni", self._Q[comp], self._L[comp].sqrt() * z)
        return x.to(self.dtype)

    def _class_weights(self, cond: int | None) -> torch.Tensor:
        if cond is None or cond < 0:
            return self._w
        self._per_sample_cond(cond, 1)  # validates the label
        w = self._w * (self._labels == cond)
        return w / w.sum()

    def mean(self, cond: int | None = None) -> torch.Tensor:
        """Exact mean [D] of the data mixture (of one class if ``cond`` is a label)."""
        w = self._class_weights(cond)
        return (w @ self._mu).to(self.dtype)

    def covariance(self, cond: int | None = None) -> torch.Tensor:
        """Exact covariance [D, D] of the data mixture (of one class if ``cond`` is a label)."""
        w = self._class_weights(cond)
        m = w @ self._mu
        second = torch.einsum("k,kij->ij", w, self._cov + self._mu[:, :, None] * self._mu[:, None, :])
        return (second - torch.outer(m, m)).to(self.dtype)

    def x0_fn(self, schedule: NoiseSchedule) -> Callable[..., torch.Tensor]:
        """The exact x0-prediction ``fn(x, t, cond=None)`` under ``schedule`` (alpha(t), sigma(t) with per-sample t [B])."""

        def fn(x: torch.Tensor, t: torch.Tensor | float, cond: torch.Tensor | int | None = None) -> torch.Tensor:
            b = x.shape[0]
            if not isinstance(t, torch.Tensor):
                t = torch.full((b,), float(t), dtype=_F64, device=x.device)
            elif t.numel() == 1:
                t = t.reshape(1).expand(b)
            elif t.numel() == b:
                t = t.reshape(b)
            else:
                raise InputError(f"t must be a scalar or have shape [B]=[{b}], got {tuple(t.shape)}")
            return self.posterior_mean(x, schedule.alpha(t), schedule.sigma(t), cond)

        return fn
