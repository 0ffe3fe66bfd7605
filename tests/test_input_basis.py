"""INDIS with phi reading x_T projected on the data's principal directions (`net={"input_basis": k}`): the basis is
the top-k PCA of samples (checked against numpy's eigendecomposition of the covariance), phi sees nothing of x_T
outside it, training fits it from the training priors' teacher endpoints, save/load keeps it, and bad uses fail with
a clear message."""
import json
import os
import sys

import numpy as np
import pytest
import torch

from indis.discretizations import InstanceSchedule, load_discretization
from indis.discretizations.prior_net import PriorNet, principal_directions
from indis.errors import InputError
from indis.methods import learned
from indis.teacher import TeacherSet
from indis.training import TrainConfig, train_discretizer

sys.path.insert(0, os.path.dirname(__file__))

DT = torch.float64


def _pca(x: np.ndarray, k: int) -> np.ndarray:
    """Reference: the top-k eigenvectors of the sample covariance, as rows."""
    w, v = np.linalg.eigh(np.cov(x.reshape(len(x), -1), rowvar=False))
    return v[:, np.argsort(w)[::-1][:k]].T


def _same_span(a: torch.Tensor, b: np.ndarray, tol: float) -> None:
    """Two sets of orthonormal rows span the same subspace (equal projection matrices, to `tol`)."""
    a = a.double().numpy()
    assert np.allclose(a @ a.T, np.eye(len(a)), atol=tol)  # orthonormal rows
    assert np.abs(a.T @ a - b.T @ b).max() < tol


def test_principal_directions_match_the_covariance_eigenvectors():
    g = torch.Generator().manual_seed(0)
    # exact path: variances 3^2 ... 0.1^2 along the axes of a random rotation (distinct, well separated at the top)
    q = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=DT))[0]
    x = (torch.randn(500, 20, generator=g, dtype=DT) * torch.linspace(3, 0.1, 20, dtype=DT)) @ q.T + 5.0
    # the exact SVD and eigh agree to round-off (1e-8: a sum over 500 samples in float64)
    _same_span(principal_directions(x, 3), _pca(x.numpy(), 3), 1e-8)
    # randomised path (n and D above 1,024): a rank-4 signal of variance ~100 over isotropic noise of variance 1e-4; the
    # seeded randomised SVD finds that subspace up to ~noise/signal = 1e-6, and a tolerance of 1e-4 leaves room
    n, dim = 1100, 1100
    basis = torch.linalg.qr(torch.randn(dim, 4, generator=g, dtype=DT))[0]
    y = 10 * torch.randn(n, 4, generator=g, dtype=DT) @ basis.T + 1e-2 * torch.randn(n, dim, generator=g, dtype=DT)
    _same_span(principal_directions(y, 4), _pca(y.numpy(), 4), 1e-4)
    assert torch.equal(principal_directions(y, 4), principal_directions(y, 4))  # seeded: the same basis twice
    for bad in (0, 20, 600):
        with pytest.raises(InputError, match="input_basis needs 1 <= k"):
            principal_directions(x[:20], bad)


def test_phi_reads_only_the_projection():
    net = PriorNet([6], 5, hidden=16, input_basis=2, denoised_input=True).double()
    x = torch.randn(4, 6, dtype=DT)
    with pytest.raises(InputError, match="never fitted: call fit_basis"):
        net(x, denoised=x)
    assert net.needs_basis
    e = torch.randn(100, 6, dtype=DT) * torch.tensor([5.0, 4.0, 0.1, 0.1, 0.1, 0.1], dtype=DT)
    net.fit_basis(e)
    assert not net.needs_basis
    torch.nn.init.normal_(net.head.weight)  # a trained head: the output now depends on phi's input
    b = net.encoder.basis
    ortho = torch.randn(4, 6, dtype=DT)
    ortho = ortho - ortho @ b.T @ b  # no component along the basis
    # invariant to the orthogonal part of either input up to round-off (a projection of ~1e-16)
    assert torch.allclose(net(x + 3 * ortho, denoised=x - 2 * ortho), net(x, denoised=x), atol=1e-10)
    assert not torch.allclose(net(x + b[0], denoised=x), net(x, denoised=x), atol=1e-3)  # along it: it moves
    assert not torch.allclose(net(x, denoised=x + b[1]), net(x, denoised=x), atol=1e-3)  # D is projected too
    img = PriorNet([2, 3, 3], 5, hidden=16, input_basis=3, denoised_input=True).double()  # images: C, H, W flattened
    img.fit_basis(torch.randn(40, 2, 3, 3, dtype=DT) * torch.linspace(3, 0.2, 18, dtype=DT).reshape(2, 3, 3))
    torch.nn.init.normal_(img.head.weight)
    bi = img.encoder.basis.reshape(3, 2, 3, 3)
    xi = torch.randn(4, 2, 3, 3, dtype=DT)
    oi = torch.randn(4, 18, dtype=DT)
    oi = (oi - oi @ img.encoder.basis.T @ img.encoder.basis).reshape(4, 2, 3, 3)
    assert torch.allclose(img(xi + oi, denoised=xi - oi), img(xi, denoised=xi), atol=1e-10)
    assert not torch.allclose(img(xi, denoised=xi + bi[0]), img(xi, denoised=xi), atol=1e-3)  # D's own projection
    with pytest.raises(InputError, match="fit_basis needs endpoints of shape"):
        net.fit_basis(torch.randn(10, 5))
    with pytest.raises(InputError, match="input_basis must be >= 0"):
        PriorNet([6], 5, input_basis=-1)
    with pytest.raises(InputError, match="built with input_basis > 0"):
        PriorNet([6], 5).fit_basis(e)


