"""EDM pickles: refused without trust_pickle, loaded (same outputs) with it."""
from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

import indis
from indis.errors import InputError
from indis.integrations.edm import edm_denoiser, load_edm


class TinyEDMPrecond(nn.Module):
    """A stand-in for NVlabs' EDMPrecond: c_skip/c_out/c_in/c_noise preconditioning around a tiny conv net."""

    def __init__(self, label_dim: int = 0):
        super().__init__()
        self.img_channels, self.img_resolution, self.label_dim = 1, 8, label_dim
        self.sigma_min, self.sigma_max, self.sigma_data = 0.0, float("inf"), 0.5
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.emb = nn.Linear(1 + label_dim, 1)

    def forward(self, x, sigma, class_labels=None):
        sigma = sigma.reshape(-1, 1, 1, 1).to(torch.float32)
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sd**2 + sigma**2).sqrt()
        c_noise = sigma.log() / 4
        e = c_noise.reshape(-1, 1)
        if self.label_dim:
            e = torch.cat([e, class_labels.reshape(-1, self.label_dim)], 1)
        F_x = self.conv(c_in * x) + self.emb(e).reshape(-1, 1, 1, 1)
        return c_skip * x + c_out * F_x


@pytest.fixture()
def pkl(tmp_path):
    torch.manual_seed(0)
    net = TinyEDMPrecond(label_dim=3)
    path = tmp_path / "network-snapshot.pkl"
    with open(path, "wb") as f:
        pickle.dump({"ema": net, "augment_pipe": None}, f)
    return path, net


def test_pickle_refused_without_flag(pkl):
    path, _ = pkl
    with pytest.raises(InputError, match="trust-pickle"):
        indis.load_model(f"edm:{path}")
    with pytest.raises(InputError, match="no such file"):
        indis.load_model(f"edm:{path}.missing", trust_pickle=True)


def test_trusted_pickle_gives_same_outputs(pkl):
    path, net = pkl
    h = indis.load_model(f"edm:{path}", trust_pickle=True)
    assert h.data_shape == (1, 8, 8) and h.cond_kind == "class" and h.num_classes == 3
    assert isinstance(h.schedule, indis.EDM) and h.denoiser.prediction == "x0"
    x = torch.randn(2, 1, 8, 8)
    t = torch.tensor([5.0, 0.3])
    labels = torch.tensor([2, -1])
    onehot = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    with torch.no_grad():
        x0, _ = h.denoiser(x, t, labels)
        assert (x0 - net(x, t, onehot)).abs().max() < 1e-6
        out = indis.sample(h.denoiser, x * 80, indis.heuristic("edm", 4, h.schedule), cond=labels)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_edm_denoiser_unconditional():
    net = TinyEDMPrecond()
    den = edm_denoiser(net)
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        assert (den(x, torch.tensor([1.0]))[0] - net(x, torch.tensor([1.0]))).abs().max() < 1e-6
    with pytest.raises(InputError, match="no such file"):
        load_edm("/nonexistent/x.pkl")
