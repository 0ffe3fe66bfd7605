"""Image metrics for real models: FID and KID (torchmetrics), CLIP score and CMMD (a local CLIP).

Nothing here downloads weights. Each metric needs either a feature network you pass in (`feature=`, any
`nn.Module` mapping images to [B, D] features with a `num_features` attribute, e.g. a small classifier trained
offline) or local weight files: `inception_weights=` (the FID Inception checkpoint
`weights-inception-2015-12-05-6726825d.pth`, used through torch-fidelity) and `clip_model=` (a local folder
of a transformers CLIP model). Missing packages raise MissingDependencyError, missing files InputError, each
naming the fix; no metric ever returns a made-up number.

Images are float tensors [B, 3, H, W] in [0, 1] (FID/KID/CMMD) or [0, 1] for CLIP score.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from ..errors import InputError, MissingDependencyError


def _torchmetrics(feature: str) -> Any:
    try:
        import torchmetrics  # noqa: F401
        import torchmetrics.image  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("torchmetrics", feature, extra="metrics") from exc
    return torchmetrics


def _check_images(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] not in (1, 3):
        raise InputError(f"{name} must be images [B, 3, H, W] (or [B, 1, H, W]) in [0, 1], got {getattr(x, 'shape', type(x).__name__)}")
    if not x.is_floating_point():
        raise InputError(f"{name} must be floating point in [0, 1], got {x.dtype}")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def inception_feature(inception_weights: str | Path, features: str = "2048") -> nn.Module:
    """The FID Inception-v3 feature extractor from a local checkpoint (needs torch-fidelity; no download)."""
    p = Path(os.path.expanduser(str(inception_weights)))
    if not p.is_file():
        raise InputError(f"inception_weights: no such file '{p}'; FID/KID need the local Inception checkpoint "
                         "(weights-inception-2015-12-05-6726825d.pth) or a feature= network of your own")
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as exc:
        raise MissingDependencyError("torch-fidelity", "FID/KID with Inception weights") from exc

    class _Inception(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = FeatureExtractorInceptionV3("inception-v3-compat", [features], feature_extractor_weights_path=str(p))
            self.num_features = int(features)

        def forward(self, x: Tensor) -> Tensor:  # torchmetrics passes uint8 or [0, 1] floats per `normalize`
            if x.is_floating_point():
                x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
            return self.net(x)[0].reshape(x.shape[0], -1)

    return _Inception()


def _feature(feature: nn.Module | None, inception_weights: str | Path | None, what: str) -> nn.Module:
    if feature is not None:
        if not isinstance(feature, nn.Module):
            raise InputError(f"{what}: feature must be an nn.Module mapping images to [B, D] features")
        if not isinstance(getattr(feature, "num_features", None), int):
            raise InputError(f"{what}: the feature module needs an integer attribute num_features (its output size D)")
        return feature
    if inception_weights is None:
        raise InputError(f"{what} needs feature= (an nn.Module with num_features) or inception_weights= (a local Inception "
                         "checkpoint); no weights are downloaded")
    return inception_feature(inception_weights)


def _batches(x: Tensor, batch_size: int) -> Sequence[Tensor]:
    return [x[i : i + batch_size] for i in range(0, x.shape[0], batch_size)]


def fid(real: Tensor, fake: Tensor, *, feature: nn.Module | None = None, inception_weights: str | Path | None = None,
        batch_size: int = 64) -> float:
    """Frechet distance between the feature statistics of real and generated images ([B, 3, H, W] in [0, 1])."""
    _torchmetrics("FID")
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = _check_images(real, "real"), _check_images(fake, "fake")
    if min(real.shape[0], fake.shape[0]) < 2:
        raise InputError("FID needs at least 2 real and 2 generated images")
    m = FrechetInceptionDistance(feature=_feature(feature, inception_weights, "FID"), normalize=True).to(real.device)
    with torch.no_grad():
        for b in _batches(real, batch_size):
            m.update(b, real=True)
        for b in _batches(fake, batch_size):
            m.update(b, real=False)
        return float(m.compute())


def kid(real: Tensor, fake: Tensor, *, feature: nn.Module | None = None, inception_weights: str | Path | None = None,
        subset_size: int = 1000, subsets: int = 100, batch_size: int = 64) -> tuple[float, float]:
    """Kernel Inception distance (mean, std over subsets); subset_size is capped at the smaller set size."""
    _torchmetrics("KID")
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = _check_images(real, "real"), _check_images(fake, "fake")
    n = min(real.shape[0], fake.shape[0])
    if n < 2:
        raise InputError("KID needs at least 2 real and 2 generated images")
    m = KernelInceptionDistance(feature=_feature(feature, inception_weights, "KID"), subsets=subsets,
                                subset_size=min(subset_size, n), normalize=True).to(real.device)
    with torch.no_grad():
        for b in _batches(real, batch_size):
            m.update(b, real=True)
        for b in _batches(fake, batch_size):
            m.update(b, real=False)
        mean, std = m.compute()
    return float(mean), float(std)


def _clip_folder(clip_model: str | Path | None, what: str) -> Path:
    if clip_model is None:
        raise InputError(f"{what} needs clip_model= (a local folder with a transformers CLIP model and processor); nothing is downloaded")
    p = Path(os.path.expanduser(str(clip_model)))
    if not (p.is_dir() and (p / "config.json").is_file()):
        raise InputError(f"{what}: clip_model '{p}' is not a local transformers model folder (no config.json)")
    return p


def clip_score(images: Tensor, prompts: Sequence[str], *, clip_model: str | Path | None = None) -> float:
    """CLIP score (torchmetrics, 100 * mean cosine similarity) of images [B, 3, H, W] in [0, 1] and their prompts."""
    p = _clip_folder(clip_model, "CLIP score")
    _torchmetrics("CLIP score")
    try:
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("transformers", "CLIP score", extra="diffusers") from exc
    from torchmetrics.multimodal.clip_score import CLIPScore

    images = _check_images(images, "images")
    if len(prompts) != images.shape[0]:
        raise InputError(f"clip_score needs one prompt per image, got {len(prompts)} prompts for {images.shape[0]} images")
    m = CLIPScore(model_name_or_path=str(p))
    with torch.no_grad():
        m.update((images.clamp(0, 1) * 255).round().to(torch.uint8), list(prompts))
        return float(m.compute())


def clip_image_embedder(clip_model: str | Path, device: str | torch.device = "cpu") -> Callable[[Tensor], Tensor]:
    """images [B, 3, H, W] in [0, 1] -> L2-normalised CLIP image embeddings, from a local transformers CLIP folder."""
    p = _clip_folder(clip_model, "CMMD")
    try:
        from transformers import CLIPImageProcessor, CLIPModel
    except ImportError as exc:
        raise MissingDependencyError("transformers", "CMMD", extra="diffusers") from exc
    model = CLIPModel.from_pretrained(str(p), local_files_only=True).eval().to(device)
    proc = CLIPImageProcessor.from_pretrained(str(p), local_files_only=True)

    def embed(x: Tensor) -> Tensor:
        inputs = proc(images=list(x.clamp(0, 1).cpu()), return_tensors="pt", do_rescale=False)
        with torch.no_grad():
            e = model.get_image_features(pixel_values=inputs["pixel_values"].to(device))
        e = getattr(e, "pooler_output", e)
        return torch.nn.functional.normalize(e.float(), dim=-1)

    return embed


def mmd_rbf(x: Tensor, y: Tensor, sigma: float = 10.0, scale: float = 1000.0) -> float:
    """Unbiased squared MMD with a Gaussian kernel exp(-|a-b|^2 / (2 sigma^2)), times `scale` (CMMD's convention)."""
    x, y = x.double(), y.double()
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise InputError("MMD needs at least 2 samples on each side")
    g = 1.0 / (2 * sigma**2)
    k = lambda a, b: torch.exp(-g * torch.cdist(a, b).pow(2))  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m, n = x.shape[0], y.shape[0]
    val = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1)) - 2 * kxy.mean()
    return float(scale * val)


def cmmd(real: Tensor, fake: Tensor, *, clip_model: str | Path | None = None,
         embed: Callable[[Tensor], Tensor] | None = None, batch_size: int = 64) -> float:
    """CMMD (Jayasumana et al. 2024): MMD between CLIP image embeddings, RBF sigma 10, scaled by 1000.
    `embed` may replace the CLIP model (any images -> [B, D] embedding function)."""
    real, fake = _check_images(real, "real"), _check_images(fake, "fake")
    if embed is None:
        embed = clip_image_embedder(_clip_folder(clip_model, "CMMD"))
    er = torch.cat([embed(b) for b in _batches(real, batch_size)])
    ef = torch.cat([embed(b) for b in _batches(fake, batch_size)])
    return mmd_rbf(er, ef)
