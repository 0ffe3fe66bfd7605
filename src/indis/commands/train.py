"""`indis train --method {god,ld3,indis,oracle}`: learn a discretization on a teacher set."""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..discretizations.heuristics import HEURISTICS
from ..discretizations.prior_net import BASIS_K, DESIGNS, design_net
from ..discretizations.persist import model_info
from ..errors import InputError
from ..io import claim_output
from ..methods import LEARNED, global_starts, learned
from ..solvers import SOLVERS
from ..teacher import TeacherSet, teacher_info
from ..training import TrainConfig, train_with_starts
from ..training.config import LR_SCHEDULES, split_indices, train_seed
from .common import add_model_args, check_steps, dtype_of, finite, load
from .dist import add_dist_args
from .output import add_json_arg, command_line, emit, fmt_float, model_argv, show_progress, table

#: defaults that find the good basin (see `indis.training.starts`): learning rate, number of starts
DEFAULT_LR = {"god": 5e-2, "oracle": 5e-2, "ld3": 5e-3, "indis": 1e-3, "amed": 5e-3, "epd": 0.2}
DEFAULT_STARTS = {"god": 3, "ld3": 3, "oracle": 1, "indis": 1, "amed": 1, "epd": 1}
STEP_SOLVERS = {"amed": ("amed", "ipndm"), "epd": ("epd", "ipndm")}  # AMED/EPD: their own solver or the iPNDM plugin


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a global (god, ld3), instance-aware (indis) discretization or a learned solver "
                       "(amed, epd) on a teacher set")
    add_model_args(p)
    p.add_argument("--teacher", required=True, help="teacher set folder made by `indis teacher`")
    p.add_argument("--method", required=True, choices=LEARNED)
    n = p.add_mutually_exclusive_group(required=True)
    n.add_argument("--steps", type=int, help="number of solver steps N")
    n.add_argument("--nfe", type=int, help="number of model calls; N follows from the solver and AFS (amed/epd: odd NFE "
                   "turns AFS on, as in the AMED reference)")
    p.add_argument("--solver", default=None, choices=SOLVERS + ("amed", "epd"),
                   help="solver the schedule is trained for (default ipndm; amed/epd: their own solver, or ipndm for the plugin)")
    p.add_argument("--afs", action="store_true", help="analytical first step (saves one NFE)")
    p.add_argument("--num-points", type=int, default=2, help="EPD: parallel directions K per step (default 2)")
    p.add_argument("--base", default=None, choices=sorted(HEURISTICS), help="amed/epd: base schedule whose steps are "
                   "split (default: the references' choice, edm for the AMED plugin, time_uniform otherwise)")
    p.add_argument("--recipe", choices=["reference", "budget"], default="reference", help="amed/epd: 'reference' trains as "
                   "their reference code (EPD: Adam lr 0.2, cosine to 0.01, batch 32; AMED: lr 5e-3, batch 128; one pass "
                   "over 10k priors, no clipping, the final weights; flags given explicitly override it); 'budget' uses "
                   "the budget rule of the other methods (--iterations, --patience, plateau learning rate, best validation)")
    p.add_argument("--out", required=True, help="output folder: checkpoints (resumable) and best/ (the trained discretization)")
    p.add_argument("--init", default=None, help="start: heuristic name (edm, logsnr, ...), dmn, NAME~K (perturbed), or a saved "
                   "global schedule folder (warm start; indis starts from it)")
    p.add_argument("--starts", type=int, default=None, help="number of starts tried for --probe-iterations each, the best on "
                   "validation loss trained on (default 3 for god/ld3, 1 for indis/oracle)")
    p.add_argument("--probe-iterations", type=int, default=100, help="iterations of each start before one is chosen")
    p.add_argument("--space", choices=["time", "lambda"], default=None)
    p.add_argument("--free-last", action="store_true", help="let the last time move above t_min")
    p.add_argument("--input-basis", type=int, default=None, metavar="K", help="indis: phi reads x_T (and with "
                   "--denoised-input the model's first output) projected on the top K principal directions of the "
                   "training priors' teacher endpoints instead of the whole input; in high dimension phi then learns "
                   "where it otherwise fits its training priors (e.g. 16; see benchmarks/README.md)")
    p.add_argument("--denoised-input", action="store_true", help="indis: phi also reads the model's first output, "
                   "D(x_T, t_max) or with --afs D(x_1, t_1) after the analytic first step, which the solver then reuses (no "
                   "extra model call). Helps where x_T alone hides which mode a sample heads for (see benchmarks/README.md, "
                   "'When does instance-awareness pay?')")
    p.add_argument("--designs", nargs="+", default=None, choices=DESIGNS + ("all",), metavar="DESIGN",
                   help="indis: train phi in each of these designs (indis: x_T; indis-d: x_T and D; indis-p, indis-pd: "
                   "the same projected on --input-basis directions, default 16; all: the four) from the same start and "
                   "validation priors, each into OUT/designs/NAME, and keep the one with the lowest validation loss in "
                   "OUT/best (costs one training per design; see benchmarks/README.md for how often each wins)")
    p.add_argument("--runs", type=int, default=1, help="train this many times, each run with its own initial weights and "
                   "batch order (seeds hashed from --seed; run 0 is the plain run) on the same validation priors, each into "
                   "OUT/runs/K (with --designs: OUT/designs/NAME/runs/K), and keep the lowest validation loss in OUT/best. "
                   "Training can land far apart from one seed to the next; the table shows how far (default 1)")
    p.add_argument("--shift-bound", type=float, default=0.5)
    p.add_argument("--scale-bound", type=float, default=0.1)
    p.add_argument("--no-shift", action="store_true")
    p.add_argument("--no-scale", action="store_true")
    p.add_argument("--iterations", type=int, default=None, help="iteration cap (default 4000; rerun with a larger cap to "
                   "extend a run)")
    p.add_argument("--patience", type=int, default=None, help="stop after this many validations without improvement (default "
                   "8; 0: run to the cap)")
    p.add_argument("--batch-size", type=int, default=None, help="default 64")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 5e-2 god/oracle, 5e-3 ld3 and amed, 1e-3 indis, 0.2 epd)")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=None,
                   help="plateau: halve the lr after 3 validations without improvement (default); cosine; constant")
    p.add_argument("--loss", default="mse", choices=["mse", "l1", "pseudo_huber", "digits-perceptual", "digits-features"],
                   help="distance to the teacher endpoint (digits-perceptual / digits-features: features of the shipped "
                   "digits classifier, 8x8 only; EPD's endpoint objective uses it, its reference takes Inception-feature MSE)")
    p.add_argument("--ema", type=float, default=0.0, help="decay of a moving average of the weights used for validation "
                   "and the result (e.g. 0.999; 0: off)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--val-every", type=int, default=50)
    p.add_argument("--ckpt-every", type=int, default=200, help="save a resumable checkpoint every this many iterations (and on Ctrl-C)")
    p.add_argument("--grad-checkpoint", action="store_true", help="recompute each model call in backward (memory flat in N)")
    p.add_argument("--noise-radius", type=float, default=None,
                   help="LD3 learnable-noise ball radius in units of the standard-normal noise (default for ld3: 0.001*D/N^2; 0 = off)")
    p.add_argument("--seed", type=int, default=0, help="seeds phi's initial weights, the batch order and the validation split")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they show only on a terminal anyway)")
    add_json_arg(p)
    add_dist_args(p)
    p.set_defaults(func=run)


