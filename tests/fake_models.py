"""Tiny analytic models for fast CLI tests (`--model python:fake_models:make_...` with tests/ on PYTHONPATH).

The denoiser is the exact posterior mean E[x0 | x_t] of a 2-component isotropic Gaussian mixture in 3-D under
the EDM schedule (sigma = t), so it is cheap, smooth and deterministic in float32 and float64.
"""
from __future__ import annotations

import math
import os
import time

import torch

from indis.denoiser import Denoiser
from indis.errors import require
from indis.models import ModelHandle
from indis.schedules import EDM

SHAPE = (3,)


def _mixture_fn(means: torch.Tensor, std: float, weights: torch.Tensor):
    def fn(x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        mu = means.to(x)  # [K, D]
        w = weights.to(x)
        var = std * std + t.to(x)[:, None] ** 2  # [B, 1] marginal variance of x_t around each mean
        d2 = ((x[:, None, :] - mu[None]) ** 2).sum(-1)  # [B, K]
        logits = torch.log(w)[None] - 0.5 * d2 / var - 0.5 * x.shape[1] * torch.log(var)
        r = torch.softmax(logits, -1)  # [B, K]
        post = mu[None] + (std * std / var)[..., None] * (x[:, None, :] - mu[None])  # [B, K, D]
        delay = float(os.environ.get("FAKE_MODEL_DELAY", "0") or 0)  # seconds per call: lets tests kill mid-run
        if delay:
            time.sleep(delay)
        return (r[..., None] * post).sum(1)

    return fn


def _handle(means, std=0.5, weights=(0.4, 0.6), spec="") -> ModelHandle:
    m = torch.tensor(means, dtype=torch.float64)
    den = Denoiser(_mixture_fn(m, std, torch.tensor(weights, dtype=torch.float64)), EDM(), "x0")
    return ModelHandle(den, SHAPE, spec)


def ring_mixture():
    """Eight anisotropic Gaussians on a ring in 2-D, two classes (even/odd): a toy with exact denoisers where the
    per-instance schedule matters (tests of learned discretizations)."""
    from indis.toy.gmm import GaussianMixture

    dt = torch.float64
    ang = torch.arange(8, dtype=dt) * (2 * math.pi / 8)
    means = 0.6 * torch.stack([ang.cos(), ang.sin()], 1)
    u = torch.stack([-ang.sin(), ang.cos()], 1)
    covs = 0.02 * u[:, :, None] * u[:, None, :] + 0.0005 * torch.eye(2, dtype=dt)
    return GaussianMixture(torch.ones(8, dtype=dt) / 8, means, covs, labels=torch.arange(8) % 2)


def make_gmm() -> ModelHandle:
    """The reference model."""
    return _handle([[1.0, 0.5, -0.5], [-1.0, -0.5, 0.8]])


def make_other() -> ModelHandle:
    """Same data shape and schedule, different distribution: 'another model'."""
    return _handle([[0.3, -1.2, 0.9], [-0.7, 1.1, -0.2]], std=0.3)


def make_nan() -> ModelHandle:
    """A model whose outputs are NaN everywhere."""
    return ModelHandle(Denoiser(lambda x, t, c=None: torch.full_like(x, math.nan), EDM(), "x0"), SHAPE)


def make_nan_late() -> ModelHandle:
    """Finite at large noise (passes a probe at sigma = 1) but Inf near the data (sigma < 0.5)."""
    base = _mixture_fn(torch.tensor([[1.0, 0.5, -0.5], [-1.0, -0.5, 0.8]]), 0.5, torch.tensor([0.4, 0.6]))

    def fn(x, t, c=None):
        out = base(x, t, c)
        return torch.where((t < 0.5)[:, None], torch.full_like(out, math.inf), out)

    return ModelHandle(Denoiser(fn, EDM(), "x0"), SHAPE)


def make_image() -> ModelHandle:
    """Another data shape ([1, 4, 4]) on the same EDM schedule."""
    den = Denoiser(lambda x, t, c=None: x / (1 + t.to(x)[:, None, None, None] ** 2), EDM(), "x0")
    return ModelHandle(den, (1, 4, 4))


def make_empty_prompts() -> ModelHandle:
    """A text-conditional model given an empty prompt list (a condition table with zero rows)."""
    h = make_gmm()
    h.cond_kind = "table"
    h.cond_table = torch.zeros(0, 4)
    return h


def make_needs_diffusers() -> ModelHandle:
    """A model that needs the optional package `diffusers` (hidden in the test's subprocess)."""
    require("diffusers", "this model", extra="diffusers")
    return make_gmm()


# -- helpers shared by test_distributed / test_resume / test_hostile_inputs (not model factories) -------------------
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def cli_env(**extra: str) -> dict:
    """Environment for `python -m indis` subprocesses: tests/ importable, the suite's thread count per process."""
    env = dict(os.environ)
    threads = str(max(1, int(os.environ.get("INDIS_TEST_THREADS") or os.environ.get("OMP_NUM_THREADS") or 1)))
    src = os.path.join(os.path.dirname(TESTS_DIR), "src")
    env["PYTHONPATH"] = os.pathsep.join([TESTS_DIR, src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    env.pop("FAKE_MODEL_DELAY", None)
    env.update(extra)
    return env


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def indis_cmd(*args: str, nproc: int = 1) -> list:
    """argv for `python -m indis ARGS`, or `torchrun --nproc_per_node NPROC -m indis ARGS` (gloo on CPU)."""
    import sys

    if nproc == 1:
        return [sys.executable, "-m", "indis", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), "-m", "indis", *args]


def run_indis(*args: str, nproc: int = 1, timeout: float = 120, env: dict | None = None, check: bool = True):
    import subprocess

    r = subprocess.run(indis_cmd(*args, nproc=nproc), env=env or cli_env(), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"indis {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def popen_indis(*args: str, env: dict | None = None):
    """Start `python -m indis ARGS` in the background with the default SIGINT handler (so Ctrl-C can be tested even
    when the test runner was started with SIGINT ignored)."""
    import signal
    import subprocess

    return subprocess.Popen(indis_cmd(*args), env=env or cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(pred, proc, timeout: float = 60, poll: float = 0.01) -> bool:
    """Poll `pred()` until true; False if the process ended first or the time ran out."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        if proc.poll() is not None:
            return bool(pred())
        time.sleep(poll)
    return False


def make_raising() -> ModelHandle:
    """A user factory that fails while building the model."""
    raise RuntimeError("boom: checkpoint path not configured")


def gmm_val_loss(path, ts, val: torch.Tensor) -> float:
    """Teacher-MSE of a schedule saved at `path` for `make_gmm` on the priors `val` of teacher set `ts`, in float64:
    computed here rather than read from the training run that saved it."""
    from indis.discretizations.base import load_discretization
    from indis.losses import mse

    d = load_discretization(path)
    idx, x_T, cond, x0 = ts.batch(val, torch.float64, "cpu")
    with torch.no_grad():
        return float(mse(d.double().sample(make_gmm().denoiser, x_T, cond, idx), x0).mean())
