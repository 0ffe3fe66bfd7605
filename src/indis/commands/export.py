"""`indis export`: hand a trained global discretization to other tools.

--format diffusers: a scheduler folder (`scheduler_config.json` of `indis.IndisScheduler`) that a stock pipeline loads
  with `pipe.scheduler = IndisScheduler.from_pretrained(FOLDER)`: times, learned shift and scale, solver.
--format sigmas-json: the global grid as the `sigmas=` list pipelines accept (flow time for flow matching, the VE
  noise level sigma/alpha for DDPM-style models), without the final 0 that those schedulers append themselves.
  A learned shift or scale cannot travel in a sigma list: the command says so and records it in the file.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..discretizations.base import FixedSchedule, GlobalSchedule, load_discretization
from ..errors import InputError
from ..io import atomic_write_json, ensure_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained global discretization as a diffusers scheduler or a sigmas list")
    p.add_argument("--discretization", required=True, help="folder of a saved discretization (indis train/schedule --out)")
    p.add_argument("--format", required=True, choices=["diffusers", "sigmas-json"])
    p.add_argument("--out", required=True, help="diffusers: output folder; sigmas-json: output .json file")
    p.set_defaults(func=run)


def _global(d) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    if not isinstance(d, (FixedSchedule, GlobalSchedule)):
        raise InputError(f"a {d.method} discretization chooses its times per sample; only global schedules (heuristics, "
                         "GOD, LD3, GITS, DMN) export to one grid; sample per-instance ones with indis sample or "
                         "indis.integrations.diffusers.sample_pipeline")
    with torch.no_grad():
        s = d(torch.zeros(1, *(d.data_shape or (1,)), dtype=torch.float64))
    return s.times[0], None if s.shift is None else s.shift[0], None if s.scale is None else s.scale[0]


def sigmas_json(d) -> dict:
    """The `sigmas=` list of a global discretization, with what it cannot carry spelled out."""
    times, shift, scale = _global(d)
    flow = d.schedule.name == "flow"
    sig = times if flow else d.schedule.to_edm_sigma(times)
    dropped = [n for n, v, one in (("shift", shift, 0.0), ("scale", scale, 1.0))
               if v is not None and float((v - one).abs().max()) > 1e-6]
    return {"format": "indis-sigmas", "convention": "flow-matching time t" if flow else "VE noise level sigma/alpha",
            "sigmas": [float(v) for v in sig[:-1]], "final": float(sig[-1]), "times": [float(v) for v in times],
            "schedule": d.schedule.config(), "solver": d.solver, "afs": d.afs, "steps": d.steps, "method": d.method,
            "dropped": dropped, "note": ("the learned " + " and ".join(dropped) + " of this discretization cannot be "
                                         "expressed as sigmas; use --format diffusers (IndisScheduler) to keep them")
            if dropped else ""}


def run(args: argparse.Namespace) -> int:
    d = load_discretization(args.discretization)
    if args.format == "sigmas-json":
        out = Path(args.out)
        if out.is_dir():
            raise InputError(f"--out '{out}' is a folder; sigmas-json writes a file (e.g. {out / 'sigmas.json'})")
        res = sigmas_json(d)
        atomic_write_json(out, res)
        if res["dropped"]:
            print(f"indis: warning: {res['note']}", file=__import__("sys").stderr)
        print(json.dumps({"saved": str(out), "sigmas": res["sigmas"], "dropped": res["dropped"]}))
        return 0
    _global(d)
    from ..integrations.diffusers import IndisScheduler

    sch = IndisScheduler.from_discretization(d)
    folder = ensure_dir(args.out)
    sch.save_pretrained(str(folder))
    print(json.dumps({"saved": str(folder), "num_inference_steps": sch.num_model_calls, "solver": d.solver,
                      "use": "pipe.scheduler = indis.IndisScheduler.from_pretrained(FOLDER)"}))
    return 0
