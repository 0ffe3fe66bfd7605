"""`indis bench pipeline`: indis at the size users run, on Stable Diffusion 1.5, FLUX.1-dev and LTX-Video architectures
built from their published configs with random weights (no download), through the public API.

For each architecture the denoiser is built at its real width (`configs/*.json`; FLUX and LTX with `--blocks K`
transformer blocks so they fit in memory on a CPU), with random prompt embeddings of the real shapes, classifier-free
guidance where the model uses it (SD 7.5, LTX 3; FLUX.1-dev takes its distilled guidance 3.5 instead), inside a stock
diffusers pipeline (its own scheduler; a small VAE that is never timed and no text encoders). Measured, each
configuration in a fresh process so that its peak memory is its own:

- model calls: seconds per call of the indis denoiser (CFG included) and of the bare model on the same batch, at
  two depths (FLUX/LTX) and two latent sizes, fitted to per-block and per-token scaling for the full-size estimate;
- teacher: `generate_teacher` seconds per sample, and its throughput as a ratio to bare model calls;
- INDIS training steps at NFE 3, 5, 7 with and without gradient checkpointing (peak memory, seconds per step;
  `memory_ratio` = NFE 7 / NFE 3 with checkpointing, `memory_ratio_no_checkpoint` without);
- per-instance sampling at NFE 5: phi's share of the sampling time (`phi_share`);
- a GOD schedule replayed inside the stock pipeline with `IndisScheduler`.
CPU peak memory is the process's peak RSS; CUDA peak memory is `torch.cuda.max_memory_allocated`.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError

CONFIGS = Path(__file__).with_name("configs")
ARCHS: dict[str, dict[str, Any]] = {
    "sd15": {"config": "sd15_unet.json", "family": "sd", "depth": {}, "full": (512, 512, None), "small": (256, 256, None),
             "text": (77, 768), "guidance_scale": 7.5},
    "flux": {"config": "flux_dev_transformer.json", "family": "flux", "depth": {"num_layers": 1, "num_single_layers": 2},
             "full_blocks": 19, "full": (1024, 1024, None), "small": (128, 128, None), "text": (512, 4096), "pooled": 768,
             "guidance": 3.5},
    "ltx": {"config": "ltx_video_transformer.json", "family": "ltx", "depth": {"num_layers": 1}, "full_blocks": 28,
            "full": (512, 768, 121), "small": (128, 128, 9), "text": (128, 4096), "guidance_scale": 3.0},
}
#: published parameter counts of the full models (the configs must build exactly these)
PARAMS = {"sd15": 859_520_964, "flux": 11_901_408_320, "ltx": 1_923_385_472}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_config(arch: str, blocks: int | None = None) -> dict[str, Any]:
    """The stored config of `arch` (values as published), with `blocks` transformer blocks for FLUX (K double, 2K
    single, the real 19:38 ratio) and LTX (K); None keeps the full depth."""
    if arch not in ARCHS:
        raise InputError(f"--arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    cfg = json.loads((CONFIGS / ARCHS[arch]["config"]).read_text())
    if blocks is not None and ARCHS[arch]["depth"]:
        for key, per in ARCHS[arch]["depth"].items():
            cfg[key] = per * blocks
    return cfg


def build_model(arch: str, blocks: int | None = None, dtype: torch.dtype = torch.float32, device: str = "cpu",
                seed: int = 0, meta: bool = False) -> torch.nn.Module:
    """The diffusers model of `arch` from its stored config, random weights from `seed` (meta=True: no memory)."""
    import diffusers

    cfg = load_config(arch, blocks)
    cls = getattr(diffusers, cfg.pop("_class_name"))
    kw = {k: v for k, v in cfg.items() if not k.startswith("_")}
    if meta:
        with torch.device("meta"):
            return cls(**kw)
    torch.manual_seed(seed)
    return cls(**kw).to(device=device, dtype=dtype).eval().requires_grad_(False)


def _small_vae(channels: int) -> Any:
    """Four levels (the pipelines' 8x latent factor) of 8 channels: the real factor at almost no cost."""
    import diffusers

    return diffusers.AutoencoderKL(block_out_channels=(8,) * 4, down_block_types=("DownEncoderBlock2D",) * 4,
                                   up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=channels, norm_num_groups=8)


def build_pipeline(arch: str, model: torch.nn.Module) -> Any:
    """A stock diffusers pipeline around `model` with its usual scheduler, no text encoders and a small VAE (the
    benchmark runs on latents; the VAE is never timed)."""
    import diffusers

    if arch == "sd15":
        sch = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                                      set_alpha_to_one=False, steps_offset=1)
        return diffusers.StableDiffusionPipeline(vae=_small_vae(4), text_encoder=None, tokenizer=None, unet=model, scheduler=sch,
                                                 safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if arch == "flux":
        sch = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                        base_image_seq_len=256, max_image_seq_len=4096)
        return diffusers.FluxPipeline(scheduler=sch, vae=_small_vae(16), text_encoder=None, tokenizer=None, text_encoder_2=None,
                                      tokenizer_2=None, transformer=model)
    sch = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                                    base_image_seq_len=1024, max_image_seq_len=4096)
    vae = diffusers.AutoencoderKLLTXVideo(in_channels=3, out_channels=3, latent_channels=128, block_out_channels=(8, 8, 8, 8),
                                          decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
                                          decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, True, False),
                                          decoder_spatio_temporal_scaling=(True, True, True, False),
                                          decoder_inject_noise=(False,) * 5, upsample_residual=(False,) * 4,
                                          upsample_factor=(1,) * 4, patch_size=4, patch_size_t=1)
    return diffusers.LTXPipeline(scheduler=sch, vae=vae, text_encoder=None, tokenizer=None, transformer=model)


