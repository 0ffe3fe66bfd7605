"""Seeded priors and conditions: x_T, class labels and guidance scales of sample i under a base seed, each from
its own random stream (numpy SeedSequence hashing of (seed, index, stream)), and condition tables."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .denoiser import Cond
from .errors import InputError
from .schedules import NoiseSchedule

#: How x_T and class labels are derived from (seed, index). Version 1 (indis <= 0.1.0) seeded a torch generator with
#: seed * 2^32 + index, which torch's CPU generator truncates to 32 bits, so every seed gave the same priors.
SEEDING = {"scheme": "numpy-seedsequence-pcg64", "version": 2}
MAX_SEED = 2**63 - 1
_NOISE, _LABEL, _GUIDANCE = 0, 1, 2  # stream ids: noise, class label and guidance scale of a sample are independent


def check_seed(seed: Any, name: str = "seed") -> int:
    """A seed as an int in [0, 2^63 - 1]; anything else raises InputError naming `name`."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"{name} must be an integer in [0, {MAX_SEED}], got {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise InputError(f"{name} must be an integer in [0, {MAX_SEED}] (2^63 - 1), got {seed}")
    return int(seed)


def sample_rng(seed: int, index: int, stream: int = _NOISE) -> np.random.Generator:
    """The random stream of sample `index` under base `seed`: every (seed, index, stream) triple hashes (numpy
    SeedSequence) to its own PCG64 state, so no two seeds or indices share a stream."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(index), int(stream)])))


def prior_std(schedule: NoiseSchedule, t_max: float | None = None) -> float:
    """Standard deviation of the prior x_T ~ N(0, sigma(T)^2 I) (80 for EDM, ~1 for VP, T for flow matching)."""
    return float(schedule.sigma(torch.tensor(schedule.t_max if t_max is None else t_max, dtype=torch.float64)))


def _indices(indices: Sequence[int] | Tensor) -> list[int]:
    idx = torch.as_tensor(indices).tolist() if not isinstance(indices, range) else list(indices)
    if any(i < 0 for i in idx):
        raise InputError("sample indices must be >= 0")
    return idx


def prior_noise(indices: Sequence[int] | Tensor, base_seed: int, shape: Sequence[int], std: float,
                dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Tensor:
    """Regenerate x_T = std * eps for the given sample indices, eps ~ N(0, I) from `sample_rng(base_seed, index)`
    (computed on the CPU, so identical on every device)."""
    seed = check_seed(base_seed)
    idx = _indices(indices)
    out = np.empty((len(idx), *shape), dtype=np.float32)
    for j, i in enumerate(idx):
        out[j] = sample_rng(seed, i, _NOISE).standard_normal(tuple(shape), dtype=np.float32)
    return (torch.from_numpy(out) * std).to(device=device, dtype=dtype)


@dataclass
class CondSpec:
    """How sample i gets its condition: none; a class label (uniform over num_classes, from its own generator);
    or row i % P of a stored table (e.g. P prompt embeddings). With `guidance` = [lo, hi] (class conditions) each
    sample also gets its own classifier-free guidance scale, uniform in [lo, hi], and the condition becomes
    {"class": labels, "guidance_scale": scales} (see `indis.denoiser.split_guidance`)."""

    kind: str = "none"  # "none" | "class" | "table"
    num_classes: int = 0
    table_size: int = 0
    guidance: list[float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("none", "class", "table"):
            raise InputError(f"condition kind must be none, class or table, got {self.kind!r}")
        if self.kind == "class" and self.num_classes < 1:
            raise InputError("class conditions need num_classes >= 1")
        if self.guidance is not None:
            self.guidance = check_guidance_range(self.guidance)
            if self.kind != "class":
                raise InputError("a guidance range needs class conditions (the null class gives the unconditional output)")


def class_labels(indices: Sequence[int] | Tensor, base_seed: int, num_classes: int) -> Tensor:
    """Per-sample class label, uniform over num_classes, from a stream independent of the sample's noise."""
    seed = check_seed(base_seed)
    if num_classes < 1:
        raise InputError(f"num_classes must be >= 1, got {num_classes}")
    return torch.tensor([int(sample_rng(seed, i, _LABEL).integers(num_classes)) for i in _indices(indices)], dtype=torch.long)


def check_guidance_range(r: Any, name: str = "guidance range") -> list[float]:
    """[lo, hi] with 0 <= lo <= hi finite, or InputError naming `name`."""
    try:
        lo, hi = (float(v) for v in r)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be two numbers LO,HI, got {r!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
        raise InputError(f"{name} must satisfy 0 <= LO <= HI (finite), got {lo}, {hi}")
    return [lo, hi]


def guidance_scales(indices: Sequence[int] | Tensor, base_seed: int, lo: float, hi: float) -> Tensor:
    """Per-sample guidance scale, uniform in [lo, hi], from a stream independent of the sample's noise and label."""
    seed = check_seed(base_seed)
    return torch.tensor([lo + (hi - lo) * float(sample_rng(seed, i, _GUIDANCE).random()) for i in _indices(indices)],
                        dtype=torch.float32)


def class_cond(indices: Sequence[int] | Tensor, base_seed: int, spec: CondSpec) -> Cond:
    """The condition of class-conditional samples: labels [B], or {"class", "guidance_scale"} with a guidance range."""
    labels = class_labels(indices, base_seed, spec.num_classes)
    if spec.guidance is None:
        return labels
    return {"class": labels, "guidance_scale": guidance_scales(indices, base_seed, *spec.guidance)}


def table_rows(table: Cond) -> int:
    """Number of rows of a condition table (a tensor or a dict of tensors sharing the first axis)."""
    first = next(iter(table.values()), None) if isinstance(table, Mapping) else table
    return 0 if first is None else int(first.shape[0])


def cond_to(cond: Cond, device: str | torch.device) -> Cond:
    """A condition (None, tensor or dict of tensors) on `device`."""
    if cond is None:
        return None
    if isinstance(cond, Mapping):
        return {k: cond_to(v, device) for k, v in cond.items()}
    return cond.to(device)


def index_cond(table: Cond, rows: Tensor) -> Cond:
    """Rows of a condition table (tensor or dict of tensors)."""
    if table is None:
        return None
    if isinstance(table, Mapping):
        return {k: index_cond(v, rows) for k, v in table.items()}
    return table[rows.to(table.device)]
