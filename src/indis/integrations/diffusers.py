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

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from ..errors import InputError
from ..models import ModelHandle, register_loader
from .diffusers_models import (FAMILIES, Cond, FluxCall, LTXCall, SDUNetCall, UNetCall, _decoder, _require_diffusers,
                               _seq_len, calculate_shift, flow_schedule, flux_denoiser, flux_image_ids, latent_shape,
                               ltx_denoiser, make_denoiser, pack_flux, pack_ltx, pipeline_family, prediction_type,
                               sd_denoiser, unet_denoiser, unpack_flux, unpack_ltx, vp_schedule)

# the adapters live in `diffusers_models` (shared with `diffusers_pipeline` / `diffusers_scheduler`); `IndisScheduler`,
# `sample_pipeline` and `encode_prompts` come through `__getattr__` below
__all__ = ["FAMILIES", "FluxCall", "LTXCall", "SDUNetCall", "UNetCall", "calculate_shift", "flow_schedule", "flux_denoiser",
           "flux_image_ids", "from_pipeline", "latent_shape", "load_diffusers", "ltx_denoiser", "make_denoiser", "pack_flux",
           "pack_ltx", "pipeline_family", "prediction_type", "rds_times", "sd_denoiser", "unet_denoiser", "unpack_flux",
           "unpack_ltx", "vp_schedule"]


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
