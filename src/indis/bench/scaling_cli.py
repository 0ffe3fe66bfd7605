"""`indis bench scaling` on the command line: its options, the settings they give, and the run over the grid (cells
computed or read back by `indis.bench.scaling`, reported by `scaling_report`)."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from ..errors import InputError
from .scaling import FULL, QUICK, cached_result, cell_name, cells, reportable, run_cell, training_runs


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="d in {2, 64}, K in {2, 10}, no condition and class with CFG 4, NFE "
                   "3, small sets and budgets: every table and figure in under 10 minutes (not the study's numbers)")
    p.add_argument("--dims", type=int, nargs="+", default=None, help="subset of dimensions (default 2 8 64 256 1024)")
    p.add_argument("--components", type=int, nargs="+", default=None, help="subset of K (default 2 10 100)")
    p.add_argument("--conditions", nargs="+", default=None, help="subset of none, class, class-g4, embedding, "
                   "embedding-g4 (default all)")
    p.add_argument("--nfe", type=int, nargs="+", default=None, help="NFEs (default 3 5)")
    p.add_argument("--no-digits", action="store_true", help="skip the mixture fitted to the digits")
    p.add_argument("--single-seed", action="store_true", help="one seed everywhere (default: three at d = 64 and 1024)")
    p.add_argument("--patience", type=int, default=None, help="validation checks without improvement before a training "
                   "stops, for every trained method (GOD, its polish, INDIS, INDIS-D; default 6, --quick 3): a sensitivity "
                   "check of the budget rule; use its own --out (cells of another patience are recomputed)")
    p.add_argument("--train-runs", type=int, default=1, help="train GOD and INDIS this many times per cell (other "
                   "training seeds, same priors) and report the ratio pooled over runs beside run 0's (default 1)")
    p.add_argument("--out", default=None, help="output folder (default runs/bench-scaling[-quick])")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--device", default="cpu", help="torch device for the mixtures and every fit, e.g. cuda")
    p.add_argument("--json", action="store_true", help="print results.json instead of the report")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--report-only", action="store_true", help="compute nothing: report the cells of the grid whose "
                   "result.json is already under --out (current protocol) and list the missing ones")


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    s = dict(QUICK if args.quick else FULL)
    names = {"none": ("none", None), "class": ("class", 1.0), "class-g4": ("class", 4.0), "embedding": ("embedding", 1.0),
             "embedding-g4": ("embedding", 4.0)}
    if args.conditions:
        bad = [c for c in args.conditions if c not in names]
        if bad:
            raise InputError(f"--conditions: unknown {bad}; choose from {', '.join(names)}")
        s["conditions"] = tuple(names[c] for c in args.conditions)
    for key, val in (("dims", args.dims), ("components", args.components), ("nfes", args.nfe)):
        if val:
            s[key] = tuple(sorted(set(val)))
    if args.no_digits:
        s["digits"] = False
    if args.single_seed:
        s["multi_seed_dims"] = ()
    if args.patience is not None:
        s["patience"] = args.patience
    if args.train_runs < 1:
        raise InputError(f"--train-runs must be >= 1, got {args.train_runs}")
    s["quick"], s["train_runs"] = bool(args.quick), args.train_runs
    return s


def main(args: argparse.Namespace) -> int:
    from ..commands.common import check_device
    from ..commands.output import emit, show_progress
    from ..io import atomic_write_json, atomic_write_text, ensure_dir
    from . import scaling_report as rep
    from .scaling_plots import figure, prediction_figure

    torch.set_num_threads(args.threads)
    check_device(args.device)
    s = settings_from_args(args)
    out = ensure_dir(args.out or f"runs/bench-scaling{'-quick' if s['quick'] else ''}")
    todo = cells(s)
    t0, results, missing = time.time(), [], []
    if args.report_only:  # a cell run_cell would recompute or complete counts as missing
        for c in todo:
            r = cached_result(out / "cells" / cell_name(c), s)
            if not reportable(r):
                missing.append(cell_name(c))
            else:
                results.append(r)
    else:
        for k, c in enumerate(todo):
            print(f"[{k + 1}/{len(todo)}] {cell_name(c)}", file=sys.stderr, flush=True)
            log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
            r = run_cell(c, s, out / "cells", progress=show_progress(args), log=log, device=args.device)
            if s["train_runs"] > 1 and not rep.solved(r):
                r = training_runs(c, s, out / "cells", s["train_runs"], show_progress(args), log, args.device)
            results.append(r)
    if missing:
        print(f"--report-only: {len(missing)} of {len(todo)} cells not computed yet (left out): {' '.join(missing)}",
              file=sys.stderr, flush=True)
    if not results:
        raise InputError(f"--report-only: none of the {len(todo)} cells asked for has a result under {out / 'cells'}")
    res = {"benchmark": "scaling", "settings": dict(s), "missing": missing, "cells": results,
           "summary": rep.summarize(results), "wall_s": round(time.time() - t0, 1), "torch": torch.__version__}
    res["figure"], res["prediction_figure"] = figure(results, out / "scaling.png"), prediction_figure(results, out / "prediction.png")
    atomic_write_json(out / "results.json", res)
    atomic_write_text(out / "results.md", rep.to_markdown(res))
    emit(args, res, lambda: (out / "results.md").read_text(), indent=1)
    return 0
