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
    d = p.add_argument_group("diffusers models (--model diffusers:PATH)")
    d.add_argument("--prompts", default=None, metavar="FILE", help="text file, one prompt per line, encoded once with the "
                   "pipeline's text encoders; sample i uses prompt i mod P (with --guidance: CFG against the empty prompt; "
                   "FLUX: --guidance is its distilled guidance input)")
    d.add_argument("--prompt-embeds", default=None, metavar="FILE", help="safetensors file of precomputed embeddings: "
                   "prompt_embeds [P, L, D] (FLUX also pooled_prompt_embeds [P, D]; LTX prompt_attention_mask [P, L]) and "
                   "for CFG negative_prompt_embeds [1, L, D] (and its mask / pooled)")
    d.add_argument("--height", type=int, default=None, help="output height in pixels (latent size = height / VAE factor)")
    d.add_argument("--width", type=int, default=None, help="output width in pixels")
    d.add_argument("--frames", type=int, default=None, help="LTX-Video: number of frames")
    d.add_argument("--model-dtype", default=None, choices=["float32", "bfloat16", "float16"], help="dtype of the model's "
                   "weights (the solver, times and phi stay in --dtype)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda or cuda:1")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="solver dtype")


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if getattr(args, "trust_pickle", False):
        opts["trust_pickle"] = True
    diffusers = str(getattr(args, "model", "")).startswith("diffusers:")
    given = {k: getattr(args, k, None) for k in ("prompts", "prompt_embeds", "height", "width", "frames", "model_dtype")}
    if not diffusers:
        extra = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
        if extra:
            raise InputError(f"{', '.join(extra)} apply to --model diffusers:PATH only")
        return opts
    if given["prompts"] is not None and given["prompt_embeds"] is not None:
        raise InputError("give --prompts or --prompt-embeds, not both")
    opts["require_prompts"] = True
    if given["prompts"] is not None:
        opts["prompts"] = _read_prompts(given["prompts"])
    if given["prompt_embeds"] is not None:
        from ..io import load_tensors

        opts["prompt_table"] = load_tensors(given["prompt_embeds"])[0]
    for k, key in (("height", "height"), ("width", "width"), ("frames", "num_frames")):
        if given[k] is not None:
            opts[key] = given[k]
    if given["model_dtype"] is not None:
        opts["torch_dtype"] = given["model_dtype"]
    if getattr(args, "guidance", None) is not None:
        opts["cfg"] = finite(args.guidance, "--guidance")
    return opts


def _read_prompts(path: str) -> list[str]:
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise InputError(f"--prompts '{path}' does not exist (a text file, one prompt per line)")
    lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise InputError(f"--prompts '{path}' holds no prompt (one prompt per line)")
    return lines


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
    opts = model_options(args)
    h = load_model(args.model, **opts)
    g = getattr(args, "guidance", None)
    if g is not None and "cfg" not in opts:
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