def prompt_table(arch: str, prompts: int, dtype: torch.dtype, device: str, seed: int = 1) -> tuple[Any, Any]:
    """Random prompt embeddings of the real shapes ([P, L, D]; FLUX also the pooled CLIP ones; LTX the attention
    mask), and the negative (unconditional) embeddings for classifier-free guidance (None for FLUX)."""
    spec = ARCHS[arch]
    g = torch.Generator().manual_seed(seed)
    L, D = spec["text"]
    emb = torch.randn(prompts, L, D, generator=g).to(device, dtype)
    neg = torch.randn(1, L, D, generator=g).to(device, dtype)
    if arch == "sd15":
        return emb, neg
    if arch == "flux":
        return {"prompt_embeds": emb, "pooled_prompt_embeds": torch.randn(prompts, spec["pooled"], generator=g).to(device, dtype)}, None
    mask = torch.ones(prompts, L, device=device)
    return {"prompt_embeds": emb, "prompt_attention_mask": mask}, {"prompt_embeds": neg, "prompt_attention_mask": mask[:1]}


def build_handle(arch: str, blocks: int | None, size: tuple[int, int, int | None], dtype: torch.dtype = torch.float32,
                 device: str = "cpu", prompts: int = 2) -> tuple[Any, Any]:
    """(ModelHandle, pipeline) through `indis.integrations.diffusers.from_pipeline`, as a user with weights gets it."""
    from ..integrations.diffusers import from_pipeline

    model = build_model(arch, blocks, dtype, device)
    pipe = build_pipeline(arch, model)
    pipe.vae.to(device)
    table, neg = prompt_table(arch, prompts, dtype, device)
    spec = ARCHS[arch]
    h, w, f = size
    kw: dict[str, Any] = {"height": h, "width": w}
    if f is not None:
        kw["num_frames"] = f
    if spec.get("guidance_scale"):
        kw.update(guidance_scale=spec["guidance_scale"], negative_prompt_embeds=neg)
    if spec.get("guidance"):
        kw["guidance"] = spec["guidance"]
    return from_pipeline(pipe, prompt_embeds=table, spec=f"bench:{arch}", **kw), pipe


