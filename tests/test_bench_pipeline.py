"""`indis bench pipeline`: the stored real-size configs build the published models (meta device, nothing allocated);
every job runs end to end through the public API on tiny stand-ins of the same classes; low precision keeps per-sample
times distinct and phi's gradients finite."""
from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from indis.bench import pipeline as bp  # noqa: E402
from indis.bench import pipeline_run as pr  # noqa: E402

TINY = {  # tiny configs of the same classes (the real ones are checked on the meta device below)
    "sd15": {"_class_name": "UNet2DConditionModel", "sample_size": 8, "in_channels": 4, "out_channels": 4,
             "block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "layers_per_block": 1, "cross_attention_dim": 16,
             "attention_head_dim": 8, "norm_num_groups": 8},
    "flux": {"_class_name": "FluxTransformer2DModel", "patch_size": 1, "in_channels": 16, "num_layers": 1,
             "num_single_layers": 2, "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 16,
             "pooled_projection_dim": 8, "guidance_embeds": True, "axes_dims_rope": [4, 4, 8]},
    "ltx": {"_class_name": "LTXVideoTransformer3DModel", "in_channels": 8, "out_channels": 8, "patch_size": 1,
            "patch_size_t": 1, "num_attention_heads": 2, "attention_head_dim": 8, "cross_attention_dim": 16,
            "num_layers": 1, "caption_channels": 16},
}


@pytest.mark.parametrize("arch", ["sd15", "flux", "ltx"])
def test_stored_configs_build_the_published_models(arch):
    """Published parameter counts (model cards / the released checkpoints): SD 1.5 UNet 859,520,964; FLUX.1-dev
    transformer 11,901,408,320; LTX-Video (0.9) transformer 1,923,385,472. Built on the meta device: no memory."""
    m = bp.build_model(arch, meta=True)
    assert sum(p.numel() for p in m.parameters()) == bp.PARAMS[arch]
    assert all(p.device.type == "meta" for p in m.parameters())
    if arch != "sd15":
        cfg = bp.load_config(arch, blocks=2)
        assert cfg["num_layers"] == 2 and cfg.get("num_single_layers", 4) == 4  # FLUX: K double, 2K single


@pytest.fixture
def tiny(monkeypatch):
    real = bp.load_config

    def load(arch, blocks=None):
        cfg = dict(TINY[arch])
        for key, per in bp.ARCHS[arch]["depth"].items():
            cfg[key] = per * (blocks or 1)
        return cfg

    monkeypatch.setattr(bp, "load_config", load)
    for arch, text in (("sd15", (7, 16)), ("flux", (6, 16)), ("ltx", (5, 16))):
        monkeypatch.setitem(bp.ARCHS, arch, {**bp.ARCHS[arch], "text": text, "pooled": 8, "small": (64, 64, 9 if arch == "ltx" else None)})
    return real


@pytest.mark.parametrize("arch", ["sd15", "flux", "ltx"])
def test_every_job_runs_through_the_public_api(tiny, arch):
    torch.manual_seed(0)
    base = {"arch": arch, "device": "cpu", "dtype": "float32", "threads": None, "size": bp.ARCHS[arch]["small"],
            "size_name": "small", "blocks": 1 if bp.ARCHS[arch]["depth"] else None}
    res = [pr.child({**base, "kind": "calls"}), pr.child({**base, "kind": "teacher"}),
           pr.child({**base, "kind": "sampling", "nfe": 5}), pr.child({**base, "kind": "scheduler", "nfe": 5})]
    res += [pr.child({**base, "kind": "train", "nfe": n, "checkpoint": ck}) for n in (3, 7) for ck in (True, False)]
    for r in res:
        assert r["peak_memory_bytes"] > 0 and r["params"] > 0
    calls, teacher, sampling, scheduler = res[:4]
    assert calls["call_s"] > 0 and calls["bare_call_s"] > 0 and calls["cfg"] == (arch != "flux")  # FLUX: distilled guidance
    assert teacher["throughput_ratio"] > 0 and 0 < sampling["phi_share"] < 1
    # the stock pipeline with IndisScheduler and indis' own loop: the same float32 model calls, so float32 rounding apart
    assert scheduler["rel_diff_vs_sample_pipeline"] < 1e-4
    assert all(r["phi_grads_finite"] for r in res[4:])
    s = pr.summarize(arch, res)
    assert s["memory_ratio"] is not None and s["phi_share"] == sampling["phi_share"] and s["phi_grads_finite"]