def _recipe(args: argparse.Namespace) -> dict[str, Any]:
    """Training settings before the flags: the budget rule, or an AMED/EPD reference recipe (`--recipe reference`)."""
    out: dict[str, Any] = {"iterations": 4000, "batch_size": 64, "lr": DEFAULT_LR[args.method], "lr_schedule": "plateau",
                           "patience": 8}
    if args.method in STEP_SOLVERS and args.recipe == "reference":
        from ..discretizations import amed, epd

        r = (amed if args.method == "amed" else epd).REFERENCE_TRAINING
        out.update(batch_size=r["batch_size"], lr=r["lr"], lr_schedule=r["lr_schedule"], patience=0,
                   iterations=math.ceil(r["priors"] / r["batch_size"]), grad_clip=r["grad_clip"], keep=r["keep"],
                   min_lr_ratio=r.get("min_lr", r["lr"]) / r["lr"])
    given = {"iterations": args.iterations, "batch_size": args.batch_size, "lr": args.lr, "lr_schedule": args.lr_schedule,
             "patience": args.patience}
    out.update({k: v for k, v in given.items() if v is not None})
    return out


def _config(args: argparse.Namespace, data_shape: tuple[int, ...]) -> TrainConfig:
    for name in ("lr", "shift_bound", "scale_bound", "val_fraction", "noise_radius", "ema"):
        v = getattr(args, name)
        if v is not None:
            finite(v, "--" + name.replace("_", "-"))
    r = _recipe(args)
    if r["lr"] <= 0:
        raise InputError(f"--lr must be > 0, got {r['lr']}")
    val_fraction = 0.0 if args.method == "oracle" else args.val_fraction
    if args.loss.startswith("digits-") and tuple(data_shape) != (1, 8, 8):
        raise InputError(f"--loss {args.loss} works on 8x8 grey digits [1, 8, 8]; this teacher set holds {list(data_shape)}")
    cfg = TrainConfig(**r, loss=args.loss, val_fraction=val_fraction, val_every=args.val_every,
                      grad_checkpoint=args.grad_checkpoint, seed=args.seed, ckpt_every=args.ckpt_every,
                      optimizer="rmsprop" if args.method == "ld3" else "adam", noise_radius=_noise_radius(args, data_shape),
                      ema=args.ema)
    try:
        return cfg.check()
    except InputError as exc:  # name the flag rather than the config field
        raise InputError(str(exc).replace("TrainConfig.", "--").replace("_", "-")) from None


