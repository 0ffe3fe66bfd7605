"""Per-sample distances d(x, x*) between student and teacher endpoints (paper eq. 4/8)."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .errors import InputError

LossFn = Callable[[Tensor, Tensor], Tensor]


def mse(x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error over all non-batch dimensions, one value per sample."""
    return (x - y).pow(2).flatten(1).mean(1)


def l1(x: Tensor, y: Tensor) -> Tensor:
    return (x - y).abs().flatten(1).mean(1)


def pseudo_huber(x: Tensor, y: Tensor, c: float | None = None) -> Tensor:
    """sqrt(||x - y||^2 + c^2) - c with c = 0.00054 sqrt(D) (Song & Dhariwal 2023), one value per sample."""
    d = x[0].numel()
    c = 0.00054 * math.sqrt(d) if c is None else c
    return torch.sqrt((x - y).pow(2).flatten(1).sum(1) + c * c) - c


LOSSES: dict[str, LossFn] = {"mse": mse, "l2": mse, "l1": l1, "pseudo_huber": pseudo_huber, "huber": pseudo_huber}


def get_loss(loss: str | LossFn) -> LossFn:
    """A built-in loss by name, or any callable (x, y) -> [B] (e.g. a perceptual loss such as LPIPS)."""
    if callable(loss):
        return loss
    from .metrics.perceptual import PERCEPTUAL, perceptual_loss

    if loss in PERCEPTUAL:
        return perceptual_loss(loss)
    if loss not in LOSSES:
        raise InputError(f"unknown loss {loss!r}; choose one of {', '.join(sorted(LOSSES))}, {', '.join(PERCEPTUAL)}, or pass "
                         "a callable")
    return LOSSES[loss]
