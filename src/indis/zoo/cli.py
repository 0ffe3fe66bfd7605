"""`indis zoo`: list the shipped models, or retrain them (`indis zoo train digits`)."""
from __future__ import annotations

import argparse
import json

from ..errors import InputError

TRAIN_TARGETS = ("digits", "digits-classifier", "glyphs", "glyphs-classifier")


def _cmd_list(args: argparse.Namespace) -> int:
    from . import CLASSIFIERS, WEIGHTS_DIR, ZOO_NAMES, load_zoo

    from ..commands.output import emit, table

    models = []
    for name in ZOO_NAMES:
        try:
            m = load_zoo(name)
        except InputError as exc:  # weights not shipped yet (e.g. a model still in training)
            models.append({"name": name, "kind": "EDM x0-denoiser", "missing": str(exc)})
            continue
        models.append({"name": name, "kind": "EDM x0-denoiser", "shape": list(m.shape), "num_classes": m.num_classes,
                       "sigma_data": m.sigma_data, "seed": m.meta["seed"], "steps": m.meta["steps"], "sha256": m.meta["sha256"]})
    for clf in CLASSIFIERS:
        f = WEIGHTS_DIR / f"{clf}-classifier.json"
        if f.is_file():
            meta = json.loads(f.read_text())
            models.append({"name": f"{clf}-classifier", "kind": f"feature CNN ({meta['num_features']}-d features) for "
                           f"FD-{clf}", "heldout_accuracy": meta["heldout_accuracy"]})
    rows = [[m["name"], m["kind"], "x".join(map(str, m.get("shape", []))) or "-",
             "weights missing" if "missing" in m else
             (f"{m['num_classes']} classes" if m.get("num_classes") else "unconditional") if "shape" in m
             else f"held-out accuracy {m['heldout_accuracy']:.4f}",
             f"seed {m['seed']}, {m['steps']} steps, sha256 {m['sha256'][:12]}" if "sha256" in m else ""] for m in models]
    emit(args, models, lambda: table(["model", "kind", "shape", "condition", "weights"], rows), indent=1)
    return 0


def check_model(out: str, weights_dir: str | None = None, per_class: int = 10, steps: int = 100, seed: int = 0,
                model: str = "zoo:digits-cond", guidance: float | None = None) -> dict:
    """Quality gate of a class-conditional zoo model: `per_class` `steps`-step iPNDM samples of each class (EDM rho=7;
    CFG `guidance` through the null class when given), saved as a grid PNG (one row per class up to 10, else one
    column per class); the share its classifier recognises as the requested class beside the classifier's own
    held-out accuracy, the most frequent confusions, and the FD of the samples to the held-out real images beside the
    FD of as many real training images to them (the floor at this sample size)."""
    import numpy as np
    import torch

    from .. import Denoiser, EDM, heuristic, sample
    from ..io import ensure_dir
    from ..metrics.features import extractor, frechet_distance, real_features
    from ..plots import save_image_grid
    from . import classifier_for, load_classifier, load_zoo
    from .glyphs import CHARS
    from .train_glyphs import top_confusions

    m = load_zoo(model, weights_dir=weights_dir)
    name = classifier_for(model)
    uncond = torch.tensor([m.num_classes]) if guidance not in (None, 1.0) else None
    den = Denoiser(m.fn, EDM(), m.prediction, guidance_scale=guidance if uncond is not None else None, uncond=uncond)
    labels = torch.arange(m.num_classes).repeat_interleave(per_class)
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(len(labels), *m.shape, generator=g) * 80
    with torch.no_grad():
        x = torch.cat([sample(den, x_T[i:i + 500], heuristic("edm", steps, den.schedule), solver="ipndm",
                              cond=labels[i:i + 500]) for i in range(0, len(labels), 500)]).clamp(-1, 1)
        clf = load_classifier(name=name)
        pred = clf(x).argmax(1)
    acc = float((pred == labels).float().mean())
    real_all, real_held = real_features(name, "all"), real_features(name, "heldout")
    floor_rows = np.random.default_rng(seed).choice(len(real_all), size=min(len(labels), len(real_all)), replace=False)
    path = ensure_dir(out) / f"{name}-samples.png"
    grid = x if m.num_classes <= 10 else x.view(m.num_classes, per_class, *m.shape).transpose(0, 1).reshape(x.shape)
    save_image_grid(grid, path, rows=10 if m.num_classes <= 10 else per_class)
    real_acc = clf.meta.get("heldout_accuracy")
    return {"grid": str(path), "samples": len(labels), "steps": steps, "guidance": guidance, "classifier_accuracy": acc,
            "classifier_heldout_accuracy": real_acc, "relative_accuracy": acc / real_acc if real_acc else None,
            "confusions": top_confusions(pred, labels, names=CHARS if name == "glyphs" else None),
            "fd_heldout": frechet_distance(extractor(name).features(x).double().numpy(), real_held),
            "fd_heldout_real_floor": frechet_distance(real_all[floor_rows], real_held),
            "model": model, "per_class_accuracy": [float((pred[labels == c] == c).float().mean()) for c in range(m.num_classes)]}