def _steps_and_solver(args: argparse.Namespace) -> None:
    """Resolve --solver default, --nfe -> N (and AFS for amed/epd at odd NFE), and the method's solver choices."""
    from ..discretizations.amed import amed_steps
    from ..solvers import steps_for_nfe

    own = STEP_SOLVERS.get(args.method)
    args.solver = args.solver or (own[0] if own else "ipndm")
    if own and args.solver not in own:
        raise InputError(f"--solver {args.solver} does not apply to {args.method}; choose one of {', '.join(own)}")
    if not own and args.solver in ("amed", "epd"):
        raise InputError(f"--solver {args.solver} is a solver of --method {args.solver}, not of {args.method}")
    if args.base is not None and not own:
        raise InputError(f"--base applies to --method amed/epd (the schedule their steps split), not {args.method}")
    if args.method == "epd" and args.num_points < 1:
        raise InputError(f"--num-points (EPD's parallel directions K) must be >= 1, got {args.num_points}")
    if args.nfe is not None:
        if own:
            args.afs = args.afs or args.nfe % 2 == 1
            args.steps = amed_steps(args.nfe, args.afs)
        else:
            args.steps = steps_for_nfe(args.solver, args.nfe, args.afs)
    check_steps(args.steps)


def run(args: argparse.Namespace) -> int:
    from .dist import maybe_init_distributed

    rank, _ = maybe_init_distributed(args.dist_timeout)
    _steps_and_solver(args)
    claim_output(args.out, "train", create=False)  # created once the inputs are checked
    _check_phi_flags(args)  # flags alone: refused before the model and teacher set are loaded
    h = load(args)
    ts = TeacherSet(args.teacher, cond_table=h.cond_table)
    ts.check_model(h.denoiser, h.data_shape, h.spec, args.device, cond_kind=h.cond_kind)
    cfg = _config(args, h.data_shape)
    net = {k: v for k, v in (("denoised_input", args.denoised_input), ("input_basis", args.input_basis)) if v}
    n_starts = args.starts if args.starts is not None else DEFAULT_STARTS[args.method]
    if n_starts < 1 or args.probe_iterations < 1:
        raise InputError(f"--starts and --probe-iterations must be >= 1, got {n_starts} and {args.probe_iterations}")
    warm = args.init is not None and Path(args.init).exists()  # a saved schedule to continue from: one start
    if args.method in ("indis", "oracle") or warm or n_starts == 1:
        starts = [args.init]
    else:
        starts = global_starts(h, n_starts, first=args.init)

    def build(init: str | None, net: dict[str, Any] | None = net or None, seed: int = args.seed):
        torch.manual_seed(seed)  # parameter init (e.g. phi's layers) depends only on the run's seed
        d = learned(h, args.method, args.steps, args.solver, afs=args.afs, init=init, space=args.space, free_last=args.free_last,
                    shift_bound=args.shift_bound, scale_bound=args.scale_bound, learn_shift=not args.no_shift,
                    learn_scale=not args.no_scale, num_samples=ts.num_samples, seed=seed, num_points=args.num_points,
                    base=args.base, net=net)
        d.extra.update({"model": h.spec, "teacher": str(ts.path), "init": init, "model_info": model_info(h),
                        "teacher_info": teacher_info(ts), "command": "indis " + " ".join(sys.argv[1:])})
        return d

    def fit(builder: Any, out: str | Path, run_cfg: TrainConfig = cfg) -> tuple[Any, Any]:
        return train_with_starts(builder, starts, h.denoiser, ts, run_cfg, probe_iterations=args.probe_iterations,
                                 out_dir=out, device=args.device, dtype=dtype_of(args), progress=show_progress(args),
                                 describe=lambda s: str(s or h.default_heuristic))

    rows: list[dict[str, Any]] = []
    if args.designs or args.runs > 1:
        d, res, rows = _train_many(args, build, fit, cfg, ts.num_samples, math.prod(h.data_shape), save=rank == 0)
    else:
        d, res = fit(build, args.out)
    if rank == 0:
        reused = all(r["reused"] for r in rows) if rows else res.reused  # several trainings: reused only if all were
        data = {"method": args.method, "steps": args.steps, "best_val": res.best_val, "best_iter": res.best_iter,
                "iterations": res.iterations, "stop_reason": res.stop_reason, "seconds": round(res.seconds, 1),
                "reused": reused, "starts": res.starts, "saved": f"{args.out}/best",
                "start_val": next((r["val"] for r in res.history if "val" in r), None)}
        if rows:
            data.update({"runs" if args.runs > 1 else "designs": rows, "seconds": round(sum(r["seconds"] for r in rows), 1)})
        emit(args, data, lambda: _summary(args, d, data, cfg.loss))
        if reused:
            print(f"indis: '{args.out}' already holds this finished run; reused it (raise --iterations to train on)",
                  file=sys.stderr)
    return 0


