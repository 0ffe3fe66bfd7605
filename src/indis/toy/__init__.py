"""Toy distributions with exact denoisers: Gaussian mixtures and the autoguidance tree-branch mixture."""
from indis.toy.gmm import GaussianMixture, NoiseSchedule
from indis.toy.tree import CLASS_NAMES, tree_mixture, tree_parameters

__all__ = ["CLASS_NAMES", "GaussianMixture", "NoiseSchedule", "tree_mixture", "tree_parameters"]
