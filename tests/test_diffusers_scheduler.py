"""Trained schedules inside stock diffusers pipelines (`IndisScheduler`) and shared like models (`save_pretrained` /
`from_pretrained`, `indis export`), on tiny random UNet, Stable Diffusion and FLUX stand-ins built from configs."""
from __future__ import annotations

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import indis  # noqa: E402
from indis.cli import main  # noqa: E402
from indis.discretizations import FixedSchedule, GlobalSchedule, InstanceSchedule, heuristic, load_discretization  # noqa: E402
from indis.errors import InputError  # noqa: E402
from indis.integrations import diffusers as dx  # noqa: E402
from indis.integrations.diffusers import IndisScheduler  # noqa: E402

SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
# The pipeline and sample_pipeline run the same float32 model calls on the same states; they differ only in where
# classifier-free guidance and the solver arithmetic happen (batched vs separate), i.e. by float32 rounding.
TOL = 1e-4


def _global(schedule, solver, steps=4, afs=False, shape=(4, 8, 8), init="edm", seed=0):
    d = GlobalSchedule(steps, schedule, solver, data_shape=shape, init_times=heuristic(init, steps, schedule), afs=afs,
                       shift_bound=0.3, scale_bound=0.1)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a learned-looking shift and scale, so both really travel through the pipeline
        d.shift_logits.copy_(torch.randn(steps, generator=g, dtype=torch.float64))
        d.scale_logits.copy_(torch.randn(steps, generator=g, dtype=torch.float64))
    return d


@pytest.fixture(scope="module")
def sd():
    torch.manual_seed(1)
    unet = diffusers.UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                          down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                          up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                                          cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
    vae = diffusers.AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8)
    sch = diffusers.DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return diffusers.StableDiffusionPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=sch,
                                             safety_checker=None, feature_extractor=None, requires_safety_checker=False)


@pytest.mark.parametrize("solver,afs", [("ipndm", False), ("dpmpp_3m", True), ("unipc", False), ("euler", False)])
def test_sd_pipeline_with_indis_scheduler_equals_sample_pipeline(sd, solver, afs):
    S = dx.vp_schedule(sd.scheduler)
    d = _global(S, solver, afs=afs)
    pe, npe = torch.randn(2, 7, 32), torch.zeros(2, 7, 32)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    common = dict(prompt_embeds=pe, negative_prompt_embeds=npe, guidance_scale=5.0, height=16, width=16, output_type="latent")
    original = sd.scheduler
    try:
        sd.scheduler = IndisScheduler.from_discretization(d, original.config)
        n = sd.scheduler.num_model_calls
        assert n == indis.solver_nfe(solver, 4, afs) + int(afs)  # AFS: the pipeline's first call goes unused
        ref = sd(**common, num_inference_steps=n, latents=z).images
        with torch.no_grad():
            out = dx.sample_pipeline(sd, **common, discretization=d, latents=z * sd.scheduler.init_noise_sigma)
    finally:
        sd.scheduler = original
    assert (out - ref).abs().max() < TOL * out.abs().max()


def test_flux_pipeline_with_indis_scheduler_equals_sample_pipeline():
    torch.manual_seed(0)
    tr = diffusers.FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                                          num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                                          guidance_embeds=True, axes_dims_rope=(4, 4, 8))
    vae = diffusers.AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8)
    pipe = diffusers.FluxPipeline(scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None,
                                  tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=tr)
    d = _global(dx.flow_schedule(), "ipndm", shape=(4, 16, 16), init="uniform")
    pe, pooled = torch.randn(2, 7, 32), torch.randn(2, 32)
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = dx.sample_pipeline(pipe, prompt_embeds=pe, pooled_prompt_embeds=pooled, discretization=d, latents=z, height=32,
                                 width=32, guidance=3.5, output_type="latent")
    pipe.scheduler = IndisScheduler.from_discretization(d, pipe.scheduler.config)
    ref = pipe(prompt_embeds=pe, pooled_prompt_embeds=pooled, num_inference_steps=pipe.scheduler.num_model_calls, height=32,
               width=32, guidance_scale=3.5, latents=dx.pack_flux(z), output_type="latent").images
    assert (dx.pack_flux(out) - ref).abs().max() < TOL * out.abs().max()