def _summary(args: argparse.Namespace, d: Any, r: dict[str, Any], loss: str) -> str:
    """How the run went, where the result is and what to run next."""
    stop = {"patience": "validation stopped improving", "cap": "reached --iterations", None: "interrupted"}.get(
        r["stop_reason"], r["stop_reason"])
    L = [f"{'Reused the finished' if r['reused'] else 'Trained'} {args.method} for {args.model}: N={d.steps} steps, "
         f"{d.solver}{' + AFS' if d.afs else ''}, {d.nfe} model calls per sample"]
    if r.get("designs") or r.get("runs"):
        L += ["", *_many_lines(r.get("runs") or r["designs"], loss), ""]
    if len(r["starts"]) > 1:
        rows = [[s["start"], fmt_float(s["val"]), "chosen" if s["chosen"] else ""] for s in r["starts"]]
        L += ["", table(["start", f"validation {loss} after the probe", ""], rows, [False, True, False]), ""]
    L += [f"  best validation {loss}: {fmt_float(r['best_val'])} at iteration {r['best_iter']} of {r['iterations']} "
          f"({stop}; {r['seconds']:.0f} s)"]
    v0 = r.get("start_val")
    if v0 is not None and r["best_iter"] == 0:
        L.append(f"  no iteration improved on the start ({fmt_float(v0)}): the saved schedule is the start itself")
    elif v0:
        L.append(f"  validation {loss} at the start: {fmt_float(v0)} ({100 * (r['best_val'] / v0 - 1):+.2f}% since); a gain "
                 "is real only where `indis eval` on held-out priors puts it beyond its interval")
    L += [f"  saved: {r['saved']}",
          "Next:",
          "  " + command_line("indis", "sample", *model_argv(args), "--discretization", r["saved"], "--out",
                              f"{args.out}-samples"),
          "  " + command_line("indis", "eval", *model_argv(args), "--teacher", "HELD_OUT_TEACHER", "--discretization",
                              r["saved"]) + "   (a teacher set made with another --seed)"]
    return "\n".join(L)


