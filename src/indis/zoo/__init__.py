"""Shipped, self-trained models: an EDM denoiser on scikit-learn's 8x8 digits and a digits feature classifier.

``load_zoo("zoo:digits-cond")`` is a class-conditional EDM x0-predictor (VE, sigma in [0.002, 80]);
``load_zoo("zoo:digits")`` serves the same network with its learned null label (trained by label dropout), i.e. the
unconditional model. Both stand in for the CIFAR-10 EDM checkpoints of the paper's table-1 protocol.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ..errors import InputError
from .nets import DigitsClassifier, EDMPrecond, GlyphsClassifier, TinyUNet

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
ZOO_NAMES: tuple[str, ...] = ("zoo:digits", "zoo:digits-cond", "zoo:glyphs")
#: the shipped feature classifiers (and data families): name -> image side in pixels (grey, [-1, 1])
CLASSIFIERS: dict[str, int] = {"digits": 8, "glyphs": 16}
#: name -> (weights stem, served unconditionally through the null label?, data family: its classifier and trainer)
_SERVED = {"zoo:digits": ("digits-cond", True, "digits"),
           "zoo:digits-cond": ("digits-cond", False, "digits"),
           "zoo:glyphs": ("glyphs-cond", False, "glyphs")}

__all__ = ["ZOO_NAMES", "WEIGHTS_DIR", "CLASSIFIERS", "ZooModel", "load_zoo", "load_classifier", "classifier_for"]


@dataclass
class ZooModel:
    """A shipped denoiser: ``fn(x, sigma, cond) -> x0`` with x [B,C,H,W], sigma [B] (EDM sigma = t), cond [B] or None."""

    name: str
    fn: nn.Module
    shape: tuple[int, int, int]
    num_classes: int
    sigma_data: float
    meta: dict = field(default_factory=dict)
    schedule_name: str = "edm"
    prediction: str = "x0"


class NullLabel(nn.Module):
    """Unconditional view of a conditional denoiser: every sample gets the learned null label; `cond` is ignored."""

    def __init__(self, inner: EDMPrecond):
        super().__init__()
        self.inner = inner
        self.sigma_data = inner.sigma_data

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.inner(x, sigma, None)


def _freeze(m: nn.Module) -> nn.Module:
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _read_meta(stem: str, weights_dir: Path, retrain: str = "indis zoo train digits") -> dict:
    path = weights_dir / f"{stem}.json"
    if not path.exists():
        raise InputError(f"zoo weights missing: {path} not found (reinstall indis or run `{retrain}`)")
    return json.loads(path.read_text())


def _full_name(name: str) -> str:
    if not isinstance(name, str):
        raise InputError(f"name must be a string, one of {', '.join(ZOO_NAMES)}; got {type(name).__name__}")
    full = name if name.startswith("zoo:") else f"zoo:{name}"
    if full not in ZOO_NAMES:
        raise InputError(f"unknown zoo model name {name!r}; valid names: {', '.join(ZOO_NAMES)}")
    return full


def classifier_for(name: str) -> str:
    """The shipped classifier whose features measure a zoo model's samples (zoo:digits[-cond] -> digits, zoo:glyphs ->
    glyphs)."""
    return _SERVED[_full_name(name)][2]


def load_zoo(name: str, weights_dir: str | Path | None = None) -> ZooModel:
    """Load a shipped zoo model by name (one of `ZOO_NAMES`; the 'zoo:' prefix is optional).

    ``weights_dir`` overrides the packaged weights folder (e.g. the output of ``indis zoo train digits``).
    """
    full = _full_name(name)
    wdir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    stem, null_view, family = _SERVED[full]
    meta = _read_meta(stem, wdir, f"indis zoo train {family}")
    r = meta["recipe"]
    a = r["arch"]
    net = TinyUNet(in_ch=a["in_ch"], ch=tuple(a["ch"]), emb_dim=a["emb_dim"], num_classes=a["num_classes"])
    net.load_state_dict({k: v.float() for k, v in load_file(str(wdir / meta["weights"])).items()})
    model = EDMPrecond(net, r["sigma_data"])
    meta = dict(meta, served_as=full)
    if null_view:
        fn: nn.Module = NullLabel(model)
        num_classes = 0
        meta["served_note"] = "unconditional: the class-conditional network with the learned null label for all samples"
    else:
        fn, num_classes = model, a["num_classes"]
    res = CLASSIFIERS[family]
    return ZooModel(name=full, fn=_freeze(fn), shape=(a["in_ch"], res, res), num_classes=num_classes,
                    sigma_data=float(r["sigma_data"]), meta=meta)


def load_classifier(weights_dir: str | Path | None = None, name: str = "digits") -> nn.Module:
    """A shipped feature classifier (eval mode, frozen): "digits" (inputs [N,1,8,8] in [-1, 1]) or "glyphs"
    ([N,1,16,16])."""
    if name not in CLASSIFIERS:
        raise InputError(f"classifier name must be one of {', '.join(map(repr, CLASSIFIERS))}, got {name!r}")
    wdir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    meta = _read_meta(f"{name}-classifier", wdir, f"indis zoo train {name}-classifier")
    model = DigitsClassifier() if name == "digits" else GlyphsClassifier()
    model.load_state_dict({k: v.float() for k, v in load_file(str(wdir / meta["weights"])).items()})
    model.meta = meta  # type: ignore[attr-defined]
    return _freeze(model)  # type: ignore[return-value]