@pytest.fixture(scope="module")
def pixel():
    torch.manual_seed(2)
    unet = diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32),
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                                 layers_per_block=1, norm_num_groups=8, attention_head_dim=8)
    return diffusers.DDIMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler(prediction_type="v_prediction"))


def test_pixel_pipeline_with_indis_scheduler(pixel):
    S = dx.vp_schedule(pixel.scheduler)
    d = _global(S, "ipndm", shape=(3, 16, 16))
    z = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = dx.sample_pipeline(pixel, batch_size=2, discretization=d, latents=z, output_type="latent")
    original = pixel.scheduler
    try:
        pixel.scheduler = IndisScheduler.from_discretization(d, original.config)
        # DDIMPipeline draws randn(generator) without init_noise_sigma: the same draw as the latents above
        ref = pixel(batch_size=2, generator=torch.Generator().manual_seed(5), num_inference_steps=4, output_type="np").images
    finally:
        pixel.scheduler = original
    img = (out.clamp(-1, 1) / 2 + 0.5).permute(0, 2, 3, 1).numpy()
    assert abs(img - ref).max() < TOL


def test_pipeline_save_pretrained_keeps_the_scheduler(sd, tmp_path):
    d = _global(dx.vp_schedule(sd.scheduler), "dpmpp_3m")
    pe, npe = torch.randn(2, 7, 32), torch.zeros(2, 7, 32)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    common = dict(prompt_embeds=pe, negative_prompt_embeds=npe, guidance_scale=5.0, height=16, width=16, output_type="latent",
                  num_inference_steps=4, latents=z)
    original = sd.scheduler
    try:
        sd.scheduler = IndisScheduler.from_discretization(d, original.config)
        ref = sd(**common).images
        sd.save_pretrained(tmp_path / "pipe")
    finally:
        sd.scheduler = original
    loaded = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "pipe", local_files_only=True, text_encoder=None,
                                                         tokenizer=None, safety_checker=None, feature_extractor=None)
    assert type(loaded.scheduler) is IndisScheduler
    assert torch.equal(loaded(**common).images, ref)  # same process, same weights and inputs: identical bits


def test_clear_errors(sd):
    S = dx.vp_schedule(sd.scheduler)
    phi = InstanceSchedule(3, S, "ipndm", data_shape=(4, 8, 8), init_times=heuristic("edm", 3, S), net={"hidden": 8, "channels": 4})
    with pytest.raises(InputError, match="sample_pipeline"):
        IndisScheduler.from_discretization(phi, sd.scheduler.config)
    sch = IndisScheduler.from_discretization(_global(S, "ipndm"), sd.scheduler.config)
    with pytest.raises(InputError, match=r"4 model calls.*num_inference_steps=7"):
        sch.set_timesteps(7)
    d = _global(S, "ipndm")
    d.extra["model_info"] = {"prediction": "v"}
    with pytest.raises(InputError, match=r"'v'.*'epsilon'"):
        IndisScheduler.from_discretization(d, sd.scheduler.config)
    with pytest.raises(InputError, match="flow"):
        IndisScheduler.from_discretization(_global(indis.FlowMatching(), "ipndm", init="uniform"), sd.scheduler.config)


