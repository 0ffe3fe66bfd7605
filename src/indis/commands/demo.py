"""`indis demo`: the paper's synthetic study (section 4.1) end to end on the built-in tree distribution."""
from __future__ import annotations

import argparse

from ..errors import InputError
from ..solvers import SOLVERS
from .output import add_json_arg, emit, show_progress


def _nfes(text: str) -> list[int]:
    """'3', '2-10' or '2,3,5'."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                a, b = (int(v) for v in part.split("-", 1))
                if a > b:
                    raise argparse.ArgumentTypeError(f"NFE range {part!r} is empty (start > end); write e.g. 2-10")
                out += list(range(a, b + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"NFEs must look like 3, 2-10 or 2,3,5; got {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"NFEs must be >= 1, got {text!r}")
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="reproduce the paper's synthetic study (tree toy): uniform, heuristics, GOD, oracle, INDIS",
                       description="Train and compare discretizations on the tree-branch toy (flow matching, exact "
                                   "denoiser) and write results.json, report.md and figures to --out.")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo); finished work there is reused")
    p.add_argument("--quick", action="store_true", help="reduced run (fewer priors, NFEs 2,3,5, fewer iterations)")
    p.add_argument("--seed", type=int, default=0, help="seeds the training/validation/test priors and the training")
    p.add_argument("--nfe", type=_nfes, default=None, help="NFEs to compare, e.g. 3, 2-10 or 2,3,5 (default 2-10; quick 2,3,5)")
    p.add_argument("--classes", default="A", choices=["A", "B", "AB"], help="tree class(es); AB is class-conditional (c = class)")
    p.add_argument("--solver", default="euler", choices=SOLVERS, help="student solver (default euler; NFE counts model calls)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-ablations", action="store_true", help="skip the ablation variants")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the exact toy denoiser works on small batches, where more threads "
                        "mostly add overhead, and far more so on a busy machine)")
    # sizes, mostly for tests and quick experiments
    hidden = argparse.SUPPRESS
    p.add_argument("--num-train", type=int, default=None, help=hidden)
    p.add_argument("--num-test", type=int, default=None, help=hidden)
    p.add_argument("--num-val", type=int, default=None, help=hidden)
    p.add_argument("--teacher-steps", type=int, default=None, help=hidden)
    p.add_argument("--god-cap", type=int, default=None, help=hidden)
    p.add_argument("--indis-cap", type=int, default=None, help=hidden)
    p.add_argument("--oracle-cap", type=int, default=None, help=hidden)
    p.add_argument("--oracle-subset", type=int, default=None, help=hidden)
    p.add_argument("--w2-points", type=int, default=None, help=hidden)
    p.add_argument("--batch-size", type=int, default=None, help=hidden)
    p.add_argument("--patience", type=int, default=None, help=hidden)
    p.add_argument("--val-every", type=int, default=None, help=hidden)
    p.add_argument("--global-starts", type=int, default=None, help=hidden)
    p.add_argument("--ablation-nfe", type=_nfes, default=None, help=hidden)
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..demo import run_demo

    if args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    over = {}
    for name in ("num_train", "num_test", "num_val", "teacher_steps", "god_cap", "indis_cap", "oracle_cap", "oracle_subset",
                 "w2_points", "batch_size", "patience", "val_every", "global_starts"):
        v = getattr(args, name)
        if v is not None:
            over[name] = v
    if args.ablation_nfe is not None:
        over["ablation_nfes"] = tuple(args.ablation_nfe)
    if args.no_ablations:
        over["ablation_nfes"] = ()
    res = run_demo(args.out, args.quick, seed=args.seed, nfes=args.nfe, classes=args.classes, solver=args.solver,
                   progress=show_progress(args), **over)
    emit(args, res, res["summary"], indent=2)
    return 0
