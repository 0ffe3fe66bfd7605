"""`indis bench solvers`: solver overhead and backprop memory with gradient checkpointing.

- overhead: wall time of `indis.sample` at NFE 5 divided by the time of exactly 5 direct model calls on the
  same batch (target <= 1.03 on CPU);
- memory: peak extra memory of one forward+backward through NFE 3 and NFE 10 with `checkpoint=True`, each in
  a fresh process (CPU: ru_maxrss; CUDA: max_memory_allocated), ratio target <= 1.3.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import torch
from torch import nn

import indis


class BenchNet(nn.Module):
    """A small convolutional x0-predictor (~0.3M parameters) standing in for a pixel U-Net."""

    def __init__(self, ch: int = 64, depth: int = 6):
        super().__init__()
        self.inp = nn.Conv2d(3, ch, 3, padding=1)
        self.blocks = nn.ModuleList([nn.Conv2d(ch, ch, 3, padding=1) for _ in range(depth)])
        self.emb = nn.Linear(1, ch)
        self.out = nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        h = self.inp(x / torch.sqrt(1 + t[:, None, None, None] ** 2))
        e = self.emb(torch.log(t)[:, None] / 4)[:, :, None, None]
        for b in self.blocks:
            h = h + torch.nn.functional.silu(b(h) + e)
        return self.out(h)


def _setup(batch: int, size: int, seed: int = 0):
    torch.manual_seed(seed)
    net = BenchNet().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    den = indis.Denoiser(net, indis.EDM(), "x0")
    x = torch.randn(batch, 3, size, size) * 80
    return net, den, x


def overhead(batch: int = 16, size: int = 32, nfe: int = 5, repeats: int = 15, solver: str = "ipndm") -> dict[str, Any]:
    """Best-of-`repeats` time of sample() at `nfe` over the best time of `nfe` bare model calls (the minimum is
    the estimate least disturbed by other load on the machine)."""
    net, den, x = _setup(batch, size)
    times = indis.heuristic("edm", nfe, den.schedule)
    tt = [torch.full((batch,), float(v)) for v in times[:-1]]

    def bare() -> None:
        for t in tt:
            net(x, t)

    def solve() -> None:
        indis.sample(den, x, times, solver=solver)

    with torch.no_grad():
        bare(), solve()  # warm-up
        tb, ts = [], []
        for _ in range(repeats):  # interleave to share machine noise
            t0 = time.perf_counter(); bare(); tb.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); solve(); ts.append(time.perf_counter() - t0)
    mb, ms = min(tb), min(ts)
    return {"solver": solver, "nfe": nfe, "batch": batch, "image": [3, size, size], "model_calls_s": mb, "sample_s": ms, "overhead_ratio": ms / mb}


def _peak_child(nfe: int, batch: int, size: int, device: str) -> dict[str, Any]:
    net, den, x = _setup(batch, size)
    net.to(device)
    x = x.to(device)
    base = indis.heuristic("edm", nfe, den.schedule).to(device)
    logits = torch.zeros(nfe, device=device, requires_grad=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t = torch.cat([base[:1], base[1:-1] * torch.exp(0.01 * logits[:-1]), base[-1:]])
    out = indis.sample(den, x, t.float(), solver="ipndm", checkpoint=True)
    out.pow(2).mean().backward()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"nfe": nfe, "peak_extra_bytes": int(peak)}


def memory(batch: int = 16, size: int = 32, device: str = "cpu") -> dict[str, Any]:
    """Peak extra memory of backprop through NFE 3 and NFE 10 with checkpoint=True, each in a fresh process."""
    res = {}
    for nfe in (3, 10):
        cmd = [sys.executable, "-m", "indis.bench.solvers", "--child", str(nfe), str(batch), str(size), device]
        # large blocks through mmap, so freed memory leaves the resident set and ru_maxrss tracks real use
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), MALLOC_MMAP_THRESHOLD_="65536")
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        res[nfe] = json.loads(out.stdout.strip().splitlines()[-1])["peak_extra_bytes"]
    return {"device": device, "batch": batch, "image": [3, size, size], "peak_extra_mib_nfe3": res[3] / 2**20,
            "peak_extra_mib_nfe10": res[10] / 2**20,
            # None when the NFE-3 peak is below what ru_maxrss resolves (tiny batches): no ratio to report
            "ratio_nfe10_over_nfe3": res[10] / res[3] if res[3] > 0 else None}


def tree_posterior_mean(points: int = 20_000, repeats: int = 3) -> dict[str, Any]:
    """Wall time of the exact tree-toy denoiser on a demo-sized batch (best of `repeats`)."""
    import time

    from ..toy import tree_mixture

    gmm = tree_mixture("A")
    x = torch.randn(points, 2, generator=torch.Generator().manual_seed(0))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        gmm.posterior_mean(x, 0.5, 0.5)
        best = min(best, time.perf_counter() - t0)
    return {"points": points, "components": gmm.num_components, "seconds": best}


def run(batch: int = 16, size: int = 32, device: str = "cpu", threads: int = 1) -> dict[str, Any]:
    torch.set_num_threads(threads)
    ov = [overhead(batch, size, solver=s) for s in ("ipndm", "euler", "dpmpp_3m", "unipc")]
    mem = memory(batch, size, device)
    return {"benchmark": "solvers", "torch": torch.__version__, "threads": threads, "overhead": ov, "memory": mem,
            "tree_posterior_mean": tree_posterior_mean(), "targets": {"overhead_ratio": 1.03, "memory_ratio": 1.3}}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        torch.set_num_threads(1)
        nfe, batch, size, device = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        print(json.dumps(_peak_child(nfe, batch, size, device)))
