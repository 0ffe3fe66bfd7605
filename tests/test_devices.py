"""Device placement without a GPU: a model whose weights sit on torch's `meta` device (shapes only, no data) refuses any
input on another device, so every probe call and prior that indis makes for a model must be created where the model
lives. (tests/test_cuda.py checks the numbers on a real GPU; this catches a CPU-made tensor on any machine.)"""
import pytest
import torch
from torch import nn

import indis
from indis.models import ModelHandle

META = torch.device("meta")


class Strict(nn.Module):
    """x0 = w * x, with every input required on w's device."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()), requires_grad=False)

    def forward(self, x, t, cond=None):
        for name, v in (("x", x), ("t", t), ("cond", cond)):
            if isinstance(v, torch.Tensor) and v.device != self.w.device:
                raise AssertionError(f"{name} on {v.device}, the model on {self.w.device}")
        return x * self.w


def _handle() -> ModelHandle:
    den = indis.Denoiser(Strict(), indis.EDM(), "x0")
    return ModelHandle(den, (1, 4, 4), "python:strict", "class", 3)


def test_probe_calls_and_calibration_priors_follow_the_model():
    from indis.methods import amed_feature, calibration_priors

    h = _handle()
    on_cpu = amed_feature(h)
    h.denoiser.to(META)
    assert h.denoiser.device == META
    assert amed_feature(h) == on_cpu  # AMED's probe call ran on the model's device
    x_T, cond = calibration_priors(h)
    assert x_T.device == META and cond.device == META


def test_gits_warmup_priors_are_made_on_the_model_device(monkeypatch):
    import importlib

    from indis.methods import fixed

    gits_module = importlib.import_module("indis.discretizations.gits")  # the package re-exports the function's name

    seen = {}

    def spy(den, x_T, steps, cond=None, **kw):
        seen.update(x=x_T.device, c=cond.device)
        return indis.heuristic("edm", steps, den.schedule)

    monkeypatch.setattr(gits_module, "gits", spy)
    h = _handle()
    h.denoiser.to(META)
    fixed(h, "gits", 3, warmup=8)
    assert seen == {"x": META, "c": META}


def test_experiment_moves_the_model_to_its_device(tmp_path):
    from indis.experiment import Experiment, ExperimentConfig

    h = _handle()
    Experiment(tmp_path, h, ExperimentConfig(model=h.spec, sizes={"train": 8, "val": 8, "test": 8}), device="meta")
    assert h.denoiser.device == META


def test_exact_mixture_follows_its_inputs():
    from indis.bench.scaling_models import random_mixture

    mix = random_mixture(4, 3)
    out = mix.posterior_mean(torch.zeros(2, 4, device=META), torch.ones(2, device=META), None)
    assert out.device == META and mix.mu.device == META
    with pytest.raises(AssertionError, match="x on cpu"):  # and the strict model really refuses a stray tensor
        Strict().to(META)(torch.zeros(1), torch.zeros(1, device=META))
