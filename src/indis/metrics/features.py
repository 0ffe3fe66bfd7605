"""Feature-space distribution metrics: Fréchet distance, KID, and FD-digits.

FD-digits is the Fréchet distance in the feature space (128-d penultimate layer) of our small digits classifier,
shipped in ``indis.zoo``. It is NOT FID: no Inception network is involved and the numbers are not comparable with FID.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from .stats import fd_from_moments
from ..zoo import CLASSIFIERS

__all__ = ["frechet_distance", "kid", "ClassifierFeatures", "DigitsFeatureExtractor", "fd_digits", "real_digits_features",
           "real_features", "extractor"]


def _as_2d(feats, name: str) -> np.ndarray:
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().cpu().double().numpy()
    a = np.asarray(feats, dtype=np.float64)
    if a.ndim != 2:
        raise InputError(f"{name} must be a 2-D array [N, D] of features, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name} contains NaN or Inf")
    return a


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D] (float64).

    ||mu_a - mu_b||^2 + tr(Ca) + tr(Cb) - 2 tr((Ca^1/2 Cb Ca^1/2)^1/2), evaluated with symmetric eigendecompositions
    (stable, no complex parts, unlike a plain sqrtm of Ca Cb).
    """
    a, b = _as_2d(feats_a, "feats_a"), _as_2d(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"feats_a and feats_b must have the same feature dimension, got {a.shape[1]} and {b.shape[1]}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise InputError("feats_a and feats_b need at least 2 rows each to estimate a covariance")
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ca, cb = np.atleast_2d(ca), np.atleast_2d(cb)
    return fd_from_moments(mu_a, ca, mu_b, cb)


def kid(feats_a, feats_b, subsets: int = 100, subset_size: int = 1000, degree: int = 3, coef0: float = 1.0,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance style estimate (Binkowski et al. 2018) in any feature space.

    Unbiased MMD^2 with the polynomial kernel k(x, y) = (x.y / D + coef0)^degree, averaged over ``subsets`` random
    subsets of ``subset_size`` rows (drawn without replacement within a subset; capped at the smaller set size).
    Returns (mean, std) over the subsets.
    """
    a, b = _as_2d(feats_a, "feats_a"), _as_2d(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"feats_a and feats_b must have the same feature dimension, got {a.shape[1]} and {b.shape[1]}")
    if subsets < 1:
        raise InputError(f"subsets must be >= 1, got {subsets}")
    m = min(int(subset_size), a.shape[0], b.shape[0])
    if m < 2:
        raise InputError(f"subset_size must be >= 2 and both sets need >= 2 rows (got subset size {m})")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    vals = np.empty(subsets)
    for i in range(subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        kxx = (x @ x.T / d + coef0) ** degree
        kyy = (y @ y.T / d + coef0) ** degree
        kxy = (x @ y.T / d + coef0) ** degree
        vals[i] = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                   - 2.0 * kxy.mean())
    return float(vals.mean()), float(vals.std())


#: image models with a shipped feature classifier: name -> image side (grey, [-1, 1])
FEATURE_SETS = CLASSIFIERS


def feature_side(name: str, what: str = "feature set") -> int:
    """The image side of a feature set, or an InputError naming the choices."""
    if name not in FEATURE_SETS:
        raise InputError(f"{what} must be one of {', '.join(FEATURE_SETS)}, got {name!r}")
    return FEATURE_SETS[name]


def _as_images(x, side: int = 8) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() == 2 and x.shape[1] == side * side:
        x = x.reshape(-1, 1, side, side)
    elif x.dim() == 3 and tuple(x.shape[1:]) == (side, side):
        x = x[:, None]
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, side, side):
        raise InputError(f"images must be [N,1,{side},{side}] (or [N,{side},{side}] / [N,{side * side}]) in [-1, 1], got "
                         f"shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise InputError("images contain NaN or Inf")
    return x.float()


class ClassifierFeatures(nn.Module):
    """A shipped classifier as a feature extractor (its penultimate layer): "digits" (128-d, 8x8) or "glyphs"
    (256-d, 16x16). Inputs in [-1, 1] are clamped to [-1, 1] first. ``forward`` returns features, so an instance can
    be passed to torchmetrics' ``FrechetInceptionDistance(feature=...)`` (it has ``num_features``)."""

    def __init__(self, name: str = "digits", weights_dir=None, batch_size: int = 2048):
        super().__init__()
        from ..zoo import load_classifier

        self.name, self.side = name, feature_side(name)
        self.classifier = load_classifier(weights_dir, name=name)
        self.num_features = self.classifier.num_features
        self.batch_size = batch_size

    def _run(self, x, fn) -> torch.Tensor:
        x = _as_images(x, self.side).clamp(-1.0, 1.0)
        with torch.no_grad():
            return torch.cat([fn(x[i:i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)])

    def features(self, x) -> torch.Tensor:
        return self._run(x, self.classifier.features)

    def logits(self, x) -> torch.Tensor:
        return self._run(x, self.classifier)

    def predict(self, x) -> torch.Tensor:
        return self.logits(x).argmax(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class DigitsFeatureExtractor(ClassifierFeatures):
    """The shipped digits classifier as a feature extractor (128-d penultimate layer), inputs [N,1,8,8] in [-1, 1]."""

    def __init__(self, weights_dir=None, batch_size: int = 2048):
        super().__init__("digits", weights_dir, batch_size)


_EXTRACTORS: dict[str, ClassifierFeatures] = {}
_REAL: dict[tuple[str, str], np.ndarray] = {}


def extractor(name: str = "digits") -> ClassifierFeatures:
    if name not in _EXTRACTORS:
        _EXTRACTORS[name] = ClassifierFeatures(name)
    return _EXTRACTORS[name]


def _extractor() -> ClassifierFeatures:
    return extractor("digits")


def real_features(name: str, split: str = "all") -> np.ndarray:
    """Features (float64) of the real images of a feature set: digits 'all' (1797), 'train' (1500), 'heldout' (297);
    glyphs 'all' (the first 10,000 training glyphs) and 'heldout' (the 6,000 held-out glyphs: other augmentation
    draws, half of them from the two faces never seen in training)."""
    if (name, split) not in _REAL:
        if name == "digits":
            from ..zoo.digits import load_digits_tensor

            x, _ = load_digits_tensor(split)
        elif name == "glyphs" and split in ("all", "heldout"):
            from ..zoo.glyphs import load_glyphs_tensor

            x, _ = load_glyphs_tensor("train", n=10_000) if split == "all" else load_glyphs_tensor("heldout")
        else:
            raise InputError(f"no real split {split!r} for feature set {name!r}")
        _REAL[(name, split)] = extractor(name).features(x).double().numpy()
    return _REAL[(name, split)]


def real_digits_features(split: str = "all") -> np.ndarray:
    """Features (float64 [N, 128]) of the real digits: split 'all' (1797), 'train' (1500) or 'heldout' (297)."""
    return real_features("digits", split)


def fd_digits(samples, real=None) -> float:
    """FD-digits: Fréchet distance in our digits classifier's feature space (NOT FID).

    ``samples``: generated digits [N,1,8,8] in [-1, 1]. ``real``: real digit images of the same form, or None for
    all 1797 real digits. The estimate is biased upward for small N; compare values at equal N.
    """
    fs = _extractor().features(samples).double().numpy()
    fr = real_digits_features("all") if real is None else _extractor().features(real).double().numpy()
    return frechet_distance(fs, fr)
