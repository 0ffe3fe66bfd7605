"""The diffusers model adapters under `indis.integrations.diffusers`: schedules from scheduler configs, the model call
wrappers (UNet, Stable Diffusion, FLUX, LTX-Video), the per-model Denoisers and the pipeline helpers (family, latent
shape, decoder) that `diffusers`, `diffusers_pipeline` and `diffusers_scheduler` share. See `indis.integrations.diffusers`
for the conventions."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..denoiser import Cond, Denoiser
from ..errors import InputError, MissingDependencyError
from ..schedules import VP, FlowMatching

FAMILIES = ("unet", "sd", "flux", "ltx")
_PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0", "flow_prediction": "velocity"}


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


