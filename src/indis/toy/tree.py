"""The recursive tree-branch 2-D Gaussian mixture of the autoguidance paper (NVlabs/edm2 toy_example.py, ``gt``).

Two classes, 'A' and 'B', each a binary tree of branches with depths 0..6 (127 branches), every branch split into
8 elongated Gaussians: 1016 components per class. One numpy RandomState(2) is shared: class A is built first
(depth-first, the +1 child before the -1 child), then class B continues the same stream. Each branch draws one
normal for its length, then one for each child's angle just before that child's subtree is generated (so depth-6
branches also draw two, although their children are empty). ``origin`` and ``scale`` make 'AB' have mean ~0 and
per-axis std ~0.5.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from indis.errors import InputError
from indis.toy.gmm import GaussianMixture

__all__ = ["CLASS_NAMES", "tree_mixture", "tree_parameters"]

CLASS_NAMES: tuple[str, ...] = ("A", "B")

SEED = 2
ORIGIN = (0.0030, 0.0325)
SCALE = (1.3136, 1.3844)
NUM_DEPTHS = 7  # branch depths 0..6
COMPONENTS_PER_BRANCH = 8
START_ANGLES = {"A": np.pi / 4, "B": 5 * np.pi / 4}


def _build_class(rng: np.random.RandomState, start_angle: float) -> tuple[list, list, list]:
    """Means, covariances and unnormalised weights of one class tree, consuming ``rng`` in the reference order."""
    scale = np.asarray(SCALE, dtype=np.float64)
    fractions = np.linspace(0.07, 0.93, COMPONENTS_PER_BRANCH)
    means: list[np.ndarray] = []
    covs: list[np.ndarray] = []
    weights: list[float] = []

    def branch(start: np.ndarray, depth: int, angle: float) -> None:
        if depth >= NUM_DEPTHS:
            return
        length = 0.292 * 0.8**depth * (1 + 0.2 * rng.randn())
        u = np.array([np.cos(angle), np.sin(angle)])
        thickness = 0.2 * 0.8**depth / length
        size = scale * (0.06 * length)
        along = np.outer(u, u)
        cov = np.outer(size, size) * (along + thickness**2 * (np.eye(2) - along))
        for f in fractions:
            means.append((start + f * length * u) * scale)
            covs.append(cov)
            weights.append(length * 0.5**depth)
        end = start + length * u
        for sign in (1.0, -1.0):
            # The child's angle is drawn before its subtree (argument evaluation order of the reference code).
            child_angle = angle + sign * 0.7**depth * (1 + 0.2 * rng.randn())
            branch(end, depth + 1, child_angle)

    branch(np.asarray(ORIGIN, dtype=np.float64), 0, start_angle)
    return means, covs, weights


@functools.lru_cache(maxsize=None)
def tree_parameters() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Float64 (means [2032, 2], covs [2032, 2, 2], unnormalised weights [2032], labels [2032]) for both classes.

    Class A components come first (label 0), then class B (label 1). The arrays are read-only (cached).
    """
    rng = np.random.RandomState(SEED)
    means, covs, weights, labels = [], [], [], []
    for label, name in enumerate(CLASS_NAMES):
        m, c, w = _build_class(rng, START_ANGLES[name])
        means += m
        covs += c
        weights += w
        labels += [label] * len(m)
    out = (
        np.asarray(means, dtype=np.float64),
        np.asarray(covs, dtype=np.float64),
        np.asarray(weights, dtype=np.float64),
        np.asarray(labels, dtype=np.int64),
    )
    for a in out:
        a.setflags(write=False)
    return out


def tree_mixture(classes: str = "A") -> GaussianMixture:
    """The tree mixture of the selected classes ('A', 'B' or 'AB'), weights renormalised over them; labels 0=A, 1=B."""
    if not isinstance(classes, str) or classes not in ("A", "B", "AB"):
        raise InputError(f"classes must be one of 'A', 'B', 'AB', got {classes!r}")
    means, covs, weights, labels = tree_parameters()
    keep = np.isin(labels, [CLASS_NAMES.index(c) for c in classes])
    return GaussianMixture(
        weights=torch.from_numpy(weights[keep].copy()),
        means=torch.from_numpy(means[keep].copy()),
        covs=torch.from_numpy(covs[keep].copy()),
        labels=torch.from_numpy(labels[keep].copy()),
    )
