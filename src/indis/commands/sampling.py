"""`indis sample`: draw samples with a saved discretization or a heuristic, save them (and a picture)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ..discretizations.base import load_discretization
from ..errors import InputError
from ..io import claim_output, save_tensors
from ..methods import fixed
from ..solvers import SOLVERS
from ..priors import class_cond, class_labels, index_cond, prior_noise, prior_std, table_rows
from .common import add_model_args, check_steps, dtype_of, load
from .output import add_json_arg, emit


MAX_SAMPLES = 1_000_000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="sample with a saved discretization (--discretization) or a heuristic (--method)")
    add_model_args(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--discretization", help="folder of a saved discretization (indis train/schedule --out)")
    g.add_argument("--method", help="heuristic name (edm, uniform, logsnr, ...), gits or dmn")
    p.add_argument("--steps", type=int, default=None, help="N (required with --method)")
    p.add_argument("--solver", default="ipndm", choices=SOLVERS, help="solver for --method (a saved discretization uses its own)")
    p.add_argument("--num", type=int, default=16)
    p.add_argument("--seed", type=int, default=12345, help="seeds the prior noise x_T (and random class labels) of the samples")
    p.add_argument("--label", type=int, default=None, help="class label for class-conditional models (default: random)")
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true", help="use a discretization trained for another model anyway")
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.num <= MAX_SAMPLES:
        raise InputError(f"--num must be between 1 and {MAX_SAMPLES}, got {args.num}")
    h = load(args)
    if args.label is not None:
        if h.cond_kind != "class":
            raise InputError(f"--label needs a class-conditional model; {h.spec} has {'no condition' if h.cond_kind == 'none' else 'a ' + h.cond_kind + ' condition'}")
        if not 0 <= args.label < h.num_classes:
            raise InputError(f"--label must be in 0..{h.num_classes - 1} for {h.spec}, got {args.label}")
    if args.discretization:
        d = load_discretization(args.discretization, steps=args.steps, model=h, force=args.force)
    else:
        if args.steps is None:
            raise InputError("--steps is required with --method")
        d = fixed(h, args.method, check_steps(args.steps), args.solver)
    d.to(args.device)
    dt = dtype_of(args)
    xT = prior_noise(range(args.num), args.seed, h.data_shape, prior_std(h.schedule, d.t_max), dt, args.device)
    cond = None
    if h.cond_kind == "class":
        cond = _class_condition(args, h, d)
    elif h.cond_kind == "table":
        c = index_cond(h.cond_table, torch.arange(args.num) % table_rows(h.cond_table))
        cond = {k: v.to(args.device) for k, v in c.items()} if isinstance(c, dict) else c.to(args.device)
    with torch.no_grad():
        x = d.sample(h.denoiser, xT, cond)
        if h.decode is not None:
            x = h.decode(x)
    out = claim_output(args.out, "samples")
    tensors = {"samples": x.float().cpu()}
    if isinstance(cond, torch.Tensor):
        tensors["cond"] = cond.cpu()
    elif isinstance(cond, dict) and "guidance_scale" in cond:
        tensors["cond"], tensors["guidance_scale"] = cond["class"].cpu(), cond["guidance_scale"].cpu()
    save_tensors(out / "samples.safetensors", tensors, {"model": h.spec, "method": d.name, "steps": str(d.steps)})
    title = f"{h.spec}: {x.shape[0]} samples, {d.name} ({d.solver}, N={d.steps}{', AFS' if d.afs else ''}), seed {args.seed}"
    picture = _save_picture(x.float().cpu(), out / "samples.png", title)
    data = {"samples": str(out / "samples.safetensors"), "picture": picture, "method": d.name, "steps": d.steps, "solver": d.solver}
    emit(args, data, lambda: f"{x.shape[0]} samples of {h.spec} with {d.name} ({d.solver}{' + AFS' if d.afs else ''}, N={d.steps}, "
         f"{d.nfe} model calls each), seed {args.seed}\n  samples: {data['samples']}"
         + (f"\n  picture: {picture}" if picture else ""))
    return 0


def _class_condition(args: argparse.Namespace, h, d) -> Any:
    """Labels (given or random), plus per-sample guidance scales when the model samples a guidance range or the
    discretization's phi was trained over one (then the fixed --guidance scale is its input)."""
    labels = (torch.full((args.num,), args.label, dtype=torch.long) if args.label is not None
              else class_labels(range(args.num), args.seed, h.num_classes))
    wants = getattr(getattr(d, "phi", None), "guidance_range", None) is not None
    if h.meta.get("guidance_range") is not None:
        g = class_cond(range(args.num), args.seed, h.cond_spec())["guidance_scale"]
    elif wants and isinstance(h.denoiser.guidance_scale, (int, float)):
        g = torch.full((args.num,), float(h.denoiser.guidance_scale))
    elif wants:
        lo, hi = d.phi.guidance_range
        raise InputError(f"this discretization was trained over guidance scales {lo:g}..{hi:g}: pass --guidance G "
                         "(or --guidance-range)")
    else:
        return labels.to(args.device)
    return {"class": labels.to(args.device), "guidance_scale": g.to(args.device)}


def _save_picture(x: torch.Tensor, path: Path, title: str) -> str | None:
    """A scatter plot for 2-D points, a grid for images; nothing for other shapes."""
    from ..plots import save_image_grid, save_point_cloud

    if x.dim() == 2 and x.shape[1] == 2:
        return str(save_point_cloud(x, path, title))
    if x.dim() == 4 and x.shape[1] in (1, 3):
        return str(save_image_grid(x, path, title=title))
    return None
