"""Small EDM-preconditioned U-Net and the digits classifier (plain torch)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError


def _groups(ch: int) -> int:
    return min(8, ch // 4) if ch >= 8 else 1


class FourierNoiseEmbedding(nn.Module):
    """Sinusoidal embedding of the scalar noise level c_noise (positional, fixed frequencies)."""

    def __init__(self, dim: int, max_positions: int = 10000):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(max_positions) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        # c_noise is ln(sigma)/4 in roughly [-1.6, 1.1]; scale it up so the low frequencies vary.
        a = (c_noise.float() * 250.0)[:, None] * self.freqs[None]
        return torch.cat([a.cos(), a.sin()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(h)


class SelfAttention(nn.Module):
    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class TinyUNet(nn.Module):
    """Raw network F(c_in x, c_noise, class): one down/up level (8x8 -> 4x4), attention at 4x4."""

    def __init__(self, in_ch: int = 1, ch: tuple[int, int] = (32, 64), emb_dim: int = 128, num_classes: int = 0):
        super().__init__()
        c1, c2 = ch
        self.num_classes = num_classes
        self.noise_emb = FourierNoiseEmbedding(emb_dim // 2)
        self.emb_mlp = nn.Sequential(nn.Linear(emb_dim // 2, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # index num_classes is the learned null label (label dropout / unconditional sampling)
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None
        self.inp = nn.Conv2d(in_ch, c1, 3, padding=1)
        self.enc1 = ResBlock(c1, c1, emb_dim)
        self.down = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.enc2 = ResBlock(c2, c2, emb_dim)
        self.attn = SelfAttention(c2)
        self.mid = ResBlock(c2, c2, emb_dim)
        self.up = nn.ConvTranspose2d(c2, c1, 2, stride=2)
        self.dec1 = ResBlock(c1 + c1, c1, emb_dim)
        self.out_norm = nn.GroupNorm(_groups(c1), c1)
        self.out = nn.Conv2d(c1, in_ch, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        emb = self.emb_mlp(self.noise_emb(c_noise))
        if self.class_emb is not None:
            if labels is None:
                labels = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            elif labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > self.num_classes):
                raise InputError(f"cond must hold class labels in 0..{self.num_classes - 1} "
                                 f"(or {self.num_classes} for the null label), got {labels.tolist()[:8]}...")
            emb = emb + self.class_emb(labels)
        emb = F.silu(emb)
        h1 = self.enc1(self.inp(x), emb)
        h = self.mid(self.attn(self.enc2(self.down(h1), emb)), emb)
        h = self.dec1(torch.cat([self.up(h), h1], 1), emb)
        return self.out(F.silu(self.out_norm(h)))


class EDMPrecond(nn.Module):
    """EDM preconditioning (Karras et al. 2022, eq. 7): D(x; sigma) = c_skip x + c_out F(c_in x, c_noise).

    Called as ``fn(x, sigma, cond)`` with x [B,C,H,W], sigma a float tensor [B] (or scalar) and cond a LongTensor
    [B] of class labels or None (null label); returns the x0 prediction in x's dtype.
    """

    def __init__(self, net: TinyUNet, sigma_data: float):
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: torch.Tensor | None = None) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        if cond is not None:
            if (isinstance(cond, torch.Tensor) and (cond.is_floating_point() or cond.is_complex())) or isinstance(cond, float):
                raise InputError(f"class labels must be integers, got {getattr(cond, 'dtype', type(cond).__name__)}")
            cond = torch.as_tensor(cond, dtype=torch.long, device=x.device).reshape(-1)
            if cond.numel() not in (1, x.shape[0]):
                raise InputError(f"got {cond.numel()} class labels for a batch of {x.shape[0]}")
            if cond.numel() == 1:
                cond = cond.expand(x.shape[0])
        sd = self.sigma_data
        s = sigma[:, None, None, None]
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        c_noise = sigma.log() / 4
        out = c_skip * x + c_out * self.net(c_in * x, c_noise, cond)
        return out.to(dtype)


class DigitsClassifier(nn.Module):
    """Small CNN for 8x8 digits in [-1, 1]; `features` is the 128-d penultimate layer."""

    num_features = 128

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.SiLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.GroupNorm(8, 64), nn.SiLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.GroupNorm(8, 64), nn.SiLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 4, self.num_features), nn.SiLU(),
        )
        self.head = nn.Linear(self.num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class GlyphsClassifier(nn.Module):
    """CNN for 16x16 glyphs in [-1, 1] (62 classes); `features` is the 256-d penultimate layer (FD-glyphs)."""

    num_features = 256

    def __init__(self, num_classes: int = 62):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 48, 3, padding=1), nn.GroupNorm(8, 48), nn.SiLU(),
            nn.Conv2d(48, 64, 3, padding=1), nn.GroupNorm(8, 64), nn.SiLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.GroupNorm(8, 128), nn.SiLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(128, 128, 3, padding=1), nn.GroupNorm(8, 128), nn.SiLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(128 * 4, self.num_features), nn.SiLU(),
        )
        self.head = nn.Linear(self.num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