def _check_phi_flags(args: argparse.Namespace) -> None:
    """phi's options apply to --method indis only; --designs sets what phi reads itself."""
    for flag, used in (("--denoised-input", args.denoised_input), ("--input-basis", args.input_basis is not None),
                       ("--designs", bool(args.designs))):
        if used and args.method != "indis":
            raise InputError(f"{flag} is an option of phi (--method indis), not of --method {args.method}")
    if args.designs and args.denoised_input:
        raise InputError("--denoised-input and --designs both say what phi reads; name the designs with --designs "
                         "(indis-d, indis-pd read D)")
    if args.input_basis is not None and args.input_basis < 1:
        raise InputError(f"--input-basis must be >= 1, got {args.input_basis}")
    if args.designs and args.input_basis is not None and not {"all", "indis-p", "indis-pd"} & set(args.designs):
        raise InputError("--input-basis sets the projected designs' basis, but --designs names none (indis-p, indis-pd)")
    if args.runs > 1 and args.method == "oracle":
        raise InputError("--runs applies to methods chosen on validation priors; the oracle is fitted to its own priors")
    _check_layout(args)


def _layout(folder: Path) -> str | None:
    """What training `folder` holds: "designs", "runs", "single" (one run) or None."""
    if (folder / "designs").is_dir():
        return "designs"
    if (folder / "runs").is_dir():
        return "runs"
    return "single" if (folder / "train_state.safetensors").is_file() else None


def _check_layout(args: argparse.Namespace) -> None:
    """Refuse an --out holding a training of another shape (one run, --designs, --runs) than the flags ask for: a
    resumed run must continue the same trainings."""
    out, per_run = Path(args.out), "runs" if args.runs > 1 else "single"
    have = _layout(out)
    if have is None:
        return
    if (have == "designs") != bool(args.designs):
        raise InputError(f"--out '{args.out}' holds a training run {'with --designs' if have == 'designs' else 'of one design'}"
                         f"; {'add' if have == 'designs' else 'drop'} --designs to resume it, or choose another folder")
    inner = [_layout(f) for f in (out / "designs").iterdir()] if have == "designs" else [have]
    bad = next((k for k in inner if k not in (None, per_run)), None)
    if bad:
        raise InputError(f"--out '{args.out}' holds {'several runs (--runs > 1)' if bad == 'runs' else 'one run'} per "
                         f"training; {'give --runs > 1' if bad == 'runs' else 'drop --runs'} to resume it, or choose "
                         "another folder")


def run_configs(cfg: TrainConfig, n: int, runs: int) -> list[TrainConfig]:
    """The settings of `runs` training runs on `n` teacher pairs: each its own seed (`train_seed`; run 0 keeps cfg's),
    all on run 0's train/validation split, so that their validation losses compare on the same priors."""
    if runs < 1:
        raise InputError(f"--runs must be >= 1, got {runs}")
    if runs == 1:
        return [cfg]
    tr, va = split_indices(n, cfg.val_fraction, cfg.seed)
    if len(va) == 0:
        raise InputError("--runs keeps the run with the lowest validation loss; give --val-fraction > 0")
    return [replace(cfg, seed=train_seed(cfg.seed, k), train_indices=tr.tolist(), val_indices=va.tolist())
            for k in range(runs)]