# -- the range of every numeric option, checked in one place (`check_numbers`, called by `indis.cli.main`) ----------
_BIG = 10**8
_SEED = 2**63 - 1
#: option dest (or "COMMAND:dest" where a command gives the name another meaning) -> (low, high, low_open, high_open)
NUMBER_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "seed": (0, _SEED, False, False), "threads": (1, 1024, False, False), "batch_size": (1, 2**20, False, False),
    "num_train": (1, _BIG, False, False), "num_val": (1, _BIG, False, False), "num_test": (1, _BIG, False, False),
    "teacher_steps": (1, 1000, False, False), "god_cap": (1, _BIG, False, False), "indis_cap": (1, _BIG, False, False),
    "oracle_cap": (1, _BIG, False, False), "oracle_subset": (1, _BIG, False, False), "w2_points": (1, _BIG, False, False),
    "patience": (0, _BIG, False, False), "val_every": (1, _BIG, False, False), "global_starts": (1, 1000, False, False),
    "starts": (1, 1000, False, False), "guidance": (0, 1000, False, False), "steps": (1, 1000, False, False),
    "nfe": (1, 1000, False, False), "num": (1, _BIG, False, False), "label": (0, 10**6, False, False),
    "rho": (0, 1000, True, False), "coeff": (0, 100, True, False), "num_samples": (1, _BIG, False, False),
    "shard_size": (1, _BIG, False, False), "num_points": (1, 64, False, False), "probe_iterations": (1, _BIG, False, False),
    "shift_bound": (0, 10, False, False), "scale_bound": (0, 10, False, False), "iterations": (1, _BIG, False, False),
    "lr": (0, 100, True, False), "ema": (0, 1, False, True), "val_fraction": (0, 1, False, True),
    "ckpt_every": (1, _BIG, False, False), "noise_radius": (0, 10**6, False, False), "replicates": (10, 10**6, False, False),
    "dist_timeout": (1, 10**6, False, False), "diagnose_priors": (8, 10**5, False, False),
    "diagnose_iterations": (10, 10**6, False, False), "diagnose_curve_iterations": (1, 10**6, False, False),
    "diagnose_curve_sizes": (8, 10**6, False, False),
    "train_size": (1, 10**9, False, False), "choose_guidance": (0, 1000, False, False), "dims": (1, 65536, False, False),
    "components": (1, 10000, False, False), "seeds": (0, _SEED, False, False),
    "bench:batch": (1, 2**16, False, False), "bench:size": (1, 4096, False, False), "bench:nfe": (2, 1000, False, False),
    "bench:cap": (1, _BIG, False, False), "bench:probe": (1, _BIG, False, False), "bench:oracle_priors": (1, _BIG, False, False),
    "bench:gits_warmup": (1, _BIG, False, False), "bench:ipndm_nfes": (2, 1000, False, False),
    "bench:oracle_nfes": (2, 1000, False, False), "bench:ablation_nfes": (2, 1000, False, False),
    "bench:phi_hidden": (1, 2**16, False, False), "bench:phi_channels": (1, 4096, False, False),
    "bench:lr_indis": (0, 100, True, False), "bench:god_lrs": (0, 100, True, False),
    "bench:indis_lrs": (0, 100, True, False), "bench:blocks": (1, 64, False, False), "height": (8, 16384, False, False),
    "width": (8, 16384, False, False), "frames": (1, 4096, False, False), "zoo:steps": (1, _BIG, False, False), "zoo:minutes": (0, 10**6, True, False),
    "zoo:per_class": (1, 10**5, False, False), "input_basis": (1, 10**5, False, False), "train_runs": (1, 1000, False, False),
    "train:runs": (1, 1000, False, False),
}


def _bound(v: float) -> str:
    return "2^63 - 1" if v == _SEED else f"{v:g}" if isinstance(v, float) else str(v)


def number_range(command: str, dest: str) -> tuple[float, float, bool, bool] | None:
    """The declared range of option `dest` of `command` (e.g. "bench digits"), or None."""
    key = f"{command.split()[0]}:{dest}" if command else ""
    return NUMBER_RANGES.get(key) or NUMBER_RANGES.get(dest)


def check_number(flag: str, value: Any, rng: tuple[float, float, bool, bool], is_int: bool) -> None:
    """InputError naming `flag` and its range when `value` (or any of a list of values) lies outside it."""
    import math

    lo, hi, lo_open, hi_open = rng
    for v in value if isinstance(value, (list, tuple)) else [value]:
        inside = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        if is_int and not inside:
            raise InputError(f"{flag} must be an integer between {_bound(lo)} and {_bound(hi)}, got {v}")
        if not is_int and not (math.isfinite(v) and inside):
            span = f"{'(' if lo_open else '['}{_bound(lo)}, {_bound(hi)}{')' if hi_open else ']'}"
            raise InputError(f"{flag} must be a finite number in {span}, got {v}")


def numeric_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The int and float options of one (sub)parser."""
    return [a for a in parser._actions if a.option_strings and a.type in (int, float)]


def check_numbers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check every numeric option of the invoked (sub)command against `NUMBER_RANGES`."""
    path = []
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if name is None:
            break
        path.append(name)
        parser = subs[0].choices[name]
    command = " ".join(path)
    for a in numeric_options(parser):
        value = getattr(args, a.dest, None)
        rng = number_range(command, a.dest)
        if value is not None and rng is not None:
            check_number(a.option_strings[-1], value, rng, a.type is int)
