"""diffusers models as indis Denoisers: pixel UNets, Stable Diffusion, FLUX and LTX-Video.

Per-model adapters (`unet_denoiser`, `sd_denoiser`, `flux_denoiser`, `ltx_denoiser`) return an `indis.Denoiser`
with the right schedule, prediction type and time convention; `from_pipeline(pipe)` builds a `ModelHandle` from a
pipeline object and `load_diffusers(path)` from a folder written by `pipe.save_pretrained(path)` (the
`diffusers:PATH` model spec). `sample_pipeline(pipe, ...)` runs the pipeline's own prompt encoding, latent
preparation and decoding around indis' differentiable solver loop with a per-sample discretization.

Conventions (the state x the solvers see):
- pixel UNet2DModel / Stable Diffusion: VP coordinates x = alpha x0 + sigma eps, time = the (fractional) DDPM
  index in [0, num_train_timesteps - 1]; the model gets that index as its timestep.
- FLUX: flow matching x = (1 - t) x0 + t eps with t in [0, 1]; the state is the *unpacked* latent [B, C, H, W]
  (H, W even); packing to [B, H W / 4, 4 C] tokens and the image/text position ids are done per call. The
  transformer gets timestep t (the pipeline passes sigma * 1000 / 1000) and the distilled guidance value.
- LTX-Video: flow matching on unpacked video latents [B, C, F, H, W]; the transformer gets timestep 1000 t.

diffusers is imported lazily, so `import indis.integrations.diffusers` works without it (and registers the
`diffusers:` prefix); using an adapter without diffusers raises MissingDependencyError.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..denoiser import Cond, Denoiser
from ..errors import InputError, MissingDependencyError
from ..models import ModelHandle, register_loader
from ..schedules import VP, FlowMatching

FAMILIES = ("unet", "sd", "flux", "ltx")
_PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0", "flow_prediction": "velocity"}


def __getattr__(name: str) -> Any:
    """`IndisScheduler` subclasses diffusers classes, so it is defined on first use (diffusers stays optional);
    `sample_pipeline`/`encode_prompts` live in `diffusers_pipeline`."""
    if name == "IndisScheduler":
        _require_diffusers()
        from .diffusers_scheduler import IndisScheduler

        return IndisScheduler
    if name in ("sample_pipeline", "encode_prompts"):
        from . import diffusers_pipeline

        return getattr(diffusers_pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _require_diffusers() -> Any:
    try:
        import diffusers
    except ImportError as exc:
        raise MissingDependencyError("diffusers", "diffusers models", extra="diffusers") from exc
    return diffusers


# ----------------------------------------------------------------------------------------------------------
# Schedules from scheduler configs
# ----------------------------------------------------------------------------------------------------------
def _cfg(scheduler_or_config: Any) -> Mapping[str, Any]:
    cfg = getattr(scheduler_or_config, "config", scheduler_or_config)
    if not isinstance(cfg, Mapping):
        raise InputError(f"expected a diffusers scheduler or its config dict, got {type(scheduler_or_config).__name__}")
    return cfg


def vp_schedule(scheduler_or_config: Any) -> VP:
    """The discrete VP schedule (DDPM index time) of a DDPM-style scheduler config (linear / scaled_linear betas)."""
    cfg = _cfg(scheduler_or_config)
    if isinstance(cfg.get("schedule"), Mapping) and "times" in cfg:  # an IndisScheduler: it records its schedule
        from ..schedules import schedule_from_config

        sched = schedule_from_config(cfg["schedule"])
        if not isinstance(sched, VP):
            raise InputError(f"this IndisScheduler replays a {sched.name} schedule, not a DDPM-style VP one")
        return sched
    if cfg.get("trained_betas") is not None:
        raise InputError("schedulers with trained_betas are not supported; indis needs beta_schedule 'linear' or 'scaled_linear'")
    kind = cfg.get("beta_schedule", "linear")
    if kind not in ("linear", "scaled_linear"):
        raise InputError(f"scheduler beta_schedule {kind!r} is not supported; indis' discrete VP schedule handles 'linear' and 'scaled_linear'")
    return VP(discrete=True, num_train_timesteps=int(cfg.get("num_train_timesteps", 1000)),
              beta_start=float(cfg.get("beta_start", 1e-4)), beta_end=float(cfg.get("beta_end", 0.02)), beta_schedule=kind)


def prediction_type(scheduler_or_config: Any) -> str:
    """indis prediction name ('eps', 'v', 'x0') of a scheduler's `prediction_type`."""
    p = _cfg(scheduler_or_config).get("prediction_type", "epsilon")
    if p not in _PREDICTIONS:
        raise InputError(f"scheduler prediction_type {p!r} is not supported; expected one of {', '.join(_PREDICTIONS)}")
    return _PREDICTIONS[p]