# ----------------------------------------------------------------------------------------------------------------
# Measurements (each runs inside one child process; see `child`)
# ----------------------------------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _best(fn: Any, repeats: int, device: str) -> float:
    """Best wall time of `repeats` calls of fn after one warm-up call."""
    fn()
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def _inputs(handle: Any, batch: int, device: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[Any, ...]:
    """Prior noise x_T [B, ...] (solver dtype: float32), a mid time, and the batch's prompt rows."""
    from ..priors import index_cond, prior_noise, prior_std, table_rows

    sched = handle.schedule
    xT = prior_noise(range(batch), seed, handle.data_shape, prior_std(sched), dtype, device)
    t = torch.full((batch,), 0.5 * (sched.t_max + sched.t_min), dtype=dtype, device=device)
    cond = index_cond(handle.cond_table, torch.arange(batch) % table_rows(handle.cond_table))
    return xT, t, cond


def time_calls(handle: Any, batch: int, device: str, repeats: int = 2) -> dict[str, float]:
    """Seconds per indis denoiser call (conversion and CFG combination included) and per bare model call on the
    batch the denoiser passes to the model (2B with CFG)."""
    den = handle.denoiser
    xT, t, cond = _inputs(handle, batch, device)
    with torch.no_grad():
        call = _best(lambda: den(xT, t, cond), repeats, device)
        cfg = den.guidance_scale is not None and float(den.guidance_scale) != 1.0
        if cfg:
            from ..denoiser import _cat_cond

            xb, tb, cb = torch.cat([xT, xT]), torch.cat([t, t]), _cat_cond(cond, den.uncond, batch)
        else:
            xb, tb, cb = xT, t, cond
        bare = _best(lambda: den.model(xb, tb, cb), repeats, device)
    return {"call_s": call, "bare_call_s": bare, "batch": batch, "cfg": cfg}


def time_teacher(handle: Any, batch: int, steps: int, device: str, folder: Path, repeats: int = 2) -> dict[str, float]:
    """`generate_teacher` (steps-step iPNDM, the public API) in batches of `batch`: sets of 1 and `big` batches, so the
    difference is the steady-state cost of big - 1 batches without the one-off set-up (model fingerprint, manifest);
    throughput is the ratio of the same number of bare model calls to it. Teacher and bare timings are interleaved
    and the best of `repeats` kept, so a busy machine slows both alike. Where the difference is not resolved (below
    20% of the single set: tiny models, whose set-up noise can exceed their compute), `big` grows 3 -> 9 -> 27."""
    from ..discretizations.heuristics import heuristic

    times = heuristic(handle.default_heuristic, steps, handle.schedule)
    for big in (3, 9, 27):
        best = _teacher_sets(handle, times, batch, steps, (1, big), device, folder, repeats)
        if best[big] - best[1] > 0.2 * best[1]:
            break
    per_batch = (best[big] - best[1]) / (big - 1)
    if per_batch <= 0:
        raise RuntimeError(f"teacher timing not resolved: {big} batches took {best[big]:.4g} s, 1 batch {best[1]:.4g} s")
    return {"teacher_s_per_sample": per_batch / batch, "teacher_steps": steps, "teacher_batch": batch,
            "teacher_setup_s": best[1] - per_batch, "bare_call_s": best["bare"],
            "throughput_ratio": steps * best["bare"] / per_batch}


def _teacher_sets(handle: Any, times: Any, batch: int, steps: int, sizes: tuple[int, ...], device: str, folder: Path,
                  repeats: int) -> dict[Any, float]:
    """Best-of-`repeats` seconds of `generate_teacher` over sets of n batches for n in `sizes`, and of one bare call."""
    import shutil

    from ..teacher import generate_teacher

    best: dict[Any, float] = {n: math.inf for n in sizes} | {"bare": math.inf}
    for r in range(repeats):
        for nb in sizes:
            out = folder / f"teacher-{r}-{nb}"
            _sync(device)
            t0 = time.perf_counter()
            generate_teacher(handle.denoiser, out, handle.data_shape, nb * batch, times=times, steps=steps,
                             batch_size=batch, shard_size=nb * batch, cond=handle.cond_spec(), cond_table=handle.cond_table,
                             model=handle.spec, device=device, progress=False)
            _sync(device)
            best[nb] = min(best[nb], time.perf_counter() - t0)
            shutil.rmtree(out, ignore_errors=True)
        best["bare"] = min(best["bare"], time_calls(handle, batch, device, repeats=1)["bare_call_s"])
    return best


def _indis(handle: Any, nfe: int) -> Any:
    """An INDIS discretization for `handle` at `nfe` (iPNDM; phi starts at the model's default heuristic)."""
    from ..methods import learned
    from ..solvers import steps_for_nfe

    torch.manual_seed(0)
    return learned(handle, "indis", steps_for_nfe("ipndm", nfe, False), "ipndm")


def time_train(handle: Any, nfe: int, checkpoint: bool, batch: int, device: str, repeats: int = 2) -> dict[str, Any]:
    """INDIS training steps (forward through the NFE-step solver, backward into phi) through the public training loop
    (`TrainRun.step`) on a teacher set of `batch` pairs: seconds per step (best of `repeats` after a warm-up)."""
    import shutil
    import tempfile

    from ..teacher import generate_teacher
    from ..training import TrainConfig
    from ..training.loop import TrainRun

    folder = Path(tempfile.mkdtemp(prefix="indis-bench-"))
    try:
        ts = generate_teacher(handle.denoiser, folder / "t", handle.data_shape, batch, steps=2, batch_size=batch,
                              shard_size=batch, cond=handle.cond_spec(), cond_table=handle.cond_table, model=handle.spec,
                              device=device, progress=False)
        d = _indis(handle, nfe).to(device)
        cfg = TrainConfig(iterations=10, batch_size=batch, val_fraction=0.0, grad_checkpoint=checkpoint, lr=1e-3,
                          train_indices=list(range(batch)))
        run = TrainRun(d, handle.denoiser, ts, cfg, device=device)
        b = torch.arange(batch)
        step = _best(lambda: run.step(b), repeats, device)
        grads = [p.grad for p in d.parameters() if p.grad is not None]
        finite = bool(grads) and all(bool(torch.isfinite(g).all()) for g in grads)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"nfe": nfe, "checkpoint": checkpoint, "train_step_s": step, "batch": batch, "phi_grads_finite": finite}