def test_save_pretrained_files_card_and_round_trip(tmp_path):
    h = indis.load_model("zoo:digits")
    d = _global(h.schedule, "ipndm", shape=(1, 8, 8))
    d.extra.update({"model_info": indis.model_info(h), "command": "indis train ...", "train": {"iterations": 10, "best_val": 0.1}})
    d.save_pretrained(tmp_path / "god")
    cfg = json.loads((tmp_path / "god" / "config.json").read_text())
    for k in ("method", "nfe", "solver", "afs", "schedule", "model", "data_shape", "indis_version"):
        assert k in cfg, k
    assert cfg["model"]["spec"] == "zoo:digits" and cfg["nfe"] == 4
    card = (tmp_path / "god" / "README.md").read_text()
    assert "zoo:digits" in card and "indis train ..." in card and "IndisScheduler" in card
    x = torch.randn(3, 1, 8, 8) * 80
    e = indis.from_pretrained(tmp_path / "god", model=h)
    # same code, same inputs, one process: bit-identical
    assert torch.equal(e.sample(h.denoiser, x), d.sample(h.denoiser, x))
    with pytest.raises(InputError, match="trained for zoo:digits"):
        load_discretization(tmp_path / "god", model=indis.load_model("zoo:digits-cond"))
    assert load_discretization(tmp_path / "god", model=indis.load_model("zoo:digits-cond"), force=True).steps == 4


def test_first_save_format_still_loads(tmp_path):
    from indis.discretizations import persist
    from indis.io import atomic_write_json, save_tensors

    d = FixedSchedule(3, indis.EDM(), "ipndm", times=heuristic("edm", 3, indis.EDM()), data_shape=[2])
    cfg = {**persist.config(d), "format_version": 1}
    cfg.pop("nfe")
    cfg.pop("model")
    save_tensors(tmp_path / "weights.safetensors", dict(d.state_dict()))
    atomic_write_json(tmp_path / "config.json", cfg)
    assert torch.equal(load_discretization(tmp_path).times, d.times)


def test_hub_repo_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="HF_HUB_OFFLINE"):
        indis.from_pretrained("someone/some-indis-schedule")


def test_cli_export(tmp_path, capsys):
    h = indis.load_model("zoo:digits")
    d = _global(h.schedule, "ipndm", shape=(1, 8, 8))
    d.extra["model_info"] = indis.model_info(h)
    d.save(tmp_path / "god")
    assert main(["export", "--discretization", str(tmp_path / "god"), "--format", "sigmas-json", "--out", str(tmp_path / "s.json")]) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert len(s["sigmas"]) == 4 and s["sigmas"][0] == pytest.approx(80.0) and s["dropped"] == ["shift", "scale"]
    assert "cannot be expressed" in capsys.readouterr().err
    assert main(["export", "--discretization", str(tmp_path / "god"), "--format", "diffusers", "--out", str(tmp_path / "sch")]) == 2
    assert "DDPM" in capsys.readouterr().err  # an EDM schedule has no diffusers pipeline scheduler equivalent
    phi = InstanceSchedule(3, h.schedule, "ipndm", data_shape=(1, 8, 8), init_times=heuristic("edm", 3, h.schedule),
                           net={"hidden": 8, "channels": 4})
    phi.save(tmp_path / "phi")
    assert main(["export", "--discretization", str(tmp_path / "phi"), "--format", "sigmas-json", "--out", str(tmp_path / "p.json")]) == 2
    assert "per sample" in capsys.readouterr().err


def test_cli_export_diffusers_loads_in_a_pipeline(pixel, tmp_path):
    S = dx.vp_schedule(diffusers.DDIMScheduler(prediction_type="v_prediction"))
    d = _global(S, "unipc", shape=(3, 16, 16))
    d.extra["model_info"] = {"prediction": "v", "spec": "diffusers:pixel"}
    d.save(tmp_path / "god")
    assert main(["export", "--discretization", str(tmp_path / "god"), "--format", "diffusers", "--out", str(tmp_path / "sch")]) == 0
    sch = IndisScheduler.from_pretrained(tmp_path / "sch")
    assert sch.config.solver == "unipc" and sch.num_model_calls == 4
    assert sch.eval_times == IndisScheduler.from_discretization(d).eval_times
