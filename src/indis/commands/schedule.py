"""`indis schedule --method NAME`: compute a fixed schedule (heuristic, GITS, DMN) and optionally save it."""
from __future__ import annotations

import argparse

from ..discretizations.heuristics import HEURISTICS
from ..methods import fixed
from ..solvers import SOLVERS
from .common import add_model_args, check_steps, load
from .output import add_json_arg, emit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schedule", help="compute a heuristic, GITS or DMN schedule for a model")
    add_model_args(p)
    p.add_argument("--method", required=True, help=f"one of {', '.join(sorted(HEURISTICS))}, gits, dmn")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--solver", default="ipndm", choices=SOLVERS, help="solver the schedule is for")
    p.add_argument("--afs", action="store_true")
    p.add_argument("--rho", type=float, default=None, help="EDM polynomial exponent (edm)")
    p.add_argument("--coeff", type=float, default=None, help="GITS DP coefficient (default 1.15)")
    p.add_argument("--out", default=None, help="save the schedule as a discretization folder")
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_steps(args.steps)
    h = load(args)
    kw = {}
    if args.rho is not None:
        kw["rho"] = args.rho
    if args.coeff is not None:
        kw["coeff"] = args.coeff
    d = fixed(h, args.method, args.steps, args.solver, afs=args.afs, **kw)
    if args.out:
        from ..discretizations.persist import model_info
        from ..io import claim_output

        claim_output(args.out, "discretization")
        d.extra.update({"model_info": model_info(h), "command": "indis " + " ".join(__import__("sys").argv[1:])})
        d.save(args.out)
    data = {"method": args.method, "steps": args.steps, "times": [round(float(t), 6) for t in d.times], "saved": args.out}
    emit(args, data, lambda: f"{args.method} schedule for {h.spec}, N={args.steps} ({d.solver}{' + AFS' if d.afs else ''}, "
         f"{d.nfe} model calls): times {', '.join(f'{t:.4g}' for t in data['times'])}"
         + (f"\n  saved: {args.out} (use it with --discretization {args.out})" if args.out else "\n  (not saved: add --out DIR)"))
    return 0
