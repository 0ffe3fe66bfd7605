"""Why does INDIS stay at its GOD warm start in some cells? For one finished cell of `indis bench scaling` (its cached
GOD is reused), INDIS is trained again from that GOD under variants of its training (learning rate, batch, warm-up,
weight decay, phi's width, training loss; validation and test stay teacher-MSE) and each variant's course is printed:
the median training loss over its first and last 10 iterations (medians: a batch holding a prior sent to the
wrong mode carries 100x the loss), the validation checks, the best iteration and the test
ratio to GOD. A training loss that falls while validation rises is phi fitting its training priors.

    python benchmarks/studies/indis_variants.py OUT/cells/random-d1024-K2-none-nfe3-s2

Each variant is a run of its own in the cell's cache (its spec names the variant), so a second call reprints.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indis.bench import scaling as S
from indis.losses import mse
from indis.metrics.stats import ratio_ci

#: name -> (learning rate, batch, warm-up iterations, weight decay, phi options, training loss)
VARIANTS: dict[str, tuple[float, int, int, float, dict[str, Any] | None, str]] = {
    "bench (lr 1e-3)": (1e-3, 64, 0, 0.0, None, "mse"),
    "lr 1e-4": (1e-4, 64, 0, 0.0, None, "mse"),
    "warm-up 200": (1e-3, 64, 200, 0.0, None, "mse"),
    "batch 512, lr 1e-4": (1e-4, 512, 0, 0.0, None, "mse"),
    "weight decay 0.5": (1e-3, 64, 0, 0.5, None, "mse"),
    "hidden 16": (1e-3, 64, 0, 0.0, {"hidden": 16}, "mse"),
    "pseudo-Huber loss": (1e-3, 64, 0, 0.0, None, "pseudo_huber"),
    "INDIS-D (reads D(x_T, t_max))": (1e-3, 64, 0, 0.0, {"denoised_input": True}, "mse"),
}


def run_variant(exp: Any, h: Any, c: dict[str, Any], s: dict[str, Any], gsp: dict[str, Any], god: Any,
                v: tuple[float, int, int, float, dict[str, Any] | None, str]) -> dict[str, Any]:
    """INDIS from the cell's GOD under one variant; the training-loss course, validation checks and test ratio."""
    import indis.training.loop as loop

    lr, batch, warm, wd, net, loss = v
    extra = {k: x for k, x in (("warmup", warm), ("wd", wd), ("loss", loss if loss != "mse" else 0)) if x}
    budget, tcfg, evaluate, lrs = S._budget, S._tcfg, loop.evaluate_loss, S.INDIS_LRS
    S._budget = lambda s_: {**budget(s_), **extra}
    S._tcfg = lambda c_, s_, lr_, run_=0: dataclasses.replace(tcfg(c_, s_, lr_, run_), warmup=warm, weight_decay=wd, loss=loss)
    loop.evaluate_loss = lambda disc, den, ts, idx, _fn, *a, **k: evaluate(disc, den, ts, idx, mse, *a, **k)
    S.INDIS_LRS = (lr,)
    try:
        sp, d, info, _ = S._from_god(exp, h, c, dict(s, batch=batch), gsp, "indis", net)
    finally:
        S._budget, S._tcfg, loop.evaluate_loss, S.INDIS_LRS = budget, tcfg, evaluate, lrs
    hist = json.loads((exp.run_dir(sp) / "train" / "history.json").read_text())["history"]
    losses = [e["loss"] for e in hist if "loss" in e]
    m = S._test_mse(exp, {"god": (gsp, god), "x": (sp, d)})
    return {"train_first10": float(np.median(losses[:10])), "train_last10": float(np.median(losses[-10:])),
            "val": [(e["iteration"], e["val"]) for e in hist if "val" in e], "best_iter": info["best_iter"],
            "ratio": float(m["x"].mean() / m["god"].mean()), "ci": ratio_ci(m["x"], m["god"])}


def main(folder: Path, settings: dict[str, Any] | None = None, variants: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every variant on the cell in `folder` (its bench settings: the full study's unless given); returns the results."""
    torch.set_num_threads(1)
    c, s, h, exp, (gsp, god) = S.open_cell(folder, settings)
    print(f"{folder.name}: INDIS from its GOD; training loss (median of the first / last 10 iterations), validation "
          "teacher-MSE at each check, best iteration, test INDIS/GOD [95% CI]")
    out = {}
    for name, v in (VARIANTS if variants is None else variants).items():
        r = out[name] = run_variant(exp, h, c, s, gsp, god, v)
        vals = " ".join(f"{x:.3g}" for _, x in r["val"][:8])
        print(f"- {name}: training {r['train_first10']:.3g} -> {r['train_last10']:.3g}; validation {vals}; best at "
              f"{r['best_iter']}; INDIS/GOD {r['ratio']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]", flush=True)
    return out


if __name__ == "__main__":
    main(Path(sys.argv[1]))