def _cmd_check(args: argparse.Namespace) -> int:
    from ..commands.output import emit

    r = check_model(args.out, args.weights_dir, per_class=args.per_class, seed=args.seed, model=args.model,
                    guidance=args.guidance, steps=args.steps or 100)
    conf = ", ".join(f"{c['true']}->{c['predicted']} {c['count']}" for c in r["confusions"][:5]) or "none"
    emit(args, r, f"{r['samples']} samples of {args.model} ({r['steps']}-step iPNDM, {args.per_class} per class"
         f"{', CFG ' + format(args.guidance, 'g') if args.guidance else ''}) -> {r['grid']}; its classifier recognises "
         f"{100 * r['classifier_accuracy']:.1f}% as the requested class ({100 * (r['relative_accuracy'] or 0):.1f}% of its "
         f"{100 * (r['classifier_heldout_accuracy'] or 0):.1f}% on real held-out images); top confusions: {conf}; FD to the "
         f"held-out real images {r['fd_heldout']:.2f} (real training images: {r['fd_heldout_real_floor']:.2f})")
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
    from ..commands.output import emit

    out = args.out or f"runs/zoo/{args.target}"
    if args.target.startswith("glyphs"):
        return _train_glyphs(args, out)
    if args.target == "digits":
        kw = {} if args.steps is None else {"steps": args.steps}
        meta = train_digits(out, seed=args.seed, minutes=args.minutes, **kw)
        r = check_model(out, out, seed=args.seed)
        emit(args, {**meta, "check": r}, lambda: "\n".join([
            f"saved {out}/digits-cond.safetensors: {meta['steps']} steps in {meta['training_time_s']} s, final loss "
            f"{meta['final_loss_last500']:.4f}; load with indis.zoo.load_zoo(name, weights_dir={out!r})",
            f"sanity: {r['grid']}; classifier recognises {100 * r['classifier_accuracy']:.1f}% as the requested digit"]), indent=1)
    else:
        meta = train_classifier(out, seed=args.seed, steps=args.steps)
        emit(args, meta, f"saved {out}/digits-classifier.safetensors: held-out accuracy {meta['heldout_accuracy']:.4f}",
             indent=1)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("zoo", help="shipped self-trained models (digits EDM denoiser, feature classifier)")
    sub = p.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    pl = sub.add_parser("list", help="list the shipped zoo models")
    pl.add_argument("--json", action="store_true", help="print the list as JSON")
    pl.set_defaults(func=_cmd_list)
    pc = sub.add_parser("check", help="sample 100 digits (10 per class, 100 steps), save a grid PNG, report classifier accuracy")
    pc.add_argument("--out", default="runs/zoo", help="folder for digits-samples.png")
    pc.add_argument("--weights-dir", default=None, help="weights folder (default: the shipped weights)")
    pc.add_argument("--seed", type=int, default=0, help="seeds the prior noise of the check samples")
    pc.add_argument("--model", default="zoo:digits-cond", choices=["zoo:digits-cond", "zoo:glyphs"],
                    help="the class-conditional model to check (default zoo:digits-cond)")
    pc.add_argument("--guidance", type=float, default=None, help="classifier-free guidance through the null class")
    pc.add_argument("--steps", type=int, default=None, help="sampling steps (default 100)")
    pc.add_argument("--per-class", type=int, default=10, help="samples of each class (default 10)")
    pc.add_argument("--json", action="store_true", help="print the result as JSON")
    pc.set_defaults(func=_cmd_check)
    pt = sub.add_parser("train", help="retrain a shipped model with its recipe (single CPU thread recommended)")
    pt.add_argument("target", help=f"what to train: {', '.join(TRAIN_TARGETS)}")
    pt.add_argument("--out", default=None, help="output folder (default runs/zoo/TARGET)")
    pt.add_argument("--steps", type=int, default=None, help="training steps (default: the shipped recipe's)")
    pt.add_argument("--seed", type=int, default=0, help="random seed (shipped weights: 0)")
    pt.add_argument("--minutes", type=float, default=None, help="wall-time cap (digits only; stops early)")
    pt.add_argument("--threads", type=int, default=1, help="torch CPU threads (shipped weights: 1)")
    pt.add_argument("--json", action="store_true", help="print the result as JSON")
    pt.add_argument("--no-progress", action="store_true", help="no progress bar (it shows only on a terminal anyway)")
    pt.set_defaults(func=_cmd_train)


def _train_glyphs(args: argparse.Namespace, out: str) -> int:
    from ..commands.output import emit, show_progress
    from .train_glyphs import train_glyphs, train_glyphs_classifier

    if args.target == "glyphs":
        meta = train_glyphs(out, seed=args.seed, steps=args.steps, minutes=args.minutes, progress=show_progress(args))
        state = "finished" if meta["complete"] else f"stopped at step {meta['steps']} of {meta['steps_requested']} (rerun to resume)"
        emit(args, meta, f"glyphs denoiser {state}: {out}/glyphs-cond.safetensors, {meta['training_time_s']} s, last loss "
             f"{meta['history'][-1]['loss'] if meta['history'] else float('nan'):.4f}", indent=1)
    else:
        meta = train_glyphs_classifier(out, seed=args.seed, steps=args.steps, progress=show_progress(args))
        pairs = ", ".join(f"{c['true']}->{c['predicted']}" for c in meta["confusions"][:5])
        emit(args, meta, f"saved {out}/glyphs-classifier.safetensors: held-out accuracy {meta['heldout_accuracy']:.4f}; "
             f"most frequent confusions: {pairs}", indent=1)
    return 0
