"""NVlabs EDM network pickles (`edm:PATH.pkl`) as indis models.

EDM checkpoints (`network-snapshot-*.pkl` of github.com/NVlabs/edm) are Python pickles: loading one runs whatever
code it names, so indis loads them only with an explicit `trust_pickle=True` (CLI `--trust-pickle`). Unpickling
needs the EDM repository's `torch_utils`/`dnnlib` packages importable (put the repository on PYTHONPATH).

The network is an EDM-preconditioned denoiser `net(x, sigma, class_labels) -> D(x; sigma)` (x0 prediction) with
attributes img_channels, img_resolution, label_dim, sigma_min, sigma_max; it is wrapped as
`Denoiser(..., EDM(), prediction="x0")`. Class labels are passed as one-hot vectors (label -1: all zeros).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..denoiser import Cond, Denoiser
from ..errors import InputError
from ..models import ModelHandle, register_loader
from ..schedules import EDM

PICKLE_WARNING = ("EDM checkpoints are Python pickles, and unpickling a file can run arbitrary code on this machine. "
                  "Load only files you trust: pass trust_pickle=True (CLI: --trust-pickle)")


class EDMCall(nn.Module):
    """fn(x, t, cond) for an EDM-preconditioned network; integer labels [B] become one-hot `class_labels`."""

    def __init__(self, net: nn.Module, *, autocast: bool = False):
        super().__init__()
        self.net = net
        self.label_dim = int(getattr(net, "label_dim", 0) or 0)
        self.autocast = bool(autocast)

    def forward(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        labels = None
        if self.label_dim:
            if cond is None:
                labels = torch.zeros(x.shape[0], self.label_dim, device=x.device, dtype=x.dtype)
            elif isinstance(cond, Tensor) and not cond.is_floating_point():
                labels = nn.functional.one_hot(cond.long().clamp(min=0), self.label_dim).to(x.dtype)
                labels = labels * (cond >= 0).to(x.dtype)[:, None]
            elif isinstance(cond, Tensor):
                labels = cond.to(x.dtype)
            else:
                raise InputError("EDM class-conditional networks take integer labels [B] or one-hot vectors [B, label_dim] as cond")
        ctx = torch.autocast(x.device.type, dtype=torch.bfloat16) if self.autocast else torch.autocast(x.device.type, enabled=False)
        with ctx:
            out = self.net(x, t, labels)
        return out.to(x.dtype)


def edm_denoiser(net: nn.Module, *, autocast: bool = False) -> Denoiser:
    """Wrap an EDM-preconditioned network as an x0-predicting Denoiser on the EDM schedule (its sigma range, capped to [0.002, 80])."""
    s_min = max(float(getattr(net, "sigma_min", 0.002) or 0.002), 0.002)
    s_max = min(float(getattr(net, "sigma_max", 80.0) or 80.0), 80.0)
    if not s_min < s_max:
        s_min, s_max = 0.002, 80.0
    return Denoiser(EDMCall(net, autocast=autocast), EDM(t_max=s_max, t_min=s_min), "x0")


def _network_from(obj: Any, path: Path) -> nn.Module:
    if isinstance(obj, dict):
        for key in ("ema", "net", "model"):
            if isinstance(obj.get(key), nn.Module):
                return obj[key]
        found = {k: type(obj[k]).__name__ for k in ("ema", "net", "model") if k in obj}
        held = f"; its {', '.join(f'{k!r} is a {t}' for k, t in found.items())}" if found else ""
        raise InputError(f"'{path}' holds a dict with no torch network under 'ema', 'net' or 'model' (keys: "
                         f"{sorted(map(str, obj))[:8]}{held}); an NVlabs EDM snapshot keeps its network as a torch module "
                         "under 'ema'")
    if isinstance(obj, nn.Module):
        return obj
    raise InputError(f"'{path}' does not hold an EDM network (got {type(obj).__name__})")


def load_edm(path: str | Path, *, trust_pickle: bool = False, device: str | torch.device = "cpu",
             autocast: bool = False, **_: Any) -> ModelHandle:
    """Load an NVlabs EDM network pickle as a ModelHandle; refuses unless `trust_pickle=True`."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"edm:{path}: no such file; pass the path of an EDM network pickle (network-snapshot-*.pkl)")
    if not trust_pickle:
        raise InputError(f"edm:{path}: refusing to load. {PICKLE_WARNING}.")
    try:
        with open(p, "rb") as f:
            obj = pickle.load(f)  # noqa: S301 - explicitly trusted by the caller
    except ModuleNotFoundError as exc:
        raise InputError(f"edm:{path}: unpickling needs the module {exc.name!r}; put the NVlabs EDM repository (with torch_utils and dnnlib) on PYTHONPATH") from exc
    except (pickle.UnpicklingError, EOFError, AttributeError) as exc:
        raise InputError(f"edm:{path}: not a readable pickle ({exc})") from exc
    net = _network_from(obj, p).eval().requires_grad_(False).to(device)
    den = edm_denoiser(net, autocast=autocast)
    ch = int(getattr(net, "img_channels", 0) or 0)
    res = int(getattr(net, "img_resolution", 0) or 0)
    if not (ch and res):
        raise InputError(f"edm:{path}: the network lacks img_channels/img_resolution, so the data shape is unknown")
    ncls = int(getattr(net, "label_dim", 0) or 0)
    return ModelHandle(den, (ch, res, res), f"edm:{path}", "class" if ncls else "none", ncls,
                       default_heuristic="edm", meta={"network": net})


register_loader("edm", lambda rest, **options: load_edm(rest, **options))
