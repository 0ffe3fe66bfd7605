"""The prior-conditioning network phi(x_T, c) of INDIS (paper fig. 4): a small encoder of the starting noise
(MLP for vectors, strided 2-D convolutions for images/latents, 3-D for videos; or, with input_basis = k, the
projection of x_T on the data's top k principal directions, which in high dimension keeps phi from fitting its
training priors through the many directions that do not decide the mode) plus an optional condition
branch (class one-hot scaled by 1/sqrt(num_classes) then linear; or pooled prompt embeddings), an optional
guidance-scale branch (phi trained over a range of classifier-free guidance scales), an MLP trunk and a
zero-initialised head whose bias holds the warm-start logits."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from ..denoiser import split_guidance
from ..errors import InputError

Cond = Tensor | Mapping[str, Tensor] | None

#: phi's designs, what each reads: INDIS (x_T), INDIS-D (x_T and the model's first output D), INDIS-P and INDIS-PD
#: (the same projected on the top principal directions of the training endpoints); `design_net` gives their options
DESIGNS = ("indis", "indis-d", "indis-p", "indis-pd")
BASIS_K = 16  # principal directions of the projected designs (the data dimension where that is fewer)


def design_net(name: str, dim: int, basis: int = BASIS_K) -> dict[str, int | bool]:
    """phi's options (`learned(..., net=...)`) of the design `name` (one of DESIGNS) at data dimension `dim`."""
    if name not in DESIGNS:
        raise InputError(f"unknown phi design '{name}'; choose from {', '.join(DESIGNS)}")
    if basis < 1:
        raise InputError(f"the projected designs' basis size must be >= 1, got {basis}")
    net: dict[str, int | bool] = {"input_basis": min(basis, dim)} if name.endswith(("-p", "-pd")) else {}
    if name.endswith(("-d", "-pd")):
        net["denoised_input"] = True
    return net


def pool_condition(cond: Cond, keys: Sequence[str] | None = None) -> Tensor | None:
    """Turn a float condition into one vector per sample: [B, L, D] sequences are mean-pooled (T5), [B, D]
    vectors kept (pooled CLIP), and a dict's entries concatenated in key order (or `keys` order)."""
    if cond is None:
        return None
    if isinstance(cond, Mapping):
        names = list(keys) if keys is not None else sorted(cond)
        parts = []
        for k in names:
            if k not in cond:
                raise InputError(f"condition dict lacks key {k!r} needed by the prior network (has {sorted(cond)})")
            v = pool_condition(cond[k])
            if v is not None:
                parts.append(v)
        return torch.cat(parts, -1) if parts else None
    if not cond.is_floating_point():
        raise InputError("an integer condition needs a prior network built with num_classes > 0")
    if cond.dim() == 3:
        return cond.mean(1)
    if cond.dim() == 2:
        return cond
    if cond.dim() == 1:
        return cond[:, None]
    raise InputError(f"cannot pool a condition of shape {list(cond.shape)}; expected [B, D] or [B, L, D]")


