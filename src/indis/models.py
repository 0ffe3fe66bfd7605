"""Model specs for the CLI and the Python API: `toy:tree[:A|B|AB]`, `toy:gaussian`, `zoo:NAME`,
`python:module:callable`, and (with integrations) `diffusers:PATH` and `edm:PATH`.

A spec resolves to a `ModelHandle`: the Denoiser plus what sampling and training need to know about the
model (shape of one x_T, the kind of condition, a latent decoder if any)."""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .denoiser import Cond, Denoiser
from .errors import IndisError, InputError


@dataclass
class ModelHandle:
    """A loaded model: `denoiser`, `data_shape` of one sample, the condition kind ("none", "class" or "table"),
    `num_classes`, an optional `cond_table` (e.g. prompt embeddings), an optional `decode` (latents -> pixels)."""

    denoiser: Denoiser
    data_shape: tuple[int, ...]
    spec: str = ""
    cond_kind: str = "none"
    num_classes: int = 0
    cond_table: Cond = None
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None
    default_heuristic: str = "edm"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def schedule(self):
        return self.denoiser.schedule

    def cond_spec(self):
        """How teacher samples of this model get their condition (`indis.priors.CondSpec`), or None."""
        from .priors import CondSpec

        if self.cond_kind == "class":
            return CondSpec("class", num_classes=self.num_classes, guidance=self.meta.get("guidance_range"))
        if self.cond_kind == "table":
            return CondSpec("table")
        return None

    def with_guidance(self, scale: float | None) -> "ModelHandle":
        """Classifier-free guidance at `scale` through the model's unconditional input (`meta["uncond"]`, e.g. the
        zoo models' null class); None leaves the model unguided. Returns self."""
        if scale is None:
            return self
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
            raise InputError(f"guidance scale must be a finite number >= 0, got {scale!r}")
        uncond = self.meta.get("uncond")
        if uncond is None:
            raise InputError(f"guidance needs a conditional model with an unconditional input (e.g. zoo:digits-cond); "
                             f"{self.spec or 'this model'} has none")
        self.denoiser.guidance_scale = float(scale)
        self.denoiser.uncond = uncond
        self.meta.pop("guidance_range", None)
        return self

    def with_guidance_range(self, lo: float, hi: float) -> "ModelHandle":
        """Classifier-free guidance with a per-sample scale carried in the condition ({"class": labels,
        "guidance_scale": g}): teacher sets draw g uniformly from [lo, hi] and phi takes it as an input. Returns self."""
        from .priors import check_guidance_range

        lo, hi = check_guidance_range((lo, hi))
        uncond = self.meta.get("uncond")
        if uncond is None or self.cond_kind != "class":
            raise InputError(f"a guidance range needs a class-conditional model with a null class (e.g. zoo:digits-cond); "
                             f"{self.spec or 'this model'} has none")
        self.denoiser.guidance_scale = None
        self.denoiser.uncond = uncond
        self.meta["guidance_range"] = [lo, hi]
        return self


LOADERS: dict[str, Callable[..., ModelHandle]] = {}


def register_loader(prefix: str, fn: Callable[..., ModelHandle]) -> None:
    """Make `prefix:REST` specs resolve through `fn(rest, **options)`."""
    LOADERS[prefix] = fn


def _toy(rest: str, **_: Any) -> ModelHandle:
    from .schedules import FlowMatching
    from .toy import tree_mixture

    parts = rest.split(":")
    if parts[0] != "tree":
        raise InputError(f"unknown toy model {parts[0]!r}; available: toy:tree, toy:tree:A, toy:tree:B, toy:tree:AB")
    classes = parts[1] if len(parts) > 1 else "A"
    if classes not in ("A", "B", "AB"):
        raise InputError(f"toy:tree class must be A, B or AB, got {classes!r}")
    sched = FlowMatching()
    gmm = tree_mixture(classes)
    den = Denoiser(gmm.x0_fn(sched), sched, "x0")
    kind = "class" if classes == "AB" else "none"
    return ModelHandle(den, (2,), f"toy:tree:{classes}", kind, 2 if kind == "class" else 0, default_heuristic="uniform",
                       meta={"mixture": gmm, "classes": classes})


def _zoo(rest: str, **_: Any) -> ModelHandle:
    from .schedules import EDM
    from .zoo import load_zoo

    z = load_zoo(rest)
    unet = z.fn.inner.net if hasattr(z.fn, "inner") else z.fn.net
    den = Denoiser(z.fn, EDM(), z.prediction, bottleneck=unet.mid)
    meta: dict[str, Any] = {"zoo": z}
    if z.num_classes:
        meta["uncond"] = torch.tensor([int(z.num_classes)])  # the learned null label (trained with label dropout)
    return ModelHandle(den, tuple(z.shape), f"zoo:{rest}", "class" if z.num_classes else "none", int(z.num_classes),
                       default_heuristic="edm", meta=meta)


def _python(rest: str, **options: Any) -> ModelHandle:
    if ":" not in rest:
        raise InputError(f"python model spec must be python:module:callable, got python:{rest}")
    mod_name, attr = rest.rsplit(":", 1)
    import os
    import sys

    if "" not in sys.path and os.getcwd() not in sys.path:  # as `python -m`: modules in the current folder import
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise InputError(f"cannot import module {mod_name!r} for python:{rest} ({exc}); it is looked up in the current "
                         "folder and on PYTHONPATH") from exc
    fn = getattr(mod, attr, None)
    if fn is None or not callable(fn):
        raise InputError(f"module {mod_name!r} has no callable {attr!r}")
    try:
        out = fn(**options) if options else fn()
    except IndisError:
        raise
    except Exception as exc:  # the user's factory failed: say which model spec, keep its message
        raise InputError(f"model python:{rest}: {mod_name}.{attr}() raised {type(exc).__name__}: {exc} (run with --debug "
                         "for the traceback)") from exc
    if isinstance(out, ModelHandle):
        out.spec = out.spec or f"python:{rest}"
        return out
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Denoiser):
        return ModelHandle(out[0], tuple(out[1]), f"python:{rest}")
    raise InputError(f"python:{rest} must return an indis.models.ModelHandle or a (Denoiser, data_shape) tuple, got {type(out).__name__}")


register_loader("toy", _toy)
register_loader("zoo", _zoo)
register_loader("python", _python)


def _maybe_register_integrations() -> None:
    for name in ("indis.integrations.diffusers", "indis.integrations.edm"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the integration exists but a dependency is missing: registered lazily
                pass


def load_model(spec: str, **options: Any) -> ModelHandle:
    """Resolve a model spec such as `toy:tree`, `zoo:digits-cond`, `python:pkg.mod:make_model`."""
    if not isinstance(spec, str) or ":" not in spec:
        raise InputError(f"model spec must look like PREFIX:NAME (toy:tree, zoo:digits, python:module:callable, diffusers:PATH, edm:PATH), got {spec!r}")
    prefix, rest = spec.split(":", 1)
    if prefix not in LOADERS:
        _maybe_register_integrations()
    if prefix not in LOADERS:
        raise InputError(f"unknown model prefix {prefix!r}; known: {', '.join(sorted(set(LOADERS) | {'diffusers', 'edm'}))}")
    return LOADERS[prefix](rest, **options)
