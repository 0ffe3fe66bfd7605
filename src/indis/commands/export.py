"""`indis export`: hand a trained global discretization to other tools.

--format diffusers: a scheduler folder (`scheduler_config.json` of `indis.IndisScheduler`) that a stock pipeline loads
  with `pipe.scheduler = IndisScheduler.from_pretrained(FOLDER)`: times, learned shift and scale, solver.
--format sigmas-json: the global grid as the `sigmas=` list pipelines accept (flow time for flow matching, the VE
  noise level sigma/alpha for DDPM-style models), without the final 0 that those schedulers append themselves.
  A learned shift or scale cannot travel in a sigma list: the command says so and records it in the file.

Export follows the rules of every other writer: it takes the output folder's lock, writes atomically, never writes
into another indis artifact's folder (teacher set, training run, saved discretization, samples) or a diffusers
pipeline's root, and never replaces a file it did not write itself unless --overwrite is given.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch

from ..discretizations.base import FixedSchedule, GlobalSchedule, load_discretization
from ..errors import InputError
from ..io import atomic_write_json, ensure_dir
from .output import add_json_arg, emit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained global discretization as a diffusers scheduler or a sigmas list")
    p.add_argument("--discretization", required=True, help="folder of a saved discretization (indis train/schedule --out)")
    p.add_argument("--format", required=True, choices=["diffusers", "sigmas-json"])
    p.add_argument("--out", required=True, help="diffusers: output folder; sigmas-json: output .json file")
    p.add_argument("--pipeline-config", default=None, help="diffusers: the pipeline's scheduler_config.json (its betas or "
                   "flow settings and prediction type; default: derived from the model the schedule was trained for)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file that indis export did not write "
                   "(never inside another indis artifact's folder)")
    add_json_arg(p)
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


def _ours_sigmas(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == "indis-sigmas"
    except (OSError, ValueError, AttributeError):
        return False


def _ours_scheduler(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("_class_name") == "IndisScheduler"
    except (OSError, ValueError, AttributeError):
        return False


def check_target(folder: Path, file: Path, overwrite: bool, ours) -> None:
    """Refuse to write `file` into another artifact's folder (always) or over a file export did not write (unless
    `overwrite`)."""
    from ..io import ARTIFACTS, artifact_kinds

    if folder.is_dir():
        kinds = artifact_kinds(folder)
        if kinds:
            what = ", ".join(ARTIFACTS[k] for k in sorted(kinds))
            raise InputError(f"--out: '{folder}' holds {what}; export never writes into another artifact's folder, "
                             "choose another --out")
        if (folder / "model_index.json").is_file():
            raise InputError(f"--out: '{folder}' is a diffusers pipeline folder; export to a folder of its own (or to "
                             f"'{folder / 'scheduler'}' with --overwrite to replace the pipeline's scheduler)")
    if file.exists() and not ours(file) and not overwrite:
        raise InputError(f"--out: '{file}' already exists and was not written by indis export; pass --overwrite to "
                         "replace it, or choose another --out")


def run(args: argparse.Namespace) -> int:
    from ..io import FolderLock

    d = load_discretization(args.discretization)
    out = Path(args.out)
    if args.format == "sigmas-json":
        if out.is_dir():
            raise InputError(f"--out '{out}' is a folder; sigmas-json writes a file (e.g. {out / 'sigmas.json'})")
        if args.pipeline_config is not None:
            raise InputError("--pipeline-config applies to --format diffusers only")
        check_target(out.parent, out, args.overwrite, _ours_sigmas)
        res = sigmas_json(d)
        with FolderLock(ensure_dir(out.parent), "export"):
            check_target(out.parent, out, args.overwrite, _ours_sigmas)  # again under the lock
            atomic_write_json(out, res)
        if res["dropped"]:
            print(f"indis: warning: {res['note']}", file=__import__("sys").stderr)
        data = {"saved": str(out), "sigmas": res["sigmas"], "dropped": res["dropped"]}
        emit(args, data, lambda: f"Wrote {len(res['sigmas'])} sigmas ({res['convention']}; the last time, "
             f"{res['final']:g}, is left out: diffusers schedulers append their own final sigma) to {out}:\n  {', '.join(f'{v:.4g}' for v in res['sigmas'])}\n  use: "
             "pipe(prompt, sigmas=json.load(open(FILE))['sigmas'])")
        return 0
    if out.exists() and not out.is_dir():
        raise InputError(f"--out '{out}' is a file; --format diffusers writes a folder")
    from ..integrations.diffusers import IndisScheduler

    target = out / IndisScheduler.config_name
    check_target(out, target, args.overwrite, _ours_scheduler)
    _global(d)

    config = None
    if args.pipeline_config is not None:
        from ..io import load_json

        config = load_json(args.pipeline_config)
        if not isinstance(config, dict):
            raise InputError(f"--pipeline-config '{args.pipeline_config}' must hold a JSON object (a scheduler_config.json)")
    sch = IndisScheduler.from_discretization(d, config)
    folder = ensure_dir(out)
    with FolderLock(folder, "export"):
        check_target(folder, target, args.overwrite, _ours_scheduler)
        with tempfile.TemporaryDirectory(prefix=".export-", dir=folder) as tmp:
            sch.save_pretrained(tmp)
            os.replace(Path(tmp) / IndisScheduler.config_name, target)  # atomic: a reader sees the old or the new file
    data = {"saved": str(folder), "num_inference_steps": sch.num_model_calls, "solver": d.solver,
            "use": "pipe.scheduler = indis.IndisScheduler.from_pretrained(FOLDER)"}
    emit(args, data, lambda: f"Wrote an IndisScheduler ({d.method}, {d.solver}, N={d.steps}) to {folder}\n  use: "
         f"pipe.scheduler = indis.IndisScheduler.from_pretrained('{folder}'); pipe(prompt, "
         f"num_inference_steps={sch.num_model_calls})")
    return 0
