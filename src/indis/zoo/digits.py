"""scikit-learn's bundled 8x8 digits, scaled to [-1, 1], with a fixed train / held-out split."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError

RESOLUTION = 8
HELDOUT = 297  # fixed held-out count; 1797 - 297 = 1500 training digits
SPLIT_SEED = 1234


def _load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)


def scale(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Map raw digit intensities 0..16 to [-1, 1] as a float32 tensor [N, 1, 8, 8]."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    if x.dim() == 2:
        x = x.reshape(-1, 8, 8)
    if x.dim() == 3:
        x = x[:, None]
    return x / 8.0 - 1.0


def unscale(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `scale`: [-1, 1] back to 0..16 (clipped)."""
    return ((x.clamp(-1, 1) + 1.0) * 8.0)


def load_digits_tensor(split: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images [N,1,8,8] in [-1,1], labels [N]) for split 'train', 'heldout' or 'all'."""
    if split not in ("train", "heldout", "all"):
        raise InputError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
    images, labels = _load()
    x, y = scale(images), torch.from_numpy(labels)
    if split == "all":
        return x, y
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    idx = perm[:HELDOUT] if split == "heldout" else perm[HELDOUT:]
    idx = torch.from_numpy(np.sort(idx))
    return x[idx], y[idx]


def sigma_data() -> float:
    """Standard deviation of the scaled training digits (EDM sigma_data)."""
    x, _ = load_digits_tensor("train")
    return float(x.std())
