"""Real-model metrics: clear errors without weights, FID/KID through torchmetrics with a tiny feature net, CMMD, ST-LPIPS."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from indis.errors import InputError, MissingDependencyError
from indis.metrics import perceptual, real


class TinyFeatures(nn.Module):
    num_features = 8

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.net(x.float() / 255 if not x.is_floating_point() else x)


def _imgs(seed, shift=0.0, n=16):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 16, 16, generator=g) * 0.8 + shift).clamp(0, 1)


def test_fid_kid_with_feature_module():
    pytest.importorskip("torchmetrics")
    f = TinyFeatures()
    same = real.fid(_imgs(0), _imgs(1), feature=f)
    far = real.fid(_imgs(0), _imgs(2, shift=0.3), feature=f)
    assert 0 <= same < far
    mean, std = real.kid(_imgs(0), _imgs(2, shift=0.3), feature=f, subset_size=8, subsets=5)
    assert mean > 0 and std >= 0


def test_missing_weights_and_bad_inputs_are_clear(tmp_path):
    with pytest.raises(InputError, match="inception_weights"):
        real.fid(_imgs(0), _imgs(1))
    with pytest.raises(InputError, match="no such file"):
        real.fid(_imgs(0), _imgs(1), inception_weights=tmp_path / "missing.pth")
    (tmp_path / "inc.pth").write_bytes(b"x")
    if importlib.util.find_spec("torch_fidelity") is None:
        with pytest.raises(MissingDependencyError, match="torch-fidelity"):
            real.fid(_imgs(0), _imgs(1), inception_weights=tmp_path / "inc.pth")
    with pytest.raises(InputError, match="num_features"):
        real.fid(_imgs(0), _imgs(1), feature=nn.Identity())
    with pytest.raises(InputError, match="clip_model"):
        real.clip_score(_imgs(0, n=2), ["a", "b"])
    with pytest.raises(InputError, match="not a local transformers model folder"):
        real.cmmd(_imgs(0), _imgs(1), clip_model=tmp_path)
    with pytest.raises(InputError, match="images"):
        real.fid(torch.rand(4, 5, 8, 8), _imgs(1), feature=TinyFeatures())


def test_cmmd_with_custom_embedding():
    embed = lambda x: nn.functional.normalize(x.mean((2, 3)), dim=-1)  # noqa: E731
    a = real.cmmd(_imgs(0), _imgs(1), embed=embed)
    b = real.cmmd(_imgs(0), _imgs(2, shift=0.3) * torch.tensor([1.0, 0.2, 0.2])[:, None, None], embed=embed)
    assert b > a


def test_perceptual_errors(tmp_path):
    with pytest.raises(InputError, match="backbone_weights"):
        perceptual.perceptual_loss("lpips")
    with pytest.raises(InputError, match="unknown perceptual"):
        perceptual.perceptual_loss("dists")
    bad = tmp_path / "alex.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(InputError, match="do not fit|lin_weights"):
        perceptual.lpips(bad, lin_weights=bad)


def test_lpips_from_local_state_dicts(tmp_path):
    alex = perceptual._Alex()
    sd = {f"{src}.{p}": getattr(getattr(alex, dst), p).detach() for src, dst in perceptual._Alex._KEYS.items() for p in ("weight", "bias")}
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(perceptual._CHANNELS)}
    torch.save(sd, tmp_path / "alexnet.pth")
    torch.save(heads, tmp_path / "heads.pth")
    loss = perceptual.perceptual_loss("lpips", backbone_weights=tmp_path / "alexnet.pth", lin_weights=tmp_path / "heads.pth")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    d = loss(x, x.flip(-1))
    assert d.shape == (2,) and (d > 0).all() and loss(x, x).abs().max() < 1e-6


@pytest.mark.skipif(importlib.util.find_spec("stlpips_pytorch") is None,
                    reason="stlpips-pytorch is not installed (pip install stlpips-pytorch; its 61 MB wheel ships the weights)")
def test_stlpips_offline():
    loss = perceptual.perceptual_loss("stlpips")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1  # upsampled to 32 px inside
    near = (x + 0.05 * torch.randn(2, 3, 16, 16, generator=g)).clamp(-1, 1)
    far = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    x.requires_grad_(True)
    dn, df = loss(x, near), loss(x, far)
    assert dn.shape == (2,) and (dn < df).all()
    df.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_stlpips_missing_package_message(monkeypatch):
    monkeypatch.setattr(perceptual, "_package_file", lambda *a: None)
    with pytest.raises(MissingDependencyError, match="stlpips-pytorch"):
        perceptual.perceptual_loss("stlpips")
