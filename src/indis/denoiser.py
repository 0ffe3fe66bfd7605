"""`Denoiser`: wraps any model callable fn(x, t, cond) and turns its output into x0 and eps estimates."""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from .errors import InputError, ModelOutputError
from .schedules import NoiseSchedule

PREDICTIONS = ("eps", "x0", "v", "velocity")
_ALIASES = {"epsilon": "eps", "sample": "x0", "data": "x0", "v_prediction": "v", "flow": "velocity"}

Cond = Tensor | Mapping[str, Tensor] | None


def bcast(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample vector [B] (or scalar) so it broadcasts against x [B, ...]."""
    if v.dim() == 0:
        return v
    return v.reshape(v.shape[0], *([1] * (x.dim() - 1)))


GUIDANCE_KEY = "guidance_scale"


def split_guidance(cond: Cond) -> tuple[Cond, Tensor | None]:
    """A condition that carries per-sample guidance scales (a dict with a "guidance_scale" entry [B], e.g.
    {"class": labels, "guidance_scale": g}) -> (the model's own condition, g); any other condition -> (cond, None).
    A lone "class" entry is unwrapped to the label tensor."""
    if not isinstance(cond, Mapping) or GUIDANCE_KEY not in cond:
        return cond, None
    rest = {k: v for k, v in cond.items() if k != GUIDANCE_KEY}
    if set(rest) == {"class"}:
        return rest["class"], cond[GUIDANCE_KEY]
    return (rest or None), cond[GUIDANCE_KEY]


def _cat_cond(a: Cond, b: Cond, batch: int) -> Cond:
    """Stack cond and the unconditional cond along the batch axis for one CFG call."""
    if a is None and b is None:
        return None
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)) or set(a) != set(b):
            raise InputError("cond and uncond must both be dicts with the same keys for classifier-free guidance")
        return {k: _cat_cond(a[k], b[k], batch) for k in a}
    if a is None or b is None:
        raise InputError("classifier-free guidance needs both cond and uncond (pass uncond= to Denoiser)")
    if b.shape[0] == 1 and batch != 1:
        b = b.expand(batch, *b.shape[1:])
    return torch.cat([a, b.to(a.device)], 0)


class Denoiser(nn.Module):
    """A model plus its noise schedule and output type.

    `fn(x, t, cond)` receives x [B, ...], per-sample times t [B] in the schedule's own time convention and an
    optional condition, and returns `prediction`: "eps" (noise), "x0" (clean data), "v" (v-prediction,
    v = alpha * eps - sigma * x0) or "velocity" (flow matching, dx_t/dt = alpha' x0 + sigma' eps).
    With `guidance_scale` g != 1, conditional and unconditional outputs come from one batched call and are
    combined as u + g (c - u) (classifier-free guidance); `uncond` is the unconditional condition. A condition
    with a "guidance_scale" entry gives each sample its own g (`split_guidance`; needs `uncond`). `bottleneck`
    optionally names the model's U-Net bottleneck module (the feature AMED's predictor reads).
    """

    def __init__(
        self,
        fn: Callable[..., Tensor],
        schedule: NoiseSchedule,
        prediction: str = "eps",
        *,
        guidance_scale: float | Tensor | None = None,
        uncond: Cond = None,
        bottleneck: nn.Module | None = None,
    ):
        super().__init__()
        if not callable(fn):
            raise InputError(f"Denoiser fn must be callable fn(x, t, cond), got {type(fn).__name__}")
        if not isinstance(schedule, NoiseSchedule):
            raise InputError(f"Denoiser schedule must be an indis noise schedule (indis.EDM(), indis.VP(), indis.FlowMatching()), got {type(schedule).__name__}")
        prediction = _ALIASES.get(prediction, prediction)
        if prediction not in PREDICTIONS:
            raise InputError(f"unknown prediction {prediction!r}; expected one of {', '.join(PREDICTIONS)}")
        if guidance_scale is not None and not isinstance(guidance_scale, Tensor):
            if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale):
                raise InputError(f"guidance_scale must be a finite number (or a per-sample tensor), got {guidance_scale!r}")
        if isinstance(fn, nn.Module):
            self.fn = fn
        else:
            self._fn = fn
        self.schedule = schedule
        self.prediction = prediction
        self.guidance_scale = guidance_scale
        self.uncond = uncond
        # the model's U-Net bottleneck (a submodule whose forward output AMED's predictor reads); not registered as
        # a child of the Denoiser: it already belongs to the model
        object.__setattr__(self, "bottleneck", bottleneck)

    @property
    def device(self) -> torch.device:
        """Where the model's weights live (its first parameter or buffer); cpu for a weightless model such as an
        exact mixture, which follows its inputs."""
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    @property
    def model(self) -> Callable[..., Tensor]:
        return self.fn if "fn" in self._modules else self._fn

    @staticmethod
    def _check_cond(cond: Cond, batch: int) -> None:
        rows = [cond] if isinstance(cond, Tensor) else list(cond.values()) if isinstance(cond, Mapping) else []
        for v in rows:
            if isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] not in (1, batch):
                raise InputError(f"cond has {v.shape[0]} rows for a batch of {batch} samples (one row per sample, or 1 for all)")

    def raw(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """The model's native output at per-sample times t [B], with classifier-free guidance applied."""
        cond, g_rows = split_guidance(cond)
        self._check_cond(cond, x.shape[0])
        g = self.guidance_scale
        if g_rows is not None:
            if self.uncond is None:
                raise InputError("the condition carries per-sample guidance scales but the Denoiser has no uncond "
                                 "(the unconditional condition for classifier-free guidance)")
            if not isinstance(g_rows, Tensor) or g_rows.dim() != 1 or g_rows.shape[0] not in (1, x.shape[0]):
                raise InputError(f"cond['{GUIDANCE_KEY}'] must be a tensor [B] of guidance scales for a batch of {x.shape[0]}")
            g = g_rows
        if g is None or (not isinstance(g, Tensor) and float(g) == 1.0):
            out = self.model(x, t, cond)
            return self._check_shape(out, x)
        b = x.shape[0]
        out = self.model(torch.cat([x, x]), torch.cat([t, t]), _cat_cond(cond, self.uncond, b))
        out = self._check_shape(out, torch.cat([x, x]))
        c, u = out[:b], out[b:]
        g = bcast(torch.as_tensor(g, dtype=out.dtype, device=out.device), x)
        return u + g * (c - u)

    @staticmethod
    def _check_shape(out: Any, x: Tensor) -> Tensor:
        if not isinstance(out, Tensor):
            # diffusers models return an output object with `.sample`
            out = getattr(out, "sample", out[0] if isinstance(out, (tuple, list)) and out else out)
        if not isinstance(out, Tensor):
            raise ModelOutputError(f"the model returned {type(out).__name__}, not a torch.Tensor of the input's shape "
                                   f"{tuple(x.shape)}; make fn(x, t, cond) return a tensor")
        if out.shape != x.shape:
            raise ModelOutputError(f"model returned shape {tuple(out.shape)} for input shape {tuple(x.shape)}; the model output must have the input's shape")
        return out

    def forward(self, x: Tensor, t: Tensor, cond: Cond = None) -> tuple[Tensor, Tensor]:
        """Return (x0, eps) estimates at per-sample times t [B], converted from the native prediction."""
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        out = self.raw(x, t, cond)
        return self.convert(out, x, t)

    def convert(self, out: Tensor, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Turn a native output at times t into (x0, eps); each form uses the division that stays finite."""
        s = self.schedule
        a, sg = bcast(s.alpha(t), x).to(x.dtype), bcast(s.sigma(t), x).to(x.dtype)
        p = self.prediction
        if p == "eps":
            return (x - sg * out) / a, out
        if p == "x0":
            return out, (x - a * out) / sg
        if p == "v":
            n = a * a + sg * sg
            return (a * x - sg * out) / n, (sg * x + a * out) / n
        ad, sd = bcast(s.alpha_dot(t), x).to(x.dtype), bcast(s.sigma_dot(t), x).to(x.dtype)
        det = a * sd - sg * ad
        return (sd * x - sg * out) / det, (a * out - ad * x) / det
