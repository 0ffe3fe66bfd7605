"""`indis train --method {god,ld3,indis,oracle}`: learn a discretization on a teacher set."""
from __future__ import annotations

import argparse
import json

import torch

from ..errors import InputError
from ..methods import LEARNED, learned
from ..teacher import TeacherSet
from ..training import TrainConfig, train_discretizer
from .common import add_model_args, check_steps, dtype_of, load


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a global (god, ld3) or instance-aware (indis) discretization on a teacher set")
    add_model_args(p)
    p.add_argument("--teacher", required=True, help="teacher set folder made by `indis teacher`")
    p.add_argument("--method", required=True, choices=LEARNED)
    p.add_argument("--steps", type=int, required=True, help="number of solver steps N")
    p.add_argument("--solver", default="ipndm")
    p.add_argument("--afs", action="store_true", help="analytical first step (saves one NFE)")
    p.add_argument("--out", required=True, help="output folder: checkpoints (resumable) and best/ (the trained discretization)")
    p.add_argument("--init", default=None, help="warm start: heuristic name (edm, uniform, logsnr, ...) or a saved global schedule folder")
    p.add_argument("--space", choices=["time", "lambda"], default=None)
    p.add_argument("--free-last", action="store_true", help="let the last time move above t_min")
    p.add_argument("--shift-bound", type=float, default=0.5)
    p.add_argument("--scale-bound", type=float, default=0.1)
    p.add_argument("--no-shift", action="store_true")
    p.add_argument("--no-scale", action="store_true")
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 1e-3 indis, 1e-2 god/oracle, 5e-3 ld3)")
    p.add_argument("--loss", default="mse", help="mse, l1, pseudo_huber, lpips, stlpips")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--ckpt-every", type=int, default=200, help="save a resumable checkpoint every this many iterations (and on Ctrl-C)")
    p.add_argument("--grad-checkpoint", action="store_true", help="recompute each model call in backward (memory flat in N)")
    p.add_argument("--noise-radius", type=float, default=None,
                   help="LD3 learnable-noise ball radius in units of the standard-normal noise (default for ld3: 0.001*D/N^2; 0 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .dist import maybe_init_distributed

    rank, _ = maybe_init_distributed()
    check_steps(args.steps)
    h = load(args)
    ts = TeacherSet(args.teacher, cond_table=h.cond_table)
    ts.check_model(h.denoiser, h.data_shape, h.spec, args.device)
    torch.manual_seed(args.seed)  # parameter init (e.g. phi's layers) depends only on --seed, not on what ran before
    d = learned(h, args.method, args.steps, args.solver, afs=args.afs, init=args.init, space=args.space, free_last=args.free_last,
                shift_bound=args.shift_bound, scale_bound=args.scale_bound, learn_shift=not args.no_shift,
                learn_scale=not args.no_scale, num_samples=ts.num_samples, seed=args.seed)
    lr = args.lr if args.lr is not None else {"indis": 1e-3, "ld3": 5e-3}.get(args.method, 1e-2)
    if args.method == "oracle" and args.val_fraction:
        args.val_fraction = 0.0
    cfg = TrainConfig(iterations=args.iterations, batch_size=args.batch_size, lr=lr, loss=args.loss, val_fraction=args.val_fraction,
                      val_every=args.val_every, grad_checkpoint=args.grad_checkpoint, seed=args.seed, ckpt_every=args.ckpt_every,
                      optimizer="rmsprop" if args.method == "ld3" else "adam", noise_radius=_noise_radius(args, h.data_shape))
    if args.batch_size < 1 or args.iterations < 1 or args.ckpt_every < 1 or args.val_every < 1:
        raise InputError("--batch-size, --iterations, --ckpt-every and --val-every must be >= 1")
    d.extra.update({"model": h.spec, "teacher": str(ts.path)})
    res = train_discretizer(d, h.denoiser, ts, cfg, out_dir=args.out, device=args.device, dtype=dtype_of(args), progress=not args.no_progress)
    if rank == 0:
        print(json.dumps({"method": args.method, "steps": args.steps, "best_val": res.best_val, "best_iter": res.best_iter,
                          "seconds": round(res.seconds, 1), "saved": f"{args.out}/best"}))
    return 0


def _noise_radius(args: argparse.Namespace, data_shape: tuple[int, ...]) -> float:
    """LD3's soft bound r = 0.001 * D / N^2 for --method ld3 unless --noise-radius says otherwise."""
    if args.noise_radius is not None:
        if args.noise_radius < 0:
            raise InputError(f"--noise-radius must be >= 0, got {args.noise_radius}")
        return args.noise_radius
    if args.method != "ld3":
        return 0.0
    import math

    return 0.001 * math.prod(data_shape) / args.steps**2
