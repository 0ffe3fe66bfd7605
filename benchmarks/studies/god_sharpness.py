"""How sharp is GOD's optimum in one cell of `indis bench scaling`, and is the sharpness carried by a few priors?
GOD's raw parameters are jittered by Gaussian noise of standard deviation sigma (as phi's first optimiser steps move
them away from its warm start) and the per-prior validation teacher-MSE is compared with GOD's own: the ratio of the
means, and the share of the rise carried by the priors whose error rose most (top 1% and 5%). A share near or above 1
in the top 1% means a handful of priors changed mode and everything else stayed put: a validation loss that no
smooth phi can lower by small steps.

    python benchmarks/studies/god_sharpness.py OUT/cells/random-d8-K10-none-nfe3-s0

Nothing is trained; the cell's cached GOD and teacher sets are read.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from indis.bench import scaling as S
from indis.losses import mse
from indis.metrics.stats import tail_share

SIGMAS = (0.001, 0.003, 0.01, 0.03)


def rise_shares(base: np.ndarray, new: np.ndarray, tops: Sequence[float] = (0.01, 0.05)) -> dict[str, float]:
    """Mean ratio new / base and, for each fraction q in `tops`, the share of the total rise sum(new - base) carried by
    the round(q * n) priors whose error rose most (`tail_share`; nan where the total did not rise)."""
    delta = np.asarray(new, float) - np.asarray(base, float)
    rose = delta.sum() > 0
    return {"ratio": float(np.mean(new) / np.mean(base)),
            **{f"top{q:g}": tail_share(delta, q) if rose else float("nan") for q in tops}}


def jittered(disc: Any, sigma: float, generator: torch.Generator) -> Any:
    """A copy of `disc` with N(0, sigma^2) added to every parameter."""
    out = copy.deepcopy(disc)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(sigma * torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device))
    return out


def _median(v: Sequence[float]) -> float:
    """Median of the values that are not nan (nan when none is: no draw raised the error)."""
    v = [x for x in v if not np.isnan(x)]
    return float(np.median(v)) if v else float("nan")


def main(folder: Path, settings: dict[str, Any] | None = None, sigmas: Sequence[float] = SIGMAS, reps: int = 8,
         seed: int = 0) -> dict[str, Any]:
    """The jitter table of the cell in `folder` (GOD cached by the bench; its settings: the full study's unless
    given): per sigma the median, least and largest validation ratio over `reps` draws and the median shares."""
    torch.set_num_threads(1)
    _, _, h, exp, (_, god) = S.open_cell(folder, settings)
    _, xv, cv, x0 = exp.data("val")
    god = god.eval()
    with torch.no_grad():
        base = mse(god.sample(h.denoiser, xv, cv), x0).cpu().numpy()
    tail = tail_share(base, 0.01)
    print(f"{folder.name}: GOD validation teacher-MSE {base.mean():.3g}, its worst 1% of priors carry {tail:.2f} of it")
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {"god_val": float(base.mean()), "god_tail_share": tail, "sigmas": {}}
    for sig in sigmas:
        rows = []
        for _ in range(reps):
            with torch.no_grad():
                rows.append(rise_shares(base, mse(jittered(god, sig, g).sample(h.denoiser, xv, cv), x0).cpu().numpy()))
        r = {k: [row[k] for row in rows] for k in rows[0]}
        out["sigmas"][sig] = {"ratio_median": float(np.median(r["ratio"])), "ratio_min": float(min(r["ratio"])),
                              "ratio_max": float(max(r["ratio"])), "top1": _median(r["top0.01"]),
                              "top5": _median(r["top0.05"])}
        v = out["sigmas"][sig]
        print(f"- sigma {sig:g}: validation / GOD median {v['ratio_median']:.3f} ({v['ratio_min']:.3f} to "
              f"{v['ratio_max']:.3f}); share of the rise in the top 1% of priors {v['top1']:.2f}, top 5% {v['top5']:.2f}",
              flush=True)
    return out


if __name__ == "__main__":
    main(Path(sys.argv[1]))
