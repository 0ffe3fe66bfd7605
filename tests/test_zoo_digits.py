"""Tests for indis.zoo: the shipped digits EDM denoiser, its classifier, recipe reproducibility and the CLI."""
import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from indis.errors import InputError
from indis.zoo import WEIGHTS_DIR, ZOO_NAMES, load_classifier, load_zoo
from indis.zoo.digits import load_digits_tensor
from indis.zoo.train import sha256_file




def edm_sigmas(n: int, smin: float = 0.002, smax: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64) / (n - 1)
    s = (smax ** (1 / rho) + i * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def heun_sample(fn, x: torch.Tensor, cond, n: int) -> torch.Tensor:
    """EDM Heun sampler (Karras et al. 2022, alg. 1 without churn), written independently of indis' solvers."""
    s = edm_sigmas(n)
    for i in range(n):
        sc, sn = float(s[i]), float(s[i + 1])
        d = (x - fn(x, torch.full((x.shape[0],), sc), cond)) / sc
        xn = x + (sn - sc) * d
        if sn > 0:
            d2 = (xn - fn(xn, torch.full((x.shape[0],), sn), cond)) / sn
            xn = x + (sn - sc) * 0.5 * (d + d2)
        x = xn
    return x


@pytest.mark.parametrize("name", [n for n in ZOO_NAMES if n.startswith("zoo:digits")])
def test_zoo_model_contract(name):
    m = load_zoo(name)
    assert m.schedule_name == "edm" and m.prediction == "x0" and m.shape == (1, 8, 8)
    assert m.num_classes == (10 if name == "zoo:digits-cond" else 0)
    assert 0.5 < m.sigma_data < 1.0
    assert {"recipe", "seed", "training_time_s", "sha256"} <= set(m.meta)
    assert not m.fn.training and not any(p.requires_grad for p in m.fn.parameters())
    x = torch.randn(5, 1, 8, 8)
    t = torch.tensor([0.002, 0.1, 1.0, 10.0, 80.0])
    cond = torch.arange(5) if m.num_classes else None
    out = m.fn(x, t, cond)
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert m.fn(x.double(), t, cond).dtype == torch.float64  # output follows the input dtype
    assert torch.equal(load_zoo(name.removeprefix("zoo:")).fn(x, t, cond), out)


def test_gradients_flow_to_inputs_and_sigma():
    m = load_zoo("zoo:digits-cond")
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    m.fn(x, t, torch.tensor([1, 2, 3])).sum().backward()
    assert x.grad is not None and t.grad is not None and (t.grad != 0).all()


def test_unconditional_is_null_label():
    x, t = torch.randn(4, 1, 8, 8), torch.full((4,), 2.0)
    cond_model = load_zoo("zoo:digits-cond").fn
    uncond = load_zoo("zoo:digits").fn(x, t, None)
    assert torch.equal(cond_model(x, t, None), uncond)
    assert torch.equal(cond_model(x, t, torch.full((4,), 10)), uncond)
    assert not torch.allclose(cond_model(x, t, torch.zeros(4, dtype=torch.long)), uncond)


def test_unknown_name_lists_valid_names():
    with pytest.raises(InputError, match="zoo:digits-cond"):
        load_zoo("zoo:cifar10")
    with pytest.raises(InputError, match="cond"):
        load_zoo("zoo:digits-cond").fn(torch.zeros(2, 1, 8, 8), torch.ones(2), torch.tensor([3, 11]))


def _float64_denoiser_output(x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """EDM eq. 7, D = c_skip x + c_out F(c_in x, c_noise), written out here and run entirely in float64 on a float64
    copy of the shipped network (the zoo model itself always computes in float32)."""
    net = copy.deepcopy(load_zoo("zoo:digits-cond").fn.net).double()
    sd = 0.75
    s = sigma.double()[:, None, None, None]
    x = x.double()
    c_skip, c_out, c_in = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt(), 1 / (s**2 + sd**2).sqrt()
    with torch.no_grad():
        return c_skip * x + c_out * net(c_in * x, sigma.double().log() / 4, cond)


def _float32_tolerance(scale: float) -> float:
    """Bound on how far two float32 evaluations of the zoo U-Net can differ when only the summation order changes
    (other CPU, instruction set, thread count or library build). A float32 dot product of length K has a worst-case
    rounding error of K*u relative to the sum of its absolute terms (Higham, gamma_K), u = 2^-24; errors of L
    layers in sequence add. K is the widest fan-in of any layer (conv: in_channels * kernel area) and L the number
    of weight layers; `scale` is the size of the network's output F on these inputs. Two machines each within the
    bound of the exact value differ by at most twice it."""
    net = load_zoo("zoo:digits-cond").fn.net
    layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear))]
    K = max(m.weight[0].numel() if not isinstance(m, torch.nn.ConvTranspose2d) else m.weight.shape[0] * m.weight[0, 0].numel()
            for m in layers)
    return 2 * len(layers) * K * 2.0**-24 * scale