def _train_many(args: argparse.Namespace, build: Any, fit: Any, cfg: TrainConfig, n: int, dim: int,
                save: bool) -> tuple[Any, Any, list[dict[str, Any]]]:
    """--designs and --runs: phi in each design (OUT/designs/NAME), each trained in --runs runs (.../runs/K), all on the
    same validation priors and each resumable; the lowest best validation loss (the first on a tie) is saved to
    OUT/best. Returns it, its run and a row per training."""
    names = (list(DESIGNS) if "all" in args.designs else list(dict.fromkeys(args.designs))) if args.designs else [None]
    cfgs, trained = run_configs(cfg, n, args.runs), []
    for name in names:
        net = (design_net(name, dim, args.input_basis or BASIS_K) or None) if name else None
        base = Path(args.out) / "designs" / name if name else Path(args.out)
        for k, rc in enumerate(cfgs):
            if save and show_progress(args):
                print(f"indis: training {name or args.method}" + (f", run {k + 1} of {len(cfgs)} (seed {rc.seed})"
                                                                  if len(cfgs) > 1 else ""), file=sys.stderr)
            folder = base / "runs" / str(k) if len(cfgs) > 1 else base  # without a design, phi reads what the flags say
            d, res = fit(partial(build, seed=rc.seed, **({"net": net} if name else {})), folder, rc)
            label = ({"design": name} if name else {}) | ({"run": k, "seed": rc.seed} if len(cfgs) > 1 else {})
            trained.append(({**label, "saved": str(folder / "best")}, d, res))
    key = [r.best_val if math.isfinite(r.best_val) else math.inf for _, _, r in trained]
    best = min(range(len(trained)), key=lambda i: (key[i], i))
    label, d, res = trained[best]
    if save:
        d.extra.update({k: v for k, v in label.items() if k != "saved"})
        d.save(Path(args.out) / "best")
    rows = [{**lab, "best_val": r.best_val, "best_iter": r.best_iter, "seconds": round(r.seconds, 1), "reused": r.reused,
             "chosen": i == best}
            for i, (lab, _, r) in enumerate(trained)]
    return d, res, rows


def _many_lines(rows: list[dict[str, Any]], loss: str) -> list[str]:
    """The table of --designs / --runs trainings and, over runs, how far apart their validation losses landed."""
    cols = [c for c in ("design", "run", "seed") if c in rows[0]]
    head = {"design": "phi design", "run": "run", "seed": "seed"}
    body = [[str(x[c]) for c in cols] + [fmt_float(x["best_val"]), f"{x['seconds']:.0f}", "chosen" if x["chosen"] else ""]
            for x in rows]
    L = [table([head[c] for c in cols] + [f"best validation {loss}", "seconds", ""], body,
               [False] * len(cols) + [True, True, False])]
    if "run" in rows[0]:
        v = sorted(x["best_val"] for x in rows)
        L.append(f"  over the {len(v)} trainings: best {fmt_float(v[0])}, median {fmt_float(statistics.median(v))}, worst "
                 f"{fmt_float(v[-1])} (worst/best {v[-1] / v[0]:.3g}); where they differ widely one run is a draw: "
                 "judge the kept one with `indis eval` on held-out priors")
    return L


def _noise_radius(args: argparse.Namespace, data_shape: tuple[int, ...]) -> float:
    """LD3's soft bound r = 0.001 * D / N^2 for --method ld3 unless --noise-radius says otherwise."""
    if args.noise_radius is not None:
        if args.noise_radius < 0:
            raise InputError(f"--noise-radius must be >= 0, got {args.noise_radius}")
        return args.noise_radius
    if args.method != "ld3":
        return 0.0
    return 0.001 * math.prod(data_shape) / args.steps**2
