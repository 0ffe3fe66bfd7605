"""The shipped zoo denoisers are the trained ones and load faithfully: their checksums match the model cards and
their float32 output on fixed inputs stored at ship time agrees, within a float32 rounding bound, with an
independent float64 evaluation of EDM's preconditioning (eq. 7) written out here."""
import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from indis.zoo import WEIGHTS_DIR, load_zoo
from indis.zoo.train import sha256_file

SHIPPED = [("zoo:digits-cond", "digits-cond"), ("zoo:glyphs", "glyphs-cond")]


def _float64_denoiser_output(name: str, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """EDM eq. 7, D = c_skip x + c_out F(c_in x, c_noise), run entirely in float64 on a float64 copy of the shipped
    network (the zoo model itself always computes in float32)."""
    m = load_zoo(name)
    net = copy.deepcopy(m.fn.net).double()
    sd = m.sigma_data
    s = sigma.double()[:, None, None, None]
    x = x.double()
    c_skip, c_out, c_in = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt(), 1 / (s**2 + sd**2).sqrt()
    with torch.no_grad():
        return c_skip * x + c_out * net(c_in * x, sigma.double().log() / 4, cond)


def _float32_tolerance(name: str, scale: float) -> float:
    """Bound on how far two float32 evaluations of the zoo U-Net can differ when only the summation order changes
    (other CPU, instruction set, thread count or library build). A float32 dot product of length K has a worst-case
    rounding error of K*u relative to the sum of its absolute terms (Higham, gamma_K), u = 2^-24; errors of L
    layers in sequence add. K is the widest fan-in of any layer (conv: in_channels * kernel area) and L the number
    of weight layers; `scale` is the size of the network's output F on these inputs. Two machines each within the
    bound of the exact value differ by at most twice it."""
    net = load_zoo(name).fn.net
    layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear))]
    K = max(m.weight[0].numel() if not isinstance(m, torch.nn.ConvTranspose2d) else m.weight.shape[0] * m.weight[0, 0].numel()
            for m in layers)
    return 2 * len(layers) * K * 2.0**-24 * scale


@pytest.mark.parametrize("name,stem", SHIPPED)
def test_shipped_weights_are_faithful(name, stem):
    meta = json.loads((WEIGHTS_DIR / f"{stem}.json").read_text())
    # the shipped weights are the trained ones: checksums compare exactly
    assert sha256_file(WEIGHTS_DIR / meta["weights"]) == meta["sha256"]
    ref = load_file(str(WEIGHTS_DIR / f"{stem}-reference.safetensors"))  # inputs and output stored at ship time
    exact = _float64_denoiser_output(name, ref["x"], ref["sigma"], ref["cond"])
    sd = float(meta["recipe"]["sigma_data"])
    c_skip = sd**2 / (ref["sigma"].double()[:, None, None, None] ** 2 + sd**2)
    scale = float((exact - ref["x"].double() * c_skip).abs().max())  # the size of c_out F
    tol = _float32_tolerance(name, max(scale, 1.0))
    out = load_zoo(name).fn(ref["x"], ref["sigma"], ref["cond"]).double()
    # the stored float32 output (ship machine) and this machine's float32 output both lie within the float32
    # rounding bound of the float64 evaluation, hence within twice of each other
    assert float((ref["out"].double() - exact).abs().max()) <= tol / 2
    assert float((out - exact).abs().max()) <= tol / 2
    assert float((out - ref["out"].double()).abs().max()) <= tol
    # a wrong preconditioning or a mismatched layer would be far outside it
    assert tol < 1e-2