def _teacher(tmp_path, name="t", seed="0", num="60"):
    from indis.cli import main

    assert main(["teacher", "--model", "python:fake_models:make_gmm", "--steps", "8", "--num", num, "--out",
                 str(tmp_path / name), "--seed", seed, "--no-progress"]) == 0
    return tmp_path / name


def test_training_fits_the_basis_on_the_training_endpoints_and_save_load_keeps_it(tmp_path):
    from fake_models import make_gmm

    torch.set_num_threads(1)
    h = make_gmm()
    ts = TeacherSet(_teacher(tmp_path))
    d = learned(h, "indis", 3, "ipndm", net={"input_basis": 2, "hidden": 16})
    assert d.needs_basis
    tr = list(range(0, 40))
    cfg = TrainConfig(iterations=4, batch_size=8, val_every=2, train_indices=tr, val_indices=list(range(40, 60)))
    train_discretizer(d, h.denoiser, ts, cfg, progress=False, dtype=DT)
    assert not d.needs_basis
    x0 = ts.x0()
    # the training endpoints' principal plane, not that of all 60 (phi keeps the basis in its float32: 1e-6)
    _same_span(d.phi.encoder.basis, _pca(x0[tr].double().numpy(), 2), 1e-6)
    assert np.abs(d.phi.encoder.basis.double().numpy().T @ d.phi.encoder.basis.double().numpy()
                  - _pca(x0.double().numpy(), 2).T @ _pca(x0.double().numpy(), 2)).max() > 1e-6
    back = load_discretization(d.save(tmp_path / "saved"))
    assert isinstance(back, InstanceSchedule) and not back.needs_basis
    assert torch.equal(back.phi.encoder.basis, d.phi.encoder.basis)
    x = torch.randn(5, *h.data_shape)
    assert torch.allclose(back(x).times, d(x).times)


def test_cli_input_basis(tmp_path, capsys):
    from indis.cli import main

    t = _teacher(tmp_path, num="48")
    gmm = "python:fake_models:make_gmm"
    small = ["--steps", "3", "--iterations", "4", "--val-every", "2", "--batch-size", "8", "--no-progress", "--json"]
    assert main(["train", "--model", gmm, "--teacher", str(t), "--method", "god", "--starts", "1",
                 "--out", str(tmp_path / "god"), *small]) == 0
    assert main(["train", "--model", gmm, "--teacher", str(t), "--method", "indis", "--input-basis", "2",
                 "--denoised-input", "--init", str(tmp_path / "god" / "best"), "--out", str(tmp_path / "ind"), *small]) == 0
    capsys.readouterr()
    d = load_discretization(tmp_path / "ind" / "best")
    assert d.phi.input_basis == 2 and d.denoised_input and not d.needs_basis
    cfg = json.loads((tmp_path / "ind" / "best" / "config.json").read_text())
    assert "input_basis" in json.dumps(cfg)
    for bad, msg in ((["--method", "god", "--input-basis", "2"], "--input-basis is an option of phi"),
                     (["--method", "indis", "--input-basis", "0"], "--input-basis")):
        assert main(["train", "--model", gmm, "--teacher", str(t), *bad, "--out", str(tmp_path / "bad"), *small]) == 2
        assert msg in capsys.readouterr().err
