"""`indis zoo`: list the shipped models, or retrain them (`indis zoo train digits`)."""
from __future__ import annotations

import argparse
import json

from ..errors import InputError

TRAIN_TARGETS = ("digits", "digits-classifier")


def _cmd_list(args: argparse.Namespace) -> int:
    from . import WEIGHTS_DIR, ZOO_NAMES, load_zoo

    for name in ZOO_NAMES:
        m = load_zoo(name)
        c, h, w = m.shape
        cls = f"{m.num_classes} classes" if m.num_classes else "unconditional"
        print(f"{name:18s} EDM x0-denoiser {c}x{h}x{w}, {cls}, sigma_data={m.sigma_data}, "
              f"seed={m.meta['seed']}, steps={m.meta['steps']}, sha256={m.meta['sha256'][:12]}")
    meta = json.loads((WEIGHTS_DIR / "digits-classifier.json").read_text())
    print(f"{'digits-classifier':18s} feature CNN ({meta['num_features']}-d features) for FD-digits, "
          f"held-out accuracy {meta['heldout_accuracy']:.4f}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import train_classifier, train_digits

    if args.target not in TRAIN_TARGETS:
        raise InputError(f"unknown zoo training target {args.target!r}; valid targets: {', '.join(TRAIN_TARGETS)}")
    if args.steps is not None and args.steps <= 0:
        raise InputError(f"--steps must be positive, got {args.steps}")
    if args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    import torch

    torch.set_num_threads(args.threads)
    out = args.out or f"runs/zoo/{args.target}"
    if args.target == "digits":
        kw = {} if args.steps is None else {"steps": args.steps}
        meta = train_digits(out, seed=args.seed, minutes=args.minutes, **kw)
        print(f"saved {out}/digits-cond.safetensors: {meta['steps']} steps in {meta['training_time_s']} s, "
              f"final loss {meta['final_loss_last500']:.4f}; load with indis.zoo.load_zoo(name, weights_dir={out!r})")
    else:
        meta = train_classifier(out, seed=args.seed, steps=args.steps)
        print(f"saved {out}/digits-classifier.safetensors: held-out accuracy {meta['heldout_accuracy']:.4f}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("zoo", help="shipped self-trained models (digits EDM denoiser, feature classifier)")
    sub = p.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    pl = sub.add_parser("list", help="list the shipped zoo models")
    pl.set_defaults(func=_cmd_list)
    pt = sub.add_parser("train", help="retrain a shipped model with its recipe (single CPU thread recommended)")
    pt.add_argument("target", help=f"what to train: {', '.join(TRAIN_TARGETS)}")
    pt.add_argument("--out", default=None, help="output folder (default runs/zoo/TARGET)")
    pt.add_argument("--steps", type=int, default=None, help="training steps (default: the shipped recipe's)")
    pt.add_argument("--seed", type=int, default=0, help="random seed (shipped weights: 0)")
    pt.add_argument("--minutes", type=float, default=None, help="wall-time cap (digits only; stops early)")
    pt.add_argument("--threads", type=int, default=1, help="torch CPU threads (shipped weights: 1)")
    pt.set_defaults(func=_cmd_train)
