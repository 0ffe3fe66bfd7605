"""Several starts for one learned discretization, chosen on validation loss.

The loss of a learned schedule over its logits has more than one basin (on zoo:digits at NFE 3 a GOD started at
EDM rho=7 with a small learning rate settles at t_1 ~ 12 with twice the teacher-MSE of the basin at t_1 ~ 1.1).
`train_with_starts` trains each start for a short probe with the same data and learning rate, keeps the one with
the lowest validation loss and trains it on under the full budget rule. Every learned method uses it; the
number of starts is a setting (one start = plain training)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..denoiser import Denoiser
from ..discretizations.base import Discretizer
from ..errors import InputError
from ..io import atomic_write_json, load_json
from ..teacher import TeacherSet
from .config import TrainConfig, TrainResult
from .loop import TrainRun


def train_with_starts(build: Callable[[Any], Discretizer], starts: Sequence[Any], denoiser: Denoiser, teacher: TeacherSet,
                      cfg: TrainConfig, *, probe_iterations: int = 100, out_dir: str | Path | None = None,
                      device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, progress: bool = True,
                      describe: Callable[[Any], str] = str, **kw: Any) -> tuple[Discretizer, TrainResult]:
    """Probe every start for `probe_iterations` (resumable under `out_dir/starts/K`), continue the best on
    validation under `cfg` in `out_dir`. Returns the trained discretization and the main run's result, whose
    `starts` lists every start's probe validation loss and `seconds` includes the probes."""
    if not starts:
        raise InputError("train_with_starts needs at least one start")
    if len(starts) == 1:
        d = build(starts[0])
        r = TrainRun(d, denoiser, teacher, cfg, out_dir=out_dir, device=device, dtype=dtype, **kw).run(progress=progress)
        r.starts = [{"start": describe(starts[0]), "val": r.best_val, "chosen": True}]
        return d, r
    if probe_iterations < 1:
        raise InputError(f"probe_iterations must be >= 1, got {probe_iterations}")
    root = Path(out_dir) if out_dir is not None else None
    pcfg = replace(cfg, iterations=probe_iterations, val_every=probe_iterations, patience=0)
    probes: list[tuple[float, int, Discretizer, float]] = []
    for k, s in enumerate(starts):
        d = build(s)
        r = TrainRun(d, denoiser, teacher, pcfg, out_dir=None if root is None else root / "starts" / str(k), device=device,
                     dtype=dtype, **kw).run(progress=progress)
        probes.append((r.best_val, k, d, r.seconds))
    best_val, kbest, d, _ = min(probes, key=lambda p: (p[0], p[1]))
    chosen = {"start": describe(starts[kbest]), "index": kbest, "val": best_val}
    if root is not None:  # a resumed main run must continue the same start
        f = root / "start.json"
        if f.is_file() and load_json(f).get("index") != kbest:
            raise InputError(f"'{root}' continues start {load_json(f).get('index')} but the probes now pick {kbest}; "
                             "delete the folder to start over")
        atomic_write_json(f, chosen)
    r = TrainRun(d, denoiser, teacher, cfg, out_dir=root, device=device, dtype=dtype, **kw).run(progress=progress)
    r.seconds += sum(p[3] for p in probes)
    r.starts = [{"start": describe(starts[k]), "val": v, "chosen": k == kbest} for v, k, _, _ in sorted(probes, key=lambda p: p[1])]
    return d, r
