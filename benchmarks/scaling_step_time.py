"""Seconds per training step (forward and backward of a 5-step UniPC solve, batch 64, one thread) on the exact mixtures
of `indis bench scaling`: the cost that decides how long a cell takes. Compare two versions of the code by pointing
PYTHONPATH at each source tree, e.g.

    mkdir -p /tmp/old && git archive d21a9dd~1 src | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old/src python benchmarks/scaling_step_time.py
    PYTHONPATH=src python benchmarks/scaling_step_time.py
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from indis.bench.scaling_models import EMBED_DIM, mixture_handle, random_mixture
from indis.solvers import sample

CASES = [(256, 100, "none", 1.0), (256, 100, "class", 4.0), (256, 100, "embedding", 1.0), (1024, 2, "none", 1.0),
         (1024, 10, "class", 4.0), (1024, 100, "none", 1.0), (1024, 100, "class", 1.0), (1024, 100, "class", 4.0)]


def step_seconds(d: int, K: int, cond: str, guidance: float, repeats: int, batch: int = 64) -> float:
    """Median seconds of one forward+backward pass through a 5-step solve with per-sample times requiring grad."""
    h = mixture_handle(random_mixture(d, K), cond, guidance)
    g = torch.Generator().manual_seed(0)
    x_T = 80 * torch.randn(batch, d, generator=g)
    rows = torch.randint(0, min(K, 10), (batch,), generator=g)
    c = None if cond == "none" else rows if cond == "class" else h.cond_table[rows].reshape(batch, EMBED_DIM)
    log_t = torch.tensor([80.0, 10.0, 2.0, 0.5, 0.1, 0.002]).log().repeat(batch, 1)
    out = []
    for _ in range(repeats):
        lt = log_t.clone().requires_grad_()
        start = time.perf_counter()
        sample(h.denoiser, x_T, lt.exp(), solver="unipc", cond=c).pow(2).mean().backward()
        out.append(time.perf_counter() - start)
    return statistics.median(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7, help="timed steps per case (the median is printed)")
    args = p.parse_args()
    torch.set_num_threads(1)
    print("| d | K | condition | CFG | seconds per step |\n|---|---|---|---|---|")
    for d, K, cond, gs in CASES:
        print(f"| {d} | {K} | {cond} | {gs:g} | {step_seconds(d, K, cond, gs, args.repeats):.4f} |", flush=True)


if __name__ == "__main__":
    main()