def test_plan_and_scaling_fit():
    import argparse

    p = argparse.ArgumentParser()
    pr.add_arguments(p)
    jobs = pr.plan(p.parse_args(["--arch", "flux", "--blocks", "2"]))
    kinds = [j["kind"] for j in jobs]
    assert kinds.count("calls") == 4 and kinds.count("train") == 6  # 2 sizes x 2 depths; NFE 3/5/7 x checkpoint
    assert {j["blocks"] for j in jobs if j["kind"] == "calls"} == {2, 4}
    assert all(j["size_name"] == "small" for j in jobs if j["kind"] != "calls")  # CPU: the stated smaller size
    # a linear cost in depth: 1 s outside the blocks + 2 s per block, measured at 2 and 4 blocks
    calls = [{"kind": "calls", "size_name": "full", "blocks": k, "call_s": 1 + 2 * k, "bare_call_s": 2 * k,
              "latent_shape": [16, 128, 128]} for k in (2, 4)]
    sc = pr.scaling("flux", calls)["full"]
    assert sc["per_block_s"] == pytest.approx(2) and sc["outside_blocks_s"] == pytest.approx(1)
    assert sc["full_depth_call_s_estimate"] == pytest.approx(1 + 2 * 19)


class _Recorder(torch.nn.Module):
    """A bfloat16 stand-in that records the timesteps it receives and returns zeros of the input's shape."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1, dtype=torch.bfloat16))
        self.seen = []
        self.config = type("C", (), {"guidance_embeds": False})()

    def forward(self, sample=None, timestep=None, hidden_states=None, return_dict=False, **kw):
        self.seen.append(timestep.detach().clone())
        x = sample if sample is not None else hidden_states
        return ((x * self.w),)


def test_low_precision_times_reach_the_model_distinct():
    from indis.integrations.diffusers import FluxCall, SDUNetCall, UNetCall

    t = torch.tensor([500.0, 500.4, 500.8])  # closer than bfloat16's spacing at 500 (2.0)
    assert len(set(t.to(torch.bfloat16).tolist())) == 1
    for call, x, cond in ((UNetCall(_Recorder()), torch.zeros(3, 4, 2, 2), None),
                          (SDUNetCall(_Recorder()), torch.zeros(3, 4, 2, 2), torch.zeros(3, 5, 8)),
                          (FluxCall(_Recorder(), guidance=None), torch.zeros(3, 4, 2, 2),
                           {"prompt_embeds": torch.zeros(3, 5, 8), "pooled_prompt_embeds": torch.zeros(3, 8)})):
        out = call(x, t / (1000 if isinstance(call, FluxCall) else 1), cond)
        seen = call.model.seen[-1]
        assert seen.dtype == torch.float32 and len(set(seen.tolist())) == 3, (type(call).__name__, seen)
        assert out.dtype == x.dtype  # back in the solver's dtype


def test_training_through_a_bfloat16_model_gives_finite_phi_gradients(tiny):
    torch.manual_seed(0)
    r = pr.child({"arch": "sd15", "device": "cpu", "dtype": "bfloat16", "threads": None, "size": (64, 64, None),
                  "size_name": "small", "blocks": None, "kind": "train", "nfe": 3, "checkpoint": True})
    assert r["phi_grads_finite"] and r["train_step_s"] > 0