def test_shipped_weights_are_faithful():
    meta = json.loads((WEIGHTS_DIR / "digits-cond.json").read_text())
    # the shipped weights are the trained ones: checksums compare exactly
    assert sha256_file(WEIGHTS_DIR / meta["weights"]) == meta["sha256"]
    ref = load_file(str(WEIGHTS_DIR / "digits-cond-reference.safetensors"))  # inputs and output stored at ship time
    exact = _float64_denoiser_output(ref["x"], ref["sigma"], ref["cond"])
    scale = float((exact - ref["x"].double() * (0.75**2 / (ref["sigma"].double()[:, None, None, None] ** 2 + 0.75**2))).abs().max())
    tol = _float32_tolerance(max(scale, 1.0))
    out = load_zoo("zoo:digits-cond").fn(ref["x"], ref["sigma"], ref["cond"]).double()
    # the stored float32 output (ship machine) and this machine's float32 output both lie within the float32
    # rounding bound of the float64 evaluation, hence within twice of each other
    assert float((ref["out"].double() - exact).abs().max()) <= tol / 2
    assert float((out - exact).abs().max()) <= tol / 2
    assert float((out - ref["out"].double()).abs().max()) <= tol
    # a wrong preconditioning or a mismatched layer would be far outside it
    assert tol < 1e-2


def test_classifier_heldout_accuracy():
    clf = load_classifier()
    x, y = load_digits_tensor("heldout")
    with torch.no_grad():
        acc = float((clf(x).argmax(1) == y).float().mean())
    assert acc > 0.97


def test_conditional_samples_have_the_requested_class():
    m = load_zoo("zoo:digits-cond")
    g = torch.Generator().manual_seed(7)
    labels = torch.arange(20) % 10
    x = heun_sample(m.fn, 80 * torch.randn(20, 1, 8, 8, generator=g), labels, 40)
    assert x.abs().max() < 1.5
    with torch.no_grad():
        acc = float((load_classifier()(x.clamp(-1, 1)).argmax(1) == labels).float().mean())
    assert acc >= ACC_THRESHOLD


# measured at ship time: 20/20 correct for seeds 0..9 (and 99.0% over 1000 samples with a 100-step Heun)
ACC_THRESHOLD = 0.9


def test_train_recipe_is_reproducible(tmp_path):
    from indis.zoo.train import train_digits

    a = train_digits(tmp_path / "a", seed=3, steps=12, reference=False, verbose=False)
    b = train_digits(tmp_path / "b", seed=3, steps=12, reference=False, verbose=False)
    assert a["sha256"] == b["sha256"]
    m = load_zoo("zoo:digits-cond", weights_dir=tmp_path / "a")
    assert m.meta["steps"] == 12 and m.meta["seed"] == 3


def test_cli_zoo_list_and_errors(capsys):
    from indis.cli import main

    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    assert "zoo:digits " in out and "zoo:digits-cond" in out and "digits-classifier" in out
    assert main(["zoo", "train", "cifar10"]) == 2
    assert "digits-classifier" in capsys.readouterr().err
    assert main(["zoo", "train", "digits", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err


def test_zoo_check_saves_grid_and_classifier_recognises_samples(tmp_path):
    from indis.zoo.cli import check_digits

    r = check_digits(str(tmp_path), per_class=3, steps=30)
    assert (tmp_path / "digits-samples.png").stat().st_size > 1000
    assert r["samples"] == 30 and r["classifier_accuracy"] >= 0.8


def test_cli_sample_writes_samples_and_picture(tmp_path):
    from safetensors.torch import load_file

    from indis.cli import main

    assert main(["sample", "--model", "zoo:digits-cond", "--method", "edm", "--steps", "5", "--num", "6",
                 "--out", str(tmp_path)]) == 0
    x = load_file(str(tmp_path / "samples.safetensors"))
    assert x["samples"].shape == (6, 1, 8, 8) and x["cond"].shape == (6,)
    assert (tmp_path / "samples.png").stat().st_size > 500