class _ConvEncoder(nn.Module):
    """Strided convolutions down to <= 4 per spatial axis, then flatten."""

    def __init__(self, shape: Sequence[int], channels: int, max_channels: int = 128):
        super().__init__()
        dims = len(shape) - 1
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        c_in, spatial = shape[0], list(shape[1:])
        layers: list[nn.Module] = [conv(c_in, channels, 3, padding=1), nn.SiLU()]
        ch = channels
        while max(spatial) > 4:
            stride = [2 if s > 4 else 1 for s in spatial]
            nxt = min(ch * 2, max_channels)
            layers += [conv(ch, nxt, 3, stride=stride, padding=1), nn.SiLU()]
            spatial = [(s + 2 - 3) // st + 1 for s, st in zip(spatial, stride)]
            ch = nxt
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.out_dim = ch * math.prod(spatial)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def principal_directions(x: Tensor, k: int, seed: int = 0) -> Tensor:
    """The top `k` principal directions [k, D] (orthonormal rows, largest variance first) of samples x [n, ...]:
    exact SVD of the centred samples, or a seeded randomised one (torch.svd_lowrank) where both n and D exceed 1,024."""
    x = x.detach().reshape(x.shape[0], -1).to("cpu", torch.float64)
    n, dim = x.shape
    if not 1 <= k <= min(n - 1, dim):
        raise InputError(f"input_basis needs 1 <= k <= min(samples - 1, dimension) = {min(n - 1, dim)}, got k={k} "
                         f"from {n} samples")
    x = x - x.mean(0)
    if min(n, dim) <= 1024:
        return torch.linalg.svd(x, full_matrices=False)[2][:k].contiguous()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, _, v = torch.svd_lowrank(x, q=min(k + 16, n, dim), niter=6)
    return v[:, :k].T.contiguous()


class _Projection(nn.Module):
    """phi's inputs (x_T, and D(x_T, t_max) where read) stacked along dim 1, each projected on the same basis [k, D]
    (NaN until `PriorNet.fit_basis` sets it) and concatenated: k values per input."""

    def __init__(self, parts: int, k: int, dim: int):
        super().__init__()
        self.parts = parts
        self.register_buffer("basis", torch.full((k, dim), math.nan))

    def forward(self, x: Tensor) -> Tensor:
        if bool(torch.isnan(self.basis).any()):
            raise InputError("this prior network reads x_T projected on a basis that was never fitted: call "
                             "fit_basis(endpoints) (training does it from the training priors' teacher endpoints)")
        return (x.reshape(x.shape[0], self.parts, -1) @ self.basis.to(x.dtype).T).flatten(1)


class PriorNet(nn.Module):
    """phi: (x_T, c) -> out_dim raw outputs (InstanceSchedule splits them into tau, shift and scale logits)."""

    def __init__(
        self,
        data_shape: Sequence[int],
        out_dim: int,
        *,
        hidden: int = 256,
        depth: int = 2,
        channels: int = 16,
        num_classes: int = 0,
        cond_dim: int = 0,
        cond_keys: Sequence[str] | None = None,
        fourier_features: int = 0,
        fourier_scale: float = 1.0,
        input_scale: float = 1.0,
        seed: int = 0,
        use_instance: bool = True,
        use_cond: bool = True,
        guidance_range: Sequence[float] | None = None,
        denoised_input: bool = False,
        input_basis: int = 0,
    ):
        super().__init__()
        # ablation switches (paper fig. 5): without the instance input phi sees a constant in place of x_T (a learned
        # global, or class-wise, schedule); without the condition it ignores c
        self.use_instance, self.use_cond = bool(use_instance), bool(use_cond)
        self.data_shape = tuple(int(s) for s in data_shape)
        self.num_classes, self.cond_dim = int(num_classes), int(cond_dim)
        self.cond_keys = list(cond_keys) if cond_keys is not None else None
        self.input_scale = float(input_scale)
        # phi also reads the model's first output D(x_T, t_max), standardised by the caller, stacked on x_T's channels
        self.denoised_input = bool(denoised_input)
        # phi reads x_T (and D) projected on the top input_basis principal directions of the data (0: the whole input)
        self.input_basis = int(input_basis)
        if self.input_basis < 0:
            raise InputError(f"input_basis must be >= 0 (0: phi reads the whole x_T), got {input_basis}")
        self.guidance_range = None if guidance_range is None else [float(v) for v in guidance_range]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # phi's initial weights depend on its seed only, not on the global RNG
            self._build(out_dim, hidden, depth, channels, fourier_features, fourier_scale)

    def _build(self, out_dim: int, hidden: int, depth: int, channels: int, fourier_features: int, fourier_scale: float) -> None:
        k = 2 if self.denoised_input else 1
        if self.input_basis:
            self.encoder = _Projection(k, self.input_basis, math.prod(self.data_shape))
            feat = k * self.input_basis
            if fourier_features:
                self.register_buffer("fourier", torch.randn(feat, fourier_features) * fourier_scale)
                feat += 2 * fourier_features
        elif len(self.data_shape) == 1:
            d = k * self.data_shape[0]
            self.encoder: nn.Module = nn.Flatten()
            feat = d
            if fourier_features:
                self.register_buffer("fourier", torch.randn(d, fourier_features) * fourier_scale)
                feat = d + 2 * fourier_features
        elif len(self.data_shape) in (3, 4):
            self.encoder = _ConvEncoder((k * self.data_shape[0], *self.data_shape[1:]), channels)
            feat = self.encoder.out_dim
        else:
            raise InputError(f"prior network supports data shapes (D,), (C,H,W) or (C,F,H,W), got {self.data_shape}")
        cfeat = 0
        if self.num_classes:
            self.cond_proj: nn.Module | None = nn.Linear(self.num_classes, hidden)
            cfeat = hidden
        elif self.cond_dim:
            self.cond_proj = nn.Linear(self.cond_dim, hidden)
            cfeat = hidden
        else:
            self.cond_proj = None
        if self.guidance_range is not None:  # the guidance scale, mapped to [-1, 1] over the range, and its square
            self.guidance_proj: nn.Module | None = nn.Linear(2, hidden)
            cfeat += hidden
        else:
            self.guidance_proj = None
        layers: list[nn.Module] = [nn.Linear(feat + cfeat, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, out_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def needs_basis(self) -> bool:
        """Built to read a projection of x_T whose basis is not fitted yet."""
        return bool(self.input_basis) and bool(torch.isnan(self.encoder.basis).any())

    def fit_basis(self, endpoints: Tensor, seed: int = 0) -> "PriorNet":
        """Set the projection basis to the top `input_basis` principal directions of `endpoints` [n, *data_shape]
        (samples of the data, e.g. the training priors' teacher endpoints)."""
        if not self.input_basis:
            raise InputError("fit_basis is for a prior network built with input_basis > 0")
        if tuple(endpoints.shape[1:]) != self.data_shape:
            raise InputError(f"fit_basis needs endpoints of shape [n, {', '.join(map(str, self.data_shape))}], got "
                             f"{list(endpoints.shape)}")
        with torch.no_grad():
            b = self.encoder.basis
            b.copy_(principal_directions(endpoints, self.input_basis, seed).to(b))
        return self

    def features(self, x_T: Tensor, cond: Cond = None, denoised: Tensor | None = None) -> Tensor:
        if tuple(x_T.shape[1:]) != self.data_shape:
            raise InputError(f"prior network expects x_T of shape [B, {', '.join(map(str, self.data_shape))}], got {list(x_T.shape)}")
        cond, g = split_guidance(cond)
        x = x_T * self.input_scale if self.use_instance else torch.zeros_like(x_T)
        if self.denoised_input:
            if denoised is None or denoised.shape != x_T.shape:
                raise InputError("this prior network reads the model's first output: pass denoised= of x_T's shape")
            x = torch.cat([x, denoised.to(x.dtype) if self.use_instance else torch.zeros_like(x)], 1)
        h = self.encoder(x)
        if hasattr(self, "fourier"):
            proj = h @ self.fourier.to(h.dtype)
            h = torch.cat([h, torch.sin(proj), torch.cos(proj)], -1)
        if self.cond_proj is not None and not self.use_cond:
            h = torch.cat([h, torch.zeros(h.shape[0], self.cond_proj.out_features, dtype=h.dtype, device=h.device)], -1)
        elif self.cond_proj is not None:
            if cond is None:
                raise InputError("this prior network was built with a condition; pass cond (class labels or embeddings)")
            if self.num_classes:
                if isinstance(cond, Mapping) or cond.is_floating_point():
                    raise InputError("class-conditional prior network needs integer labels [B] as cond")
                c = torch.nn.functional.one_hot(cond.long().clamp(0, self.num_classes - 1), self.num_classes).to(h.dtype)
                c = c * (cond >= 0).to(h.dtype)[:, None] / math.sqrt(self.num_classes)  # label -1: unconditional
            else:
                c = pool_condition(cond, self.cond_keys)
                if c is None or c.shape[-1] != self.cond_dim:
                    raise InputError(f"prior network expects pooled condition features of size {self.cond_dim}, got {None if c is None else c.shape[-1]}")
                c = c.to(h.dtype)
            h = torch.cat([h, self.cond_proj(c)], -1)
        if self.guidance_proj is not None:
            h = torch.cat([h, self.guidance_proj(self._guidance_features(g, h))], -1)
        return h

    def _guidance_features(self, g: Tensor | None, h: Tensor) -> Tensor:
        if g is None:
            lo, hi = self.guidance_range
            raise InputError(f"this prior network was trained over guidance scales {lo:g}..{hi:g}; pass the scale in the "
                             "condition: {'class': labels, 'guidance_scale': scales [B]}")
        lo, hi = self.guidance_range
        z = (g.to(h.dtype).reshape(-1) - (lo + hi) / 2) / max((hi - lo) / 2, 1e-6)
        z = z.expand(h.shape[0]) if z.shape[0] == 1 else z
        return torch.stack([z, z * z], -1)

    def forward(self, x_T: Tensor, cond: Cond = None, denoised: Tensor | None = None) -> Tensor:
        return self.head(self.trunk(self.features(x_T, cond, denoised)))
