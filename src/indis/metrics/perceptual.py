"""Learned perceptual losses for the pixel-domain INDIS loss: LPIPS (needs the user's weights) and ST-LPIPS
(works offline from the weights bundled in the `stlpips-pytorch` wheel).

`perceptual_loss(name, **options)` returns a callable `(x, y) -> [B]` on images in [-1, 1] ([B, C, H, W], C = 1
or 3; grey images are repeated to 3 channels, images smaller than `min_size` are bilinearly upsampled).

- "lpips": LPIPS-Alex (Zhang et al. 2018). Needs the torchvision AlexNet checkpoint (`alexnet-owt-7be5be79.pth`)
  as `backbone_weights=` and the LPIPS linear heads (`lpips/weights/v0.1/alex.pth`) as `lin_weights=` (found in
  an installed `lpips` package if not given). Both are read with `torch.load(weights_only=True)`; no
  torchvision import and no download.
- "stlpips": shift-tolerant LPIPS-Alex (Ghildyal & Liu 2022) with the backbone and heads shipped in
  `stlpips-pytorch` (`weights/vST0.0/alex_shift_tolerant.pth`, loaded with `weights_only=True`; the package's
  own modules are never imported). **ST-LPIPS is a different metric from LPIPS**: an anti-aliased network
  retrained for shift tolerance, so its values are not comparable to the paper's LPIPS numbers; use it as "a
  learned perceptual loss available offline". The architecture below is written from the paper's description
  (blur-pool with a [1, 2, 1] binomial filter and reflection padding after stride-1 conv/max-pool).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError, MissingDependencyError

PERCEPTUAL = ("lpips", "stlpips", "digits-perceptual", "digits-features", "glyphs-features")
_CHANNELS = (64, 192, 384, 256, 256)


class _Blur(nn.Module):
    """Anti-aliased stride-2 downsampling: reflection pad by 2, 3x3 binomial filter, stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        f = a[:, None] * a[None, :]
        self.register_buffer("filt", (f / f.sum())[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


class _STAlex(nn.Module):
    """Shift-tolerant AlexNet features (relu1..relu5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 11, stride=1, padding=2)
        self.blur1a, self.blur1b = _Blur(64), _Blur(64)
        self.conv2 = nn.Conv2d(64, 192, 5, padding=2)
        self.blur2 = _Blur(192)
        self.conv3 = nn.Conv2d(192, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 256, 3, padding=1)
        self.conv5 = nn.Conv2d(256, 256, 3, padding=1)

    def forward(self, x: Tensor) -> list[Tensor]:
        h1 = F.relu(self.blur1a(self.conv1(x)))
        h2 = F.relu(self.conv2(self.blur1b(F.max_pool2d(h1, 3, 1))))
        h3 = F.relu(self.conv3(self.blur2(F.max_pool2d(h2, 3, 1))))
        h4 = F.relu(self.conv4(h3))
        h5 = F.relu(self.conv5(h4))
        return [h1, h2, h3, h4, h5]

    _KEYS = {"net.slice1.0": "conv1", "net.slice2.5": "conv2", "net.slice3.9": "conv3", "net.slice4.11": "conv4",
             "net.slice5.13": "conv5"}


class _Alex(nn.Module):
    """torchvision AlexNet `features` (relu1..relu5), without torchvision."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 11, stride=4, padding=2)
        self.conv2 = nn.Conv2d(64, 192, 5, padding=2)
        self.conv3 = nn.Conv2d(192, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 256, 3, padding=1)
        self.conv5 = nn.Conv2d(256, 256, 3, padding=1)

    def forward(self, x: Tensor) -> list[Tensor]:
        h1 = F.relu(self.conv1(x))
        h2 = F.relu(self.conv2(F.max_pool2d(h1, 3, 2)))
        h3 = F.relu(self.conv3(F.max_pool2d(h2, 3, 2)))
        h4 = F.relu(self.conv4(h3))
        h5 = F.relu(self.conv5(h4))
        return [h1, h2, h3, h4, h5]

    _KEYS = {"features.0": "conv1", "features.3": "conv2", "features.6": "conv3", "features.8": "conv4", "features.10": "conv5"}


class LPIPSAlex(nn.Module):
    """LPIPS distance d(x, y) -> [B] on AlexNet-type features with linear heads; inputs in [-1, 1]."""

    def __init__(self, backbone: nn.Module, min_size: int = 32):
        super().__init__()
        self.net = backbone
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])
        self.min_size = int(min_size)
        self.requires_grad_(False).eval()

    def _prep(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise InputError(f"perceptual loss expects images [B, 1 or 3, H, W] in [-1, 1], got {list(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if min(x.shape[-2:]) < self.min_size:
            f = self.min_size / min(x.shape[-2:])
            x = F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)
        return (x - self.shift.to(x.dtype)) / self.scale.to(x.dtype)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape != y.shape:
            raise InputError(f"perceptual loss needs two image batches of the same shape, got {list(x.shape)} and {list(y.shape)}")
        dt = self.shift.dtype
        fx, fy = self.net(self._prep(x.to(dt))), self.net(self._prep(y.to(dt)))
        total = torch.zeros(x.shape[0], device=x.device, dtype=dt)
        for a, b, lin in zip(fx, fy, self.lins):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((a - b) ** 2).mean((1, 2, 3))
        return total.to(x.dtype)


def _load_state(path: Path, what: str) -> dict[str, Tensor]:
    if not path.is_file():
        raise InputError(f"{what}: no such file '{path}'")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means the file is not a plain state dict
        raise InputError(f"{what}: '{path}' is not a plain PyTorch state dict ({str(exc).splitlines()[0]})") from exc
    if not isinstance(sd, dict):
        raise InputError(f"{what}: '{path}' does not hold a state dict")
    return sd


def _fill(model: LPIPSAlex, sd: dict[str, Tensor], keys: dict[str, str], heads: dict[str, Tensor] | None, what: str) -> None:
    try:
        for src, dst in keys.items():
            conv = getattr(model.net, dst)
            conv.weight.copy_(sd[f"{src}.weight"])
            conv.bias.copy_(sd[f"{src}.bias"])
        hd = heads if heads is not None else sd
        for i, lin in enumerate(model.lins):
            lin.weight.copy_(hd[f"lin{i}.model.1.weight"])
    except (KeyError, RuntimeError) as exc:
        raise InputError(f"{what}: the weights do not fit the expected architecture ({exc})") from exc


def _package_file(package: str, rel: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / rel
    return p if p.is_file() else None


def stlpips(weights: str | Path | None = None, min_size: int = 32) -> LPIPSAlex:
    """ST-LPIPS (AlexNet, shift-tolerant) with the weights of the installed `stlpips-pytorch` (or `weights=`)."""
    if weights is None:
        p = _package_file("stlpips_pytorch", "weights/vST0.0/alex_shift_tolerant.pth")
        if p is None:
            raise MissingDependencyError("stlpips-pytorch", "the offline 'stlpips' perceptual loss (its wheel ships the weights)", extra="perceptual")
    else:
        p = Path(weights)
    m = LPIPSAlex(_STAlex(), min_size)
    with torch.no_grad():
        _fill(m, _load_state(p, "stlpips weights"), _STAlex._KEYS, None, "stlpips weights")
    return m


def lpips(backbone_weights: str | Path | None = None, lin_weights: str | Path | None = None, min_size: int = 32) -> LPIPSAlex:
    """LPIPS-Alex from local files: the torchvision AlexNet checkpoint and the LPIPS v0.1 linear heads."""
    if backbone_weights is None:
        raise InputError("the 'lpips' perceptual loss needs backbone_weights= (a local torchvision AlexNet checkpoint, "
                         "alexnet-owt-7be5be79.pth; nothing is downloaded); for an offline alternative use 'stlpips' "
                         "(a different metric)")
    if lin_weights is None:
        lin_weights = _package_file("lpips", "weights/v0.1/alex.pth")
        if lin_weights is None:
            raise InputError("the 'lpips' perceptual loss needs lin_weights= (lpips' weights/v0.1/alex.pth) or the lpips package installed")
    m = LPIPSAlex(_Alex(), min_size)
    with torch.no_grad():
        _fill(m, _load_state(Path(backbone_weights), "AlexNet backbone"), _Alex._KEYS,
              _load_state(Path(lin_weights), "LPIPS heads"), "lpips weights")
    return m


class DigitsPerceptual(nn.Module):
    """An LPIPS analogue for 8x8 digits built from the shipped digits classifier: after each activation of its
    feature body (three conv stages and the 128-d penultimate layer), unit-normalise every position's channel
    vector, take the squared distance, average over positions and sum over the four layers (LPIPS eq. 1 with unit
    weights: the classifier has no learned heads). Differentiable in both arguments; inputs [B,1,8,8] in [-1, 1].

    Caution: FD-digits is measured in this classifier's penultimate features, so a schedule trained on this loss
    is trained partly on the metric's own feature space."""

    def __init__(self, weights_dir: str | Path | None = None, eps: float = 1e-10):
        super().__init__()
        from ..zoo import load_classifier

        self.body = load_classifier(weights_dir).body
        self.eps = eps

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape != y.shape or tuple(x.shape[1:]) != (1, 8, 8):
            raise InputError(f"the digits perceptual loss takes two [B,1,8,8] batches, got {tuple(x.shape)} and {tuple(y.shape)}")
        p = next(self.body.parameters())
        if p.device != x.device or p.dtype != x.dtype:
            self.body.to(x.device, x.dtype)
        h, b, total = torch.cat([x, y]), x.shape[0], x.new_zeros(x.shape[0])
        for layer in self.body:
            h = layer(h)
            if isinstance(layer, nn.SiLU):
                n = h / (h.pow(2).sum(1, keepdim=True).sqrt() + self.eps)
                d = (n[:b] - n[b:]).pow(2).sum(1)
                total = total + (d.flatten(1).mean(1) if d.dim() > 1 else d)
        return total


class ClassifierFeatureMSE(nn.Module):
    """Mean squared difference of a shipped classifier's penultimate features (the features FD is measured in),
    inputs clamped to [-1, 1] first as the feature extractor does: "digits" (128-d, 8x8) or "glyphs" (256-d, 16x16).
    The analogue of EPD's Inception-feature MSE (`compute_inception_mse_loss`), measured in FID's own space too."""

    def __init__(self, name: str = "digits", weights_dir: str | Path | None = None):
        super().__init__()
        from ..zoo import load_classifier
        from .features import feature_side

        self.name, self.side = name, feature_side(name, "the feature loss's classifier")
        self.body = load_classifier(weights_dir, name=name).body

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        want = (1, self.side, self.side)
        if x.shape != y.shape or tuple(x.shape[1:]) != want:
            raise InputError(f"the {self.name} feature loss takes two [B,1,{self.side},{self.side}] batches, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        p = next(self.body.parameters())
        if p.device != x.device or p.dtype != x.dtype:
            self.body.to(x.device, x.dtype)
        f = self.body(torch.cat([x, y]).clamp(-1.0, 1.0))
        return (f[: x.shape[0]] - f[x.shape[0]:]).pow(2).mean(1)


DigitsFeatureMSE = ClassifierFeatureMSE  # the digits default


def perceptual_loss(name: str, **options: object) -> Callable[[Tensor, Tensor], Tensor]:
    """A perceptual distance `(x, y) -> [B]` on images in [-1, 1]: "lpips" (user weights), "stlpips" (offline),
    "digits-perceptual", "digits-features" (8x8 digits) or "glyphs-features" (16x16 glyphs), from the shipped classifiers."""
    if name == "digits-perceptual":
        return DigitsPerceptual(**options)  # type: ignore[arg-type]
    if name in ("digits-features", "glyphs-features"):
        return ClassifierFeatureMSE(name.split("-")[0], **options)  # type: ignore[arg-type]
    if name == "lpips":
        return lpips(**options)  # type: ignore[arg-type]
    if name in ("stlpips", "st-lpips", "st_lpips"):
        return stlpips(**options)  # type: ignore[arg-type]
    raise InputError(f"unknown perceptual loss {name!r}; choose one of {', '.join(PERCEPTUAL)}")