def time_sampling(handle: Any, nfe: int, batch: int, device: str) -> dict[str, float]:
    """Per-instance sampling with an INDIS discretization: phi's forward time as a share of the whole sample."""
    d = _indis(handle, nfe).to(device).eval()
    xT, _, cond = _inputs(handle, batch, device)
    with torch.no_grad():
        phi = _best(lambda: d(xT, cond), 3, device)
        whole = _best(lambda: d.sample(handle.denoiser, xT, cond), 1, device)
    return {"nfe": nfe, "phi_s": phi, "sample_s": whole, "phi_share": phi / whole, "batch": batch}


def _prompt_kwargs(arch: str, table: Any, neg: Any, for_pipe: bool) -> dict[str, Any]:
    """Prompt arguments of the stock pipeline (`for_pipe`) or of `sample_pipeline` for one prompt."""
    spec = ARCHS[arch]
    if arch == "sd15":
        return {"prompt_embeds": table[:1], "negative_prompt_embeds": neg, "guidance_scale": spec["guidance_scale"]}
    if arch == "flux":
        kw = {"prompt_embeds": table["prompt_embeds"][:1], "pooled_prompt_embeds": table["pooled_prompt_embeds"][:1]}
        return {**kw, "guidance_scale": spec["guidance"]} if for_pipe else {**kw, "guidance": spec["guidance"]}
    return {"prompt_embeds": table["prompt_embeds"][:1], "prompt_attention_mask": table["prompt_attention_mask"][:1],
            "negative_prompt_embeds": neg["prompt_embeds"], "negative_prompt_attention_mask": neg["prompt_attention_mask"],
            "guidance_scale": spec["guidance_scale"]}


def time_scheduler(arch: str, handle: Any, pipe: Any, nfe: int, size: tuple[int, int, int | None],
                   device: str) -> dict[str, Any]:
    """A GOD schedule (iPNDM on the model's default heuristic) replayed inside the stock pipeline with
    `IndisScheduler` (one prompt, latents out), and the relative difference to indis' own loop on the same prior."""
    from ..integrations.diffusers import IndisScheduler, pack_flux, pack_ltx, sample_pipeline
    from ..methods import learned
    from ..solvers import steps_for_nfe

    god = learned(handle, "god", steps_for_nfe("ipndm", nfe, False), "ipndm")
    original = pipe.scheduler
    pipe.scheduler = IndisScheduler.from_discretization(god, original.config)
    dtype = next(pipe.vae.parameters()).dtype
    table, neg = prompt_table(arch, 1, dtype, device)
    h, w, f = size
    dims = {"height": h, "width": w, **({"num_frames": f} if f else {})}
    z = torch.randn(1, *handle.data_shape, generator=torch.Generator().manual_seed(0)).to(device)
    # Stable Diffusion's pipeline scales given latents by init_noise_sigma itself; FLUX's and LTX's take them as they are
    sigma0 = float(pipe.scheduler.init_noise_sigma) if arch == "sd15" else 1.0
    packed = {"sd15": lambda v: v, "flux": pack_flux, "ltx": pack_ltx}[arch]
    try:
        _sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = pipe(num_inference_steps=pipe.scheduler.num_model_calls, output_type="latent", latents=packed(z), **dims,
                       **_prompt_kwargs(arch, table, neg, True))
        _sync(device)
        secs = time.perf_counter() - t0
        with torch.no_grad():
            ref = sample_pipeline(pipe, discretization=god, latents=z * sigma0, output_type="latent", **dims,
                                  **_prompt_kwargs(arch, table, neg, False))
    finally:
        pipe.scheduler = original
    got = (out.images if hasattr(out, "images") else out.frames).float()
    ref = packed(ref).float()
    rel = float((got - ref).norm() / ref.norm().clamp_min(1e-12))
    return {"nfe": nfe, "pipeline_s": secs, "model_calls": god.nfe, "rel_diff_vs_sample_pipeline": rel}


def pipe_model(pipe: Any) -> torch.nn.Module:
    """The denoising network of a pipeline (UNet or transformer)."""
    return pipe.unet if hasattr(pipe, "unet") else pipe.transformer