def flow_schedule(t_max: float = 0.999) -> FlowMatching:
    """Flow matching on t in [0, 1] for FLUX/LTX. Explicit `times` may start at 1.0 (pure noise, as the pipelines do)
    with the EDM-form solvers; learned discretizations start at t_max < 1, because INDIS' shift/scale re-derive
    x0 = (x - t eps) / (1 - t), which is undefined at t = 1."""
    return FlowMatching(t_max=t_max, t_min=0.0)


def calculate_shift(image_seq_len: int, scheduler_or_config: Any = None) -> float:
    """The FLUX/LTX resolution-dependent shift mu of a scheduler config (diffusers' `calculate_shift`)."""
    cfg = _cfg(scheduler_or_config) if scheduler_or_config is not None else {}
    from ..discretizations.heuristics import rds_mu

    return rds_mu(int(image_seq_len), int(cfg.get("base_image_seq_len", 256)), int(cfg.get("max_image_seq_len", 4096)),
                  float(cfg.get("base_shift", 0.5)), float(cfg.get("max_shift", 1.15)))


# ----------------------------------------------------------------------------------------------------------
# Model calls fn(x, t, cond) -> native output, as nn.Modules (so .to(device) and parameters work)
# ----------------------------------------------------------------------------------------------------------
class _Call(nn.Module):
    """Shared options: bf16 autocast on CUDA (`autocast=True`) and `torch.compile` of the model (`compile=True`).

    Low precision: latents and embeddings are cast to the model's dtype (e.g. bfloat16), the per-sample timesteps are
    always passed in float32 (bfloat16 keeps 8 bits: DDPM indices 500 and 501 would merge), and the output returns
    in the solver's dtype, so times, shift, scale and the solver's combinations stay in float32."""

    def __init__(self, model: nn.Module, *, autocast: bool = False, compile: bool = False,
                 autocast_dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.model = model
        self.autocast, self.autocast_dtype = bool(autocast), autocast_dtype
        self._compiled: Callable[..., Any] | None = None
        self.compile = bool(compile)

    def run(self, **kw: Any) -> Tensor:
        fn = self.model
        if self.compile:
            if self._compiled is None:
                self._compiled = torch.compile(self.model)
            fn = self._compiled
        ref = kw["hidden_states"] if "hidden_states" in kw else kw["sample"]
        ctx = torch.autocast(ref.device.type, dtype=self.autocast_dtype) if self.autocast else contextlib.nullcontext()
        with ctx:
            out = fn(**kw, return_dict=False)[0]
        return out

    def model_dtype(self) -> torch.dtype:
        p = next(self.model.parameters(), None)
        return p.dtype if p is not None else torch.float32


def _get(cond: Cond, key: str, required: bool = True) -> Tensor | None:
    if isinstance(cond, Mapping):
        if key in cond:
            return cond[key]
    elif key == "prompt_embeds" and isinstance(cond, Tensor):
        return cond
    if required:
        raise InputError(f"this model needs cond with {key!r} (a dict of tensors, or the prompt-embedding tensor itself)")
    return None


class UNetCall(_Call):
    """UNet2DModel: fn(x, t, cond) = unet(x, t[, class_labels=cond]); x in VP coordinates, t the DDPM index."""

    def forward(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        dt = self.model_dtype()
        kw: dict[str, Any] = {"sample": x.to(dt), "timestep": t.float()}
        if cond is not None:
            labels = cond["class_labels"] if isinstance(cond, Mapping) else cond
            kw["class_labels"] = labels
        return self.run(**kw).to(x.dtype)


class SDUNetCall(_Call):
    """UNet2DConditionModel (Stable Diffusion): cond = prompt embeddings [B, L, D] (or {"prompt_embeds": ...})."""

    def forward(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        dt = self.model_dtype()
        emb = _get(cond, "prompt_embeds")
        return self.run(sample=x.to(dt), timestep=t.float(), encoder_hidden_states=emb.to(dt)).to(x.dtype)


def pack_flux(latents: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, H W / 4, 4 C] (FLUX 2x2 patch tokens; H and W must be even)."""
    B, C, H, W = latents.shape
    if H % 2 or W % 2:
        raise InputError(f"FLUX latents need even height and width, got {H}x{W}")
    return latents.view(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(B, (H // 2) * (W // 2), C * 4)


def unpack_flux(tokens: Tensor, height: int, width: int) -> Tensor:
    """[B, H W / 4, 4 C] -> [B, C, H, W] for a latent of height x width (inverse of `pack_flux`)."""
    B, _, D = tokens.shape
    return tokens.view(B, height // 2, width // 2, D // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(B, D // 4, height, width)


def flux_image_ids(height: int, width: int, device: Any = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """FLUX image position ids [(H/2)(W/2), 3] for a latent of height x width."""
    ids = torch.zeros(height // 2, width // 2, 3)
    ids[..., 1] += torch.arange(height // 2)[:, None]
    ids[..., 2] += torch.arange(width // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


class FluxCall(_Call):
    """FluxTransformer2DModel on unpacked latents; cond = {"prompt_embeds": [B, L, D], "pooled_prompt_embeds": [B, D]}
    and optionally "guidance" [B] (else the adapter's `guidance`; the distilled guidance of FLUX.1-dev)."""

    def __init__(self, model: nn.Module, guidance: float | None = 3.5, **kw: Any):
        super().__init__(model, **kw)
        self.guidance = guidance

    def forward(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        dt = self.model_dtype()
        B, _, H, W = x.shape
        emb = _get(cond, "prompt_embeds").to(dt)
        pooled = _get(cond, "pooled_prompt_embeds").to(dt)
        kw: dict[str, Any] = {
            "hidden_states": pack_flux(x).to(dt), "timestep": t.float(), "pooled_projections": pooled,
            "encoder_hidden_states": emb, "txt_ids": torch.zeros(emb.shape[1], 3, device=x.device, dtype=dt),
            "img_ids": flux_image_ids(H, W, x.device, dt),
        }
        if getattr(self.model.config, "guidance_embeds", False):
            g = _get(cond, "guidance", required=False)
            if g is None:
                if self.guidance is None:
                    raise InputError("this FLUX transformer is guidance-distilled; pass guidance= (e.g. 3.5) to the adapter or cond['guidance']")
                g = torch.full((B,), float(self.guidance), device=x.device)
            kw["guidance"] = g.to(torch.float32).reshape(-1).expand(B)
        return unpack_flux(self.run(**kw), H, W).to(x.dtype)


def pack_ltx(latents: Tensor, patch_size: int = 1, patch_size_t: int = 1) -> Tensor:
    """[B, C, F, H, W] -> [B, F H W / (p_t p^2), C p_t p^2] (LTX-Video tokens)."""
    B, C, F, H, W = latents.shape
    x = latents.reshape(B, C, F // patch_size_t, patch_size_t, H // patch_size, patch_size, W // patch_size, patch_size)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4, 7).flatten(1, 3)


def unpack_ltx(tokens: Tensor, frames: int, height: int, width: int, patch_size: int = 1, patch_size_t: int = 1) -> Tensor:
    """Inverse of `pack_ltx`; frames/height/width count patches (post-patch sizes), as in diffusers."""
    B = tokens.size(0)
    x = tokens.reshape(B, frames, height, width, -1, patch_size_t, patch_size, patch_size)
    return x.permute(0, 4, 1, 5, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(2, 3)


class LTXCall(_Call):
    """LTXVideoTransformer3DModel on unpacked video latents [B, C, F, H, W]; cond = {"prompt_embeds": [B, L, D],
    "prompt_attention_mask": [B, L]} (mask optional). `rope_interpolation_scale` as the pipeline computes it:
    (temporal_compression / frame_rate, spatial_compression, spatial_compression)."""

    def __init__(self, model: nn.Module, rope_interpolation_scale: Sequence[float] = (8 / 25, 32, 32), **kw: Any):
        super().__init__(model, **kw)
        self.rope_interpolation_scale = tuple(float(v) for v in rope_interpolation_scale)

    def forward(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        dt = self.model_dtype()
        p = int(self.model.config.patch_size)
        pt = int(self.model.config.patch_size_t)
        B, _, F, H, W = x.shape
        emb = _get(cond, "prompt_embeds").to(dt)
        mask = _get(cond, "prompt_attention_mask", required=False)
        if mask is None:
            mask = torch.ones(emb.shape[:2], device=x.device)
        out = self.run(hidden_states=pack_ltx(x, p, pt).to(dt), encoder_hidden_states=emb, timestep=(t * 1000).float(),
                       encoder_attention_mask=mask.to(dt), num_frames=F // pt, height=H // p, width=W // p,
                       rope_interpolation_scale=self.rope_interpolation_scale)
        return unpack_ltx(out, F // pt, H // p, W // p, p, pt).to(x.dtype)


# ----------------------------------------------------------------------------------------------------------
# Per-model adapters
# ----------------------------------------------------------------------------------------------------------
def unet_denoiser(unet: nn.Module, scheduler: Any, *, autocast: bool = False, compile: bool = False) -> Denoiser:
    """Pixel-space `UNet2DModel` with a DDPM-style scheduler (or its config): discrete VP time, eps/v/x0 prediction."""
    return Denoiser(UNetCall(unet, autocast=autocast, compile=compile), vp_schedule(scheduler), prediction_type(scheduler))


def sd_denoiser(unet: nn.Module, scheduler: Any, *, guidance_scale: float | None = None, uncond: Cond = None,
                autocast: bool = False, compile: bool = False) -> Denoiser:
    """Stable Diffusion `UNet2DConditionModel` in latent space; cond = prompt embeddings, classifier-free guidance
    with `guidance_scale` and `uncond` = the negative (empty-prompt) embeddings [1 or B, L, D]."""
    if guidance_scale is not None and float(guidance_scale) != 1.0 and uncond is None:
        raise InputError("classifier-free guidance needs uncond= (the negative prompt embeddings)")
    return Denoiser(SDUNetCall(unet, autocast=autocast, compile=compile), vp_schedule(scheduler), prediction_type(scheduler),
                    guidance_scale=guidance_scale, uncond=uncond)


def flux_denoiser(transformer: nn.Module, *, guidance: float | None = 3.5, guidance_scale: float | None = None,
                  uncond: Cond = None, autocast: bool = False, compile: bool = False) -> Denoiser:
    """FLUX `FluxTransformer2DModel`: velocity prediction on unpacked latents; `guidance` is the distilled guidance
    input (FLUX.1-dev), `guidance_scale`/`uncond` optional true classifier-free guidance."""
    return Denoiser(FluxCall(transformer, guidance, autocast=autocast, compile=compile), flow_schedule(), "velocity",
                    guidance_scale=guidance_scale, uncond=uncond)


def ltx_denoiser(transformer: nn.Module, *, rope_interpolation_scale: Sequence[float] = (8 / 25, 32, 32),
                 guidance_scale: float | None = None, uncond: Cond = None, autocast: bool = False,
                 compile: bool = False) -> Denoiser:
    """LTX-Video `LTXVideoTransformer3DModel`: velocity prediction on unpacked video latents [B, C, F, H, W]."""
    return Denoiser(LTXCall(transformer, rope_interpolation_scale, autocast=autocast, compile=compile), flow_schedule(),
                    "velocity", guidance_scale=guidance_scale, uncond=uncond)


# ----------------------------------------------------------------------------------------------------------
# Pipelines
# ----------------------------------------------------------------------------------------------------------
def pipeline_family(pipe: Any) -> str:
    """'unet' (pixel UNet2DModel), 'sd' (UNet2DConditionModel + VAE), 'flux' or 'ltx', from the pipeline's models."""
    unet = getattr(pipe, "unet", None)
    tr = getattr(pipe, "transformer", None)
    if unet is not None:
        name = type(unet).__name__
        if name == "UNet2DModel":
            return "unet"
        if name == "UNet2DConditionModel":
            if getattr(unet.config, "addition_embed_type", None) is not None:
                raise InputError("SDXL-style UNets (added text/time conditioning) are not supported yet; use a Stable Diffusion 1.x/2.x pipeline")
            return "sd"
        raise InputError(f"unsupported UNet class {name}; supported: UNet2DModel, UNet2DConditionModel")
    if tr is not None:
        name = type(tr).__name__
        if name == "FluxTransformer2DModel":
            return "flux"
        if name == "LTXVideoTransformer3DModel":
            return "ltx"
        raise InputError(f"unsupported transformer class {name}; supported: FluxTransformer2DModel, LTXVideoTransformer3DModel")
    raise InputError(f"{type(pipe).__name__} has neither a unet nor a transformer; pass a diffusers pipeline")


def _device(pipe: Any) -> torch.device:
    dev = getattr(pipe, "_execution_device", None)
    return torch.device(dev) if dev is not None else torch.device("cpu")


def _vae_factor(pipe: Any) -> int:
    return int(getattr(pipe, "vae_scale_factor", 8))


def latent_shape(pipe: Any, height: int | None = None, width: int | None = None, num_frames: int | None = None) -> tuple[int, ...]:
    """Shape of one (unpacked) latent x_T for the pipeline at the given output size (pipeline defaults otherwise)."""
    fam = pipeline_family(pipe)
    if fam == "unet":
        s = pipe.unet.config.sample_size
        s = (s, s) if isinstance(s, int) else tuple(s)
        return (int(pipe.unet.config.in_channels), int(s[0]), int(s[1]))
    if fam == "sd":
        f = _vae_factor(pipe)
        height = height or pipe.unet.config.sample_size * f
        width = width or pipe.unet.config.sample_size * f
        return (int(pipe.unet.config.in_channels), int(height) // f, int(width) // f)
    if fam == "flux":
        f = _vae_factor(pipe)
        height = height or getattr(pipe, "default_sample_size", 128) * f
        width = width or getattr(pipe, "default_sample_size", 128) * f
        return (int(pipe.transformer.config.in_channels) // 4, 2 * (int(height) // (f * 2)), 2 * (int(width) // (f * 2)))
    sr = int(pipe.vae_spatial_compression_ratio)
    tr = int(pipe.vae_temporal_compression_ratio)
    height, width, num_frames = height or 512, width or 704, num_frames or 161
    return (int(pipe.transformer.config.in_channels), (int(num_frames) - 1) // tr + 1, int(height) // sr, int(width) // sr)


def _decoder(pipe: Any, fam: str) -> Callable[[Tensor], Tensor] | None:
    """latents (the solver's final state) -> pixels in [-1, 1] ([B, C, F, H, W] for video), differentiable."""
    vae = getattr(pipe, "vae", None)
    if fam == "unet" or vae is None:
        return None
    if fam == "sd":
        return lambda z: vae.decode(z.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0].to(z.dtype)
    if fam == "flux":
        return lambda z: vae.decode((z.to(vae.dtype) / vae.config.scaling_factor) + vae.config.shift_factor, return_dict=False)[0].to(z.dtype)

    def ltx_decode(z: Tensor) -> Tensor:
        mean = vae.latents_mean.view(1, -1, 1, 1, 1).to(z.device, z.dtype)
        std = vae.latents_std.view(1, -1, 1, 1, 1).to(z.device, z.dtype)
        zz = z * std / vae.config.scaling_factor + mean
        ts = torch.zeros(z.shape[0], device=z.device, dtype=vae.dtype) if vae.config.timestep_conditioning else None
        return vae.decode(zz.to(vae.dtype), ts, return_dict=False)[0].to(z.dtype)

    return ltx_decode


def _ltx_rope(pipe: Any, frame_rate: float) -> tuple[float, float, float]:
    return (pipe.vae_temporal_compression_ratio / frame_rate, pipe.vae_spatial_compression_ratio, pipe.vae_spatial_compression_ratio)


def make_denoiser(pipe: Any, *, guidance_scale: float | None = None, uncond: Cond = None, guidance: float | None = 3.5,
                  frame_rate: float = 25.0, autocast: bool = False, compile: bool = False) -> Denoiser:
    """The Denoiser of a pipeline's model (see the per-model adapters for the arguments)."""
    fam = pipeline_family(pipe)
    opts = dict(autocast=autocast, compile=compile)
    if fam == "unet":
        return unet_denoiser(pipe.unet, pipe.scheduler, **opts)
    if fam == "sd":
        return sd_denoiser(pipe.unet, pipe.scheduler, guidance_scale=guidance_scale, uncond=uncond, **opts)
    if fam == "flux":
        return flux_denoiser(pipe.transformer, guidance=guidance, guidance_scale=guidance_scale, uncond=uncond, **opts)
    return ltx_denoiser(pipe.transformer, rope_interpolation_scale=_ltx_rope(pipe, frame_rate), guidance_scale=guidance_scale,
                        uncond=uncond, **opts)


def _seq_len(fam: str, shape: Sequence[int], pipe: Any) -> int:
    if fam == "flux":
        return (shape[1] // 2) * (shape[2] // 2)
    p, pt = int(pipe.transformer.config.patch_size), int(pipe.transformer.config.patch_size_t)
    return (shape[1] // pt) * (shape[2] // p) * (shape[3] // p)


def from_pipeline(pipe: Any, *, prompt_embeds: Cond = None, negative_prompt_embeds: Cond = None,
                  guidance_scale: float | None = None, guidance: float | None = 3.5, height: int | None = None,
                  width: int | None = None, num_frames: int | None = None, frame_rate: float = 25.0,
                  autocast: bool = False, compile: bool = False, spec: str = "") -> ModelHandle:
    """A `ModelHandle` for a diffusers pipeline (dispatching on its unet/transformer class).

    prompt_embeds: the condition table for teacher generation and training (row i % P for sample i): a tensor
    [P, L, D] for Stable Diffusion, a dict {"prompt_embeds", "pooled_prompt_embeds"} for FLUX, a dict
    {"prompt_embeds", "prompt_attention_mask"} for LTX. negative_prompt_embeds + guidance_scale > 1: CFG.
    `meta` holds the pipeline, the family, the phi condition keys (`cond_keys`) and, for flow models, the
    image sequence length and the scheduler's RDS shift `mu`.
    """
    _require_diffusers()
    fam = pipeline_family(pipe)
    den = make_denoiser(pipe, guidance_scale=guidance_scale, uncond=negative_prompt_embeds, guidance=guidance,
                        frame_rate=frame_rate, autocast=autocast, compile=compile)
    shape = latent_shape(pipe, height, width, num_frames)
    meta: dict[str, Any] = {"pipeline": pipe, "family": fam}
    kind, ncls, table = "none", 0, None
    if fam == "unet" and getattr(pipe.unet.config, "num_class_embeds", None):
        kind, ncls = "class", int(pipe.unet.config.num_class_embeds)
    if prompt_embeds is not None:
        kind, table = "table", prompt_embeds
    if fam == "flux":
        meta["cond_keys"] = ["prompt_embeds", "pooled_prompt_embeds"]
    elif fam == "ltx":
        meta["cond_keys"] = ["prompt_embeds"]
    if fam in ("flux", "ltx"):
        n = _seq_len(fam, shape, pipe)
        meta["image_seq_len"] = n
        meta["mu"] = calculate_shift(n, pipe.scheduler)
    heur = "uniform" if fam in ("flux", "ltx") else "edm"
    return ModelHandle(den, tuple(shape), spec or f"diffusers:{type(pipe).__name__}", kind, ncls, table,
                       _decoder(pipe, fam), heur, meta)


def rds_times(handle: ModelHandle, steps: int) -> Tensor:
    """The FLUX/LTX pipeline default schedule (resolution-dependent shift with the scheduler's mu), N+1 times ending at 0."""
    from ..discretizations.heuristics import rds

    if "mu" not in handle.meta:
        raise InputError("rds_times needs a flow-matching diffusers handle (FLUX or LTX) with meta['mu']")
    return rds(steps, handle.schedule, mu=float(handle.meta["mu"]))


def load_diffusers(path: str, *, torch_dtype: torch.dtype | str | None = None, device: str | None = None,
                   **options: Any) -> ModelHandle:
    """Load `diffusers:PATH`: a local folder written by `pipeline.save_pretrained(PATH)`. Never downloads (the
    folder must exist; `HF_HUB_OFFLINE` is respected and local_files_only is set). Extra options go to `from_pipeline`."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_dir():
        raise InputError(f"diffusers:{path}: no such folder; pass a local folder written by pipe.save_pretrained(folder) (hub ids are not downloaded)")
    if not (p / "model_index.json").is_file():
        raise InputError(f"diffusers:{path}: '{p}' is not a diffusers pipeline folder (no model_index.json); save one with pipe.save_pretrained(folder)")
    diffusers = _require_diffusers()
    options.pop("trust_pickle", None)  # diffusers folders hold safetensors; the flag is irrelevant here
    if isinstance(torch_dtype, str):
        torch_dtype = getattr(torch, torch_dtype)
    kw: dict[str, Any] = {"local_files_only": True}
    try:
        index = json.loads((p / "model_index.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"diffusers:{path}: unreadable model_index.json ({exc})") from exc
    for name, entry in index.items():  # components saved as None (e.g. no text encoder) must be passed as None
        if isinstance(entry, list) and entry and entry[0] is None:
            kw[name] = None
    if torch_dtype is not None:
        kw["torch_dtype"] = torch_dtype
    try:
        pipe = diffusers.DiffusionPipeline.from_pretrained(str(p), **kw)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"diffusers:{path}: cannot load the pipeline ({str(exc).splitlines()[0]})") from exc
    if device is not None:
        pipe.to(device)
    return from_pipeline(pipe, spec=f"diffusers:{path}", **_prompt_options(pipe, options))


def _prompt_options(pipe: Any, options: dict[str, Any]) -> dict[str, Any]:
    """CLI-level options -> `from_pipeline` arguments: `prompts` (strings, encoded with the pipeline's text encoders)
    or `prompt_table` (precomputed tensors), and `cfg` (SD/LTX: classifier-free guidance against the empty prompt or
    the given negative embeddings; FLUX: the distilled guidance input)."""
    from .diffusers_pipeline import encode_prompts

    opts = dict(options)
    prompts, table, g = opts.pop("prompts", None), opts.pop("prompt_table", None), opts.pop("cfg", None)
    required = opts.pop("require_prompts", False)  # the CLI: a teacher set or samples need their prompts
    fam = pipeline_family(pipe)
    if fam == "flux" and g is not None:
        opts["guidance"], g = g, None
    cfg = g is not None and g != 1.0
    if prompts is not None:
        if getattr(pipe, "tokenizer", None) is None and getattr(pipe, "text_encoder", None) is None:
            raise InputError("--prompts needs the pipeline's text encoder, and this pipeline folder has none; pass "
                             "precomputed embeddings with --prompt-embeds FILE")
        cond, unc = encode_prompts(pipe, prompts, negative_prompt=[""] if cfg else None, cfg=cfg)
        opts["prompt_embeds"] = cond
        if cfg:
            opts["negative_prompt_embeds"] = _first_row(unc)
    elif table is not None:
        keys = {"sd": ["prompt_embeds"], "flux": ["prompt_embeds", "pooled_prompt_embeds"],
                "ltx": ["prompt_embeds", "prompt_attention_mask"]}.get(fam, [])
        missing = [k for k in keys if k not in table]
        if missing:
            raise InputError(f"--prompt-embeds: the file has no {', '.join(missing)} (keys: {sorted(table)})")
        opts["prompt_embeds"] = table[keys[0]] if fam == "sd" else {k: table[k] for k in keys}
        if cfg:
            neg = {k: table[f"negative_{k}"] for k in keys if f"negative_{k}" in table}
            if "prompt_embeds" not in neg:
                raise InputError("--guidance with --prompt-embeds needs negative_prompt_embeds in the file (the empty "
                                 "prompt's embeddings)")
            opts["negative_prompt_embeds"] = neg["prompt_embeds"] if fam == "sd" else neg
    elif required and fam in ("sd", "flux", "ltx"):
        raise InputError(f"this is a text-conditional {fam} pipeline: pass --prompts FILE or --prompt-embeds FILE (the "
                         "prompts its teacher set, training and samples use)")
    if cfg:
        opts["guidance_scale"] = g
    return opts


def _first_row(c: Cond) -> Cond:
    if isinstance(c, Mapping):
        return {k: v[:1] for k, v in c.items()}
    return c[:1]


register_loader("diffusers", lambda rest, **options: load_diffusers(rest, **options))
