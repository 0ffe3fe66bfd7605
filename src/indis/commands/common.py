"""Arguments and helpers shared by the CLI subcommands."""
from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from ..errors import InputError

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, help="model spec: toy:tree[:A|B|AB], zoo:digits, zoo:digits-cond, "
                   "python:module:callable (the module is imported from the current folder or PYTHONPATH, as with python -m), "
                   "diffusers:PATH, edm:PATH")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--guidance", type=float, default=None, metavar="G", help="classifier-free guidance scale for "
                   "class-conditional models with a null class (zoo:digits-cond); default: unguided")
    g.add_argument("--guidance-range", default=None, metavar="LO,HI", help="per-sample guidance scales: a teacher set "
                   "draws each sample's scale uniformly from [LO, HI] and INDIS's phi takes it as an input (one "
                   "schedule for every scale)")
    p.add_argument("--trust-pickle", action="store_true", help="allow loading pickled checkpoints (edm:PATH.pkl); only for files you trust")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda or cuda:1")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="solver dtype")


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if getattr(args, "trust_pickle", False):
        opts["trust_pickle"] = True
    return opts


def check_device(device: str) -> torch.device:
    """A usable torch device named by --device, or InputError (a typo, or CUDA that this machine lacks)."""
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"--device {device!r} is not a torch device (expected e.g. cpu, cuda, cuda:1)") from exc
    if d.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__}); use --device cpu")
    if d.type == "cuda" and d.index is not None and d.index >= torch.cuda.device_count():
        raise InputError(f"--device {device}: there are only {torch.cuda.device_count()} CUDA device(s)")
    if d.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"--device {device}: indis runs on cpu or cuda (and mps), not {d.type}")
    return d


def load(args: argparse.Namespace):
    from ..models import load_model

    check_device(args.device)
    h = load_model(args.model, **model_options(args))
    g = getattr(args, "guidance", None)
    if g is not None:
        h.with_guidance(finite(g, "--guidance"))
    r = getattr(args, "guidance_range", None)
    if r is not None:
        from ..priors import check_guidance_range

        h.with_guidance_range(*check_guidance_range(r.split(",") if isinstance(r, str) else r, "--guidance-range"))
    h.denoiser.to(args.device)
    return h


def dtype_of(args: argparse.Namespace) -> torch.dtype:
    return DTYPES[args.dtype]


def finite(v: float, name: str) -> float:
    """A float flag that must be finite (NaN/Inf name the flag, not whatever later consumes the value)."""
    import math

    if not math.isfinite(v):
        raise InputError(f"{name} must be a finite number, got {v}")
    return v


def check_steps(n: int, name: str = "--steps") -> int:
    if n < 1 or n > 1000:
        raise InputError(f"{name} must be between 1 and 1000, got {n}")
    return n


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))
