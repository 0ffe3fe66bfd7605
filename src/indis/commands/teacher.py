"""`indis teacher`: generate (or resume) a teacher set of (c, x_T, x0*) tuples."""
from __future__ import annotations

import argparse

from ..discretizations.heuristics import heuristic
from ..io import claim_output
from ..teacher import TEACHER_SOLVERS, generate_teacher
from .common import add_model_args, check_steps, dtype_of, load
from .dist import add_dist_args
from .output import add_json_arg, command_line, emit, model_argv, show_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teacher", help="generate teacher endpoints with a many-step solver (resumable, torchrun-aware)")
    add_model_args(p)
    p.add_argument("--out", required=True, help="output folder (shards + manifest); rerun to resume")
    p.add_argument("--num", "--num-samples", dest="num", type=int, default=10000,
                   help="number of teacher samples; a larger number extends an existing set (under torchrun write "
                        "--num-samples: torchrun takes --num for its --numa-binding)")
    p.add_argument("--solver", default="ipndm", choices=TEACHER_SOLVERS, help="teacher solver (default ipndm; exact: "
                   "adaptive DOP853 to 1e-7 relative, for cheap analytic models)")
    p.add_argument("--steps", type=int, default=30, help="teacher steps (default 30)")
    p.add_argument("--schedule", default="edm", help="teacher heuristic schedule (default edm, rho=7)")
    p.add_argument("--seed", type=int, default=0, help="seeds the prior noise x_T (and class labels) of every teacher pair")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it shows only on a terminal anyway)")
    add_json_arg(p)
    add_dist_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .dist import maybe_init_distributed

    rank, _ = maybe_init_distributed(args.dist_timeout)
    check_steps(args.steps)
    claim_output(args.out, "teacher", create=False)  # created once the inputs are checked
    h = load(args)
    times = heuristic(args.schedule, args.steps, h.schedule)
    ts = generate_teacher(h.denoiser, args.out, h.data_shape, args.num, times=times, solver=args.solver, seed=args.seed,
                          shard_size=args.shard_size, batch_size=args.batch_size, cond=h.cond_spec(), cond_table=h.cond_table,
                          model=h.spec, device=args.device, dtype=dtype_of(args), progress=show_progress(args))
    if rank == 0:
        data = {"teacher": str(ts.path), "num_samples": ts.num_samples, "shards": ts.num_shards, "solver": args.solver,
                "steps": args.steps, "schedule": args.schedule, "seed": args.seed, "complete": ts.is_complete()}
        emit(args, data, lambda: "\n".join([
            f"Teacher set {ts.path}: {ts.num_samples} pairs in {ts.num_shards} shard(s), {args.steps}-step {args.solver} on "
            f"{args.schedule} times, priors seeded {args.seed}{'' if data['complete'] else ' (incomplete: rerun to finish)'}",
            "Next (train a schedule on it; evaluate on a set made with another --seed):",
            "  " + command_line("indis", "train", *model_argv(args), "--teacher", ts.path, "--method", "god", "--nfe", "3",
                                "--out", f"{args.out}-god3")]))
    return 0
