"""Sampling through a diffusers pipeline with indis' solver loop.

`sample_pipeline(pipe, ...)` runs the pipeline's own prompt encoding, latent preparation and VAE decoding around
`indis.sample` with a (per-sample) discretization; `encode_prompts` gives the (cond, uncond) pair the adapters of
`indis.integrations.diffusers` expect. Both are re-exported from that module.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from ..denoiser import Cond
from ..discretizations.base import Discretizer
from ..errors import InputError
from ..solvers import sample
from ..priors import cond_to, prior_std
from .diffusers_models import (_decoder, _device, _require_diffusers, _seq_len, calculate_shift, latent_shape, make_denoiser,
                        pipeline_family)


def _repeat(c: Cond, n: int) -> Cond:
    if c is None or n == 1:
        return c
    if isinstance(c, Mapping):
        return {k: v.repeat_interleave(n, 0) for k, v in c.items()}
    return c.repeat_interleave(n, 0)


def encode_prompts(pipe: Any, prompt: str | list[str] | None = None, *, prompt_embeds: Cond = None,
                   pooled_prompt_embeds: Tensor | None = None, prompt_attention_mask: Tensor | None = None,
                   negative_prompt: str | list[str] | None = None, negative_prompt_embeds: Tensor | None = None,
                   negative_pooled_prompt_embeds: Tensor | None = None, negative_prompt_attention_mask: Tensor | None = None,
                   cfg: bool = False, max_sequence_length: int = 128) -> tuple[Cond, Cond]:
    """(cond, uncond) in the adapter's format, from the pipeline's own text encoders (or the given embeddings).
    uncond is None unless cfg=True. One row per prompt (num_images_per_prompt is applied by the caller)."""
    fam = pipeline_family(pipe)
    dev = _device(pipe)
    if fam == "unet":
        return None, None
    if prompt is None and prompt_embeds is None:
        raise InputError("pass prompt= (needs the pipeline's text encoder) or prompt_embeds=")
    if fam == "sd":
        if cfg and negative_prompt_embeds is None and negative_prompt is None and getattr(pipe, "tokenizer", None) is None:
            raise InputError("classifier-free guidance needs negative_prompt_embeds= when the pipeline has no tokenizer/text encoder")
        pe, npe = pipe.encode_prompt(prompt, dev, 1, cfg, negative_prompt, prompt_embeds=prompt_embeds,
                                     negative_prompt_embeds=negative_prompt_embeds)
        return pe, (npe if cfg else None)
    if fam == "flux":
        pe, pooled, _ = pipe.encode_prompt(prompt=prompt, prompt_2=None, prompt_embeds=prompt_embeds,
                                           pooled_prompt_embeds=pooled_prompt_embeds, device=dev, num_images_per_prompt=1,
                                           max_sequence_length=max_sequence_length)
        cond = {"prompt_embeds": pe, "pooled_prompt_embeds": pooled}
        unc = None
        if cfg:
            if negative_prompt is None and (negative_prompt_embeds is None or negative_pooled_prompt_embeds is None):
                raise InputError("FLUX true CFG needs negative_prompt= or negative_prompt_embeds= and negative_pooled_prompt_embeds=")
            npe, npooled, _ = pipe.encode_prompt(prompt=negative_prompt, prompt_2=None, prompt_embeds=negative_prompt_embeds,
                                                 pooled_prompt_embeds=negative_pooled_prompt_embeds, device=dev,
                                                 num_images_per_prompt=1, max_sequence_length=max_sequence_length)
            unc = {"prompt_embeds": npe, "pooled_prompt_embeds": npooled}
        return cond, unc
    pe, pm, npe, npm = pipe.encode_prompt(prompt=prompt, negative_prompt=negative_prompt, do_classifier_free_guidance=cfg,
                                          num_videos_per_prompt=1, prompt_embeds=prompt_embeds,
                                          negative_prompt_embeds=negative_prompt_embeds, prompt_attention_mask=prompt_attention_mask,
                                          negative_prompt_attention_mask=negative_prompt_attention_mask,
                                          max_sequence_length=max_sequence_length, device=dev)
    cond = {"prompt_embeds": pe, "prompt_attention_mask": pm.to(pe.dtype)}
    unc = {"prompt_embeds": npe, "prompt_attention_mask": npm.to(npe.dtype)} if cfg else None
    return cond, unc


def sample_pipeline(
    pipe: Any,
    prompt: str | list[str] | None = None,
    *,
    discretization: Any = None,
    times: Tensor | Sequence[float] | None = None,
    steps: int | None = None,
    solver: str | None = None,
    prompt_embeds: Cond = None,
    pooled_prompt_embeds: Tensor | None = None,
    prompt_attention_mask: Tensor | None = None,
    negative_prompt: str | list[str] | None = None,
    negative_prompt_embeds: Tensor | None = None,
    negative_pooled_prompt_embeds: Tensor | None = None,
    negative_prompt_attention_mask: Tensor | None = None,
    guidance_scale: float | None = None,
    guidance: float | None = 3.5,
    num_images_per_prompt: int = 1,
    batch_size: int | None = None,
    height: int | None = None,
    width: int | None = None,
    num_frames: int | None = None,
    frame_rate: float = 25.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
    latents: Tensor | None = None,
    output_type: str = "pt",
    checkpoint: bool = False,
    autocast: bool = False,
    compile: bool = False,
    max_sequence_length: int = 128,
    afs: bool | None = None,
    dtype: torch.dtype = torch.float32,
    **solver_options: Any,
) -> Tensor:
    """Sample with a diffusers pipeline's encoders/VAE and indis' solver with a (per-sample) discretization.

    discretization: an `indis.Discretizer` (FixedSchedule, GlobalSchedule, InstanceSchedule, ...; its solver and
    afs are used) or None with explicit `times` ([N+1] or [B, N+1], schedule time: DDPM index for UNets,
    t in [0, 1] for FLUX/LTX) or `steps` (then the pipeline default: EDM rho=7 for VP models, the RDS shift with
    the scheduler's mu for FLUX/LTX). latents: x_T in the solver's coordinates (unpacked), else
    randn(generator) * sigma(t_0) in the pipeline's latent shape. guidance_scale > 1 with a negative prompt:
    classifier-free guidance (SD default 7.5 when negative embeddings are given); `guidance`: FLUX's distilled
    guidance input. output_type: "latent" (final solver state), "pt" (decoded, [0, 1]) or "raw" (decoded, [-1, 1]).
    Gradients flow unless called under torch.no_grad(); checkpoint=True recomputes each model call in backward.
    """
    _require_diffusers()
    _check_call(output_type, num_images_per_prompt, discretization)
    fam = pipeline_family(pipe)
    dev = _device(pipe)
    if fam == "sd" and guidance_scale is None and negative_prompt_embeds is not None:
        guidance_scale = 7.5
    cfg = guidance_scale is not None and float(guidance_scale) > 1.0 and fam != "unet"
    cond, unc = encode_prompts(pipe, prompt, prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
                               prompt_attention_mask=prompt_attention_mask, negative_prompt=negative_prompt,
                               negative_prompt_embeds=negative_prompt_embeds,
                               negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
                               negative_prompt_attention_mask=negative_prompt_attention_mask, cfg=cfg,
                               max_sequence_length=max_sequence_length)
    cond = cond_to(_repeat(cond, num_images_per_prompt), dev)
    unc = cond_to(_repeat(unc, num_images_per_prompt), dev)
    B = _batch(cond, batch_size, latents, num_images_per_prompt)
    den = make_denoiser(pipe, guidance_scale=guidance_scale if cfg else None, uncond=unc, guidance=guidance,
                        frame_rate=frame_rate, autocast=autocast, compile=compile)
    shape = latent_shape(pipe, height, width, num_frames)
    if discretization is not None:
        solver = discretization.solver
        afs = discretization.afs if afs is None else afs
    solver = solver or ("euler" if fam in ("flux", "ltx") else "ipndm")
    if times is None and discretization is None:
        times = _default_times(pipe, fam, den.schedule, shape, steps)
    x_T = _start_latents(latents, (B, *shape), den.schedule, times, discretization, generator, dev, dtype)
    shift = scale = None
    if discretization is not None:
        discretization.check_compatible(den.schedule, shape)
        s = discretization.to(dev)(x_T, cond)
        times, shift, scale = s.times, s.shift, s.scale
    x = sample(den, x_T, times, solver=solver, shift=shift, scale=scale, cond=cond, afs=bool(afs), checkpoint=checkpoint,
               **solver_options)
    return _output(pipe, fam, x, output_type)


def _output(pipe: Any, fam: str, x: Tensor, output_type: str) -> Tensor:
    """The final solver state as asked: latents, decoded in [-1, 1] ("raw") or decoded in [0, 1] ("pt")."""
    if output_type == "latent":
        return x
    dec = _decoder(pipe, fam)
    img = x if dec is None else dec(x)
    return img if output_type == "raw" else (img / 2 + 0.5).clamp(0, 1)


def _check_call(output_type: str, num_images_per_prompt: int, discretization: Any) -> None:
    if output_type not in ("latent", "pt", "raw"):
        raise InputError(f"output_type must be 'latent', 'pt' or 'raw', got {output_type!r}")
    if num_images_per_prompt < 1:
        raise InputError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
    if discretization is not None and not isinstance(discretization, Discretizer):
        raise InputError(f"discretization must be an indis Discretizer (or use times=), got {type(discretization).__name__}")


def _start_latents(latents: Tensor | None, shape: tuple[int, ...], schedule: Any, times: Any, discretization: Any,
                   generator: Any, dev: torch.device, dtype: torch.dtype) -> Tensor:
    """x_T: the given latents (checked against the pipeline's unpacked latent shape) or fresh noise at the first time."""
    if latents is None:
        t0 = float(torch.as_tensor(times).flatten()[0]) if times is not None else float(discretization.t_max)
        latents = _initial_noise(shape, schedule, t0, generator, dev)
    x_T = latents.to(device=dev, dtype=dtype)
    if tuple(x_T.shape[1:]) != tuple(shape[1:]):
        raise InputError(f"latents must have shape [B, {', '.join(map(str, shape[1:]))}] (unpacked), got {list(x_T.shape)}")
    if x_T.shape[0] != shape[0]:
        raise InputError(f"latents has batch {x_T.shape[0]} but prompts x num_images_per_prompt give {shape[0]}")
    return x_T


def _batch(cond: Cond, batch_size: int | None, latents: Tensor | None, per_prompt: int) -> int:
    """Rows to sample: one per (prompt, image) when prompts are given, else batch_size (or the latents' batch)."""
    if cond is not None:
        first = next(iter(cond.values())) if isinstance(cond, Mapping) else cond
        return int(first.shape[0])
    return int(batch_size or (latents.shape[0] if latents is not None else 1)) * per_prompt


def _default_times(pipe: Any, fam: str, sched: Any, shape: Sequence[int], steps: int | None) -> Tensor:
    """The pipeline default for `steps`: the RDS shift with the scheduler's mu for FLUX/LTX, EDM rho=7 otherwise."""
    from ..discretizations.heuristics import heuristic, rds

    if steps is None:
        raise InputError("pass discretization=, times= or steps=")
    if fam in ("flux", "ltx"):
        return rds(steps, sched, mu=calculate_shift(_seq_len(fam, shape, pipe), pipe.scheduler))
    return heuristic("edm", steps, sched)


def _initial_noise(shape: tuple[int, ...], sched: Any, t0: float, generator: Any, dev: torch.device) -> Tensor:
    """x_T = randn(generator) * prior std at t0, drawn the way diffusers pipelines draw latents."""
    from diffusers.utils.torch_utils import randn_tensor

    z = randn_tensor(shape, generator=generator, device=dev, dtype=torch.float32)
    return z * prior_std(sched, t0)
