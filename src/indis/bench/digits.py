"""`indis bench digits`: the paper's table-1 protocol on the shipped 8x8 digits EDM model (zoo:digits, or zoo:digits-cond
with classifier-free guidance), every baseline at its best, equal training budgets, confidence intervals.

Each seed (`digits_run.DigitsRun`) trains and evaluates every method; `digits_report` pools the seeds (mean ± std,
paired bootstrap CIs of INDIS - baseline) and writes results.json, results.md and the figures. Everything is cached
under --out, so a rerun redoes nothing and an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError

BENCHMARK = "digits"
LR = {"god": 5e-2, "ld3": 5e-3, "indis": 1e-3, "oracle": 5e-2}  # AMED / EPD: their reference recipes (digits_run)
#: learning rates GOD and INDIS are trained at (full sizes): the run with the lowest validation loss is kept. The first
#: is LR's, so runs cached before the choice existed are found; a well-started GOD can lose its start at 5e-2 (the
#: scaling bench's flaw) and INDIS can stay at its warm start at 1e-3 where 1e-4 leaves it (glyphs, seed 0, NFE 3)
RATES = {"god": [5e-2, 5e-3], "indis": [1e-3, 1e-4]}
FULL = dict(train=10_000, val=1_000, test=5_000, seeds=[0, 1, 2], batch=64, patience=8, val_every=50, cap=4000, probe=100,
            val_train=500, starts=3, oracle_priors=500, oracle_cap=400, oracle_patience=5, oracle_nfes=[3, 5],
            ablation_nfes=[3, 5], ablation_seeds=1, gits_warmup=256, ipndm_table=True,
            ipndm_seeds=1, rates=RATES)
QUICK = dict(train=600, val=200, test=400, seeds=[0], batch=64, patience=3, val_every=20, cap=150, probe=15, val_train=100,
             starts=2, oracle_priors=64, oracle_cap=60, oracle_patience=3, oracle_nfes=[3], ablation_nfes=[3],
             ablation_seeds=1, gits_warmup=32, ipndm_table=False, replicates=50, split_bases=["edm", "time_uniform"],
             rates={})  # quick: one learning rate each (LR), to stay within its time budget
#: zoo:glyphs costs about 8x (forward) to 12x (with backward) zoo:digits per sample (16x16 and a wider U-Net; measured
#: on one core), so its sizes are cut to fit its budgets (one seed at one NFE <= 2 h, --quick <= 10 min on one core):
#: fewer pairs, batch 32, shorter probes and caps; the protocol itself is unchanged
GLYPHS_FULL = {**FULL, "train": 3000, "val": 500, "test": 2000, "batch": 32, "patience": 6, "val_every": 40, "cap": 2000,
               "probe": 30, "val_train": 250, "starts": 2, "oracle_priors": 128, "oracle_cap": 200, "oracle_nfes": [3],
               "ablation_nfes": [3], "gits_warmup": 128, "ipndm_table": False, "nfes": [3, 5]}
#: (AMED and EPD keep every base schedule of the digits protocol: on digits AMED's winner at NFE 3 and 5 is logsnr)
GLYPHS_QUICK = {**QUICK, "train": 200, "val": 100, "test": 200, "cap": 40, "probe": 5, "val_train": 50, "starts": 1,
                "oracle_priors": 16, "oracle_cap": 20, "gits_warmup": 16, "split_bases": ["edm"], "nfes": [3]}
#: data family (zoo.classifier_for) -> (full sizes, --quick sizes)
SIZES = {"digits": (FULL, QUICK), "glyphs": (GLYPHS_FULL, GLYPHS_QUICK)}
PROTOCOL = ("fixed schedules: lowest validation FD over {iPNDM, DPM-Solver++(3M), UniPC} x {AFS off, on}; GOD, LD3: "
            "each configuration probed for `probe` iterations, the lowest validation loss trained under the budget rule "
            "(multi-start, plateau learning rate, stop after `patience` validations without improvement, cap far above); "
            "GOD and INDIS are trained at each of their learning rates (`rates`) and the lowest validation loss is kept; "
            "INDIS: warm start from the better trained GOD/LD3 under its configuration; AMED/EPD: trained as their "
            "reference code trains them (objective, teacher, optimiser, one pass over the training priors, final weights) "
            "at odd NFE with AFS (their reference), in every configuration (own solver or iPNDM plugin x base schedule "
            "edm, logsnr, time_uniform), lowest validation FD reported; NFE counts model calls (EPD's K parallel "
            "evaluations count once, as published).")


MODELS = {"zoo:digits": False, "zoo:digits-cond": True, "zoo:glyphs": True}  # model -> class-conditional


def add_arguments(p: argparse.ArgumentParser, default_model: str = "zoo:digits") -> None:
    p.add_argument("--model", default=default_model, choices=list(MODELS),
                   help="zoo:digits (unconditional, the CIFAR-10 analogue), zoo:digits-cond (class-conditional) or "
                   "zoo:glyphs (62 characters at 16x16, class-conditional)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (zoo:digits-cond only; "
                   "the teacher is the guided 30-step solution)")
    p.add_argument("--choose-guidance", type=float, nargs="+", default=None, metavar="G", help="pick the guidance scale "
                   "among these whose 30-step teacher has the lowest FD to the held-out real images, on the first seed's "
                   "validation priors, then run the protocol at it (e.g. 1.5 2 3 4)")
    p.add_argument("--out", default=None, help="output folder (default runs/bench-digits[-cond][-gG], runs/bench-glyphs[-gG])")
    p.add_argument("--json", action="store_true", help="print results.json to stdout (progress goes to stderr)")
    p.add_argument("--quick", action="store_true", help=f"reduced sizes (digits {QUICK['train']}, glyphs {GLYPHS_QUICK['train']} pairs, one seed, short budgets): "
                   "every table and figure in a few minutes; the numbers are not the benchmark's")
    p.add_argument("--nfe", type=int, nargs="+", default=None, help="NFEs (default 3 5 7, glyphs 3 5; quick: 3 5, glyphs 3)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="experiment seeds: each seeds its own train/"
                   "validation/test priors and training (default 0 1 2; quick: 0)")
    p.add_argument("--select", choices=["fd", "mse"], default="fd", help="validation criterion for fixed schedules")
    p.add_argument("--loss", choices=["mse", "digits-perceptual"], default="mse", help="training and validation loss of the "
                   "learned methods (GOD, LD3, INDIS, oracle; AMED/EPD keep their references' losses): squared error to the teacher endpoint, or the LPIPS-like distance "
                   "in the digits classifier's features (FD is measured in that classifier's features too)")
    p.add_argument("--no-ablations", action="store_true")
    p.add_argument("--no-oracle", action="store_true")
    p.add_argument("--no-ipndm-table", action="store_true")
    p.add_argument("--replicates", type=int, default=None, help="bootstrap replicates of each confidence interval (default 200; quick 50)")
    p.add_argument("--rows", nargs="+", default=None, metavar="ROW", help="only train and cache these main-table rows "
                   "(best-heuristic dmn gits ld3 god amed epd indis; indis brings god and ld3, its warm starts), then stop "
                   "without a report: to split one seed over several processes sharing --out; a run without --rows "
                   "then reuses their work and reports")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    h = argparse.SUPPRESS  # sizes for tests and investigations
    for name in ("num-train", "num-val", "num-test", "cap", "probe", "patience", "val-every", "oracle-priors", "gits-warmup"):
        p.add_argument(f"--{name}", type=int, default=None, help=h)
    for name in ("ipndm-nfes", "oracle-nfes", "ablation-nfes"):  # subsets of --nfe (e.g. to report what a partial run finished)
        p.add_argument(f"--{name}", type=int, nargs="*", default=None, help=h)
    p.add_argument("--phi-hidden", type=int, default=256, help=h)
    p.add_argument("--phi-channels", type=int, default=16, help=h)
    p.add_argument("--lr-indis", type=float, default=None, help=h)  # INDIS at this one rate
    for m in ("god", "indis"):  # the learning rates tried (the first is the default's spelling in cached specs)
        p.add_argument(f"--{m}-lrs", type=float, nargs="+", default=None, help=h)


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from ..zoo import classifier_for

    full, quick = SIZES[classifier_for(args.model)]
    s = dict(quick if args.quick else full)
    over = {"num_train": "train", "num_val": "val", "num_test": "test", "cap": "cap", "probe": "probe", "patience": "patience",
            "val_every": "val_every", "oracle_priors": "oracle_priors", "gits_warmup": "gits_warmup"}
    for a, k in over.items():
        v = getattr(args, a)
        if v is not None:
            if v < 1:
                raise InputError(f"--{a.replace('_', '-')} must be >= 1, got {v}")
            s[k] = v
    s["nfes"] = sorted(set(args.nfe or s.get("nfes") or ([3, 5] if args.quick else [3, 5, 7])))
    if min(s["nfes"]) < 2:
        raise InputError(f"--nfe values must be >= 2 (AMED/EPD need two model calls per step), got {args.nfe}")
    s["seeds"] = args.seeds if args.seeds is not None else s["seeds"]
    if any(v < 0 for v in s["seeds"]):
        raise InputError(f"--seeds must be >= 0, got {s['seeds']}")
    if args.guidance is not None:
        if not MODELS[args.model]:
            raise InputError(f"--guidance needs a class-conditional model (zoo:digits-cond, zoo:glyphs); {args.model} has no "
                             "condition to guide")
        if not math.isfinite(args.guidance) or args.guidance < 0:
            raise InputError(f"--guidance must be a finite number >= 0, got {args.guidance}")
    lr, rates = dict(LR), {m: list(v) for m, v in s.get("rates", {}).items()}
    for m in ("god", "indis"):
        given = getattr(args, f"{m}_lrs", None)
        if given is not None:
            rates[m] = list(given)
    if args.lr_indis is not None:
        rates["indis"] = [args.lr_indis]
    for m, v in rates.items():  # (ranges checked with every numeric option: commands.common.NUMBER_RANGES)
        lr[m] = v[0]
    replicates = args.replicates if args.replicates is not None else s.get("replicates", 200)
    if replicates < 10:
        raise InputError(f"--replicates must be >= 10, got {replicates}")
    s.update(model=args.model, guidance=args.guidance, select=args.select, lr=lr, loss=args.loss, val_train=min(s["val_train"], s["val"]),
             phi={"hidden": args.phi_hidden, "channels": args.phi_channels}, cond=MODELS[args.model],
             teacher="30-step iPNDM on EDM rho=7 times" + (f", guidance {args.guidance}" if args.guidance else ""),
             protocol=PROTOCOL, replicates=replicates, rates=rates)
    if args.no_ablations:
        s["ablation_nfes"] = []
    if args.no_oracle:
        s["oracle_nfes"] = []
    if args.no_ipndm_table:
        s["ipndm_table"] = False
    for key in ("ipndm_nfes", "oracle_nfes", "ablation_nfes"):
        v = getattr(args, key, None)
        if v is not None:
            if not set(v) <= set(s["nfes"]):
                raise InputError(f"--{key.replace('_', '-')} must be a subset of the NFEs {s['nfes']}, got {v}")
            s[key] = sorted(set(v))
    s["oracle_nfes"] = [n for n in s["oracle_nfes"] if n in s["nfes"]]
    s["ablation_nfes"] = [n for n in s["ablation_nfes"] if n in s["nfes"]]
    return s


def load_handle(model: str, guidance: float | None):
    """The zoo model, with classifier-free guidance through its null class when asked."""
    from ..models import load_model

    return load_model(model).with_guidance(guidance)


def default_out(s: dict[str, Any]) -> Path:
    """runs/bench-<family>[-cond][-gG][-<loss>][-quick]: one folder per model, guidance, loss and size."""
    from ..zoo import classifier_for

    family = classifier_for(s["model"])
    name = f"bench-{family}" + ("-cond" if s["cond"] and family == "digits" else "")
    name += f"-g{s['guidance']:g}" if s["guidance"] is not None else ""
    name += "" if s.get("loss", "mse") == "mse" else f"-{s['loss']}"
    return Path("runs") / (name + ("-quick" if s["quick"] else ""))


def main(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    from ..commands.common import check_device

    torch.set_num_threads(args.threads)
    check_device(args.device)
    s = settings_from_args(args)
    s["quick"] = bool(args.quick)
    if args.choose_guidance:
        if args.guidance is not None:
            raise InputError("give --guidance or --choose-guidance, not both")
        s["guidance_choice"] = choose_guidance(s, args.choose_guidance, Path(args.out) if args.out else None,
                                               device=args.device, progress=not args.no_progress)
        s["guidance"] = min(s["guidance_choice"], key=s["guidance_choice"].get)
        s["teacher"] += f", guidance {s['guidance']:g} (chosen on validation)"
    out = Path(args.out) if args.out else default_out(s)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731 - stage lines on stderr; --no-progress drops the bars
    if args.rows:
        fill_rows(s, out, args.rows, device=args.device, progress=not args.no_progress, log=log)
        print(f"rows {' '.join(args.rows)} cached under {out}; run again without --rows to report")
        return 0
    res = run(s, out, device=args.device, progress=not args.no_progress, log=log)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print((out / "results.md").read_text())
    return 0


def choose_guidance(s: dict[str, Any], scales: list[float], out: Path | None, *, device: str = "cpu",
                    progress: bool = True) -> dict[float, float]:
    """FD of the 30-step teacher to the held-out real images at each guidance scale, on the first seed's validation
    priors (their teacher sets are the ones the protocol then uses at the chosen scale)."""
    from ..experiment import Experiment, ExperimentConfig
    from ..metrics.features import extractor, frechet_distance, real_features
    from ..zoo import classifier_for

    if not MODELS[s["model"]]:
        raise InputError(f"--choose-guidance needs a class-conditional model; {s['model']} has no condition to guide")
    bad = [g for g in scales if not math.isfinite(g) or g < 0]
    if bad:
        raise InputError(f"--choose-guidance scales must be finite numbers >= 0, got {bad}")
    fs = classifier_for(s["model"])
    fd = {}
    for g in scales:
        s_g = {**s, "guidance": g}
        root = (out or default_out(s_g)) / f"seed-{s['seeds'][0]}"
        cfg = ExperimentConfig(model=s["model"], seed=s["seeds"][0], sizes={"train": s["train"], "val": s["val"],
                                                                            "test": s["test"]}, guidance=g)
        exp = Experiment(root, load_handle(s["model"], g), cfg, device=device, progress=progress)
        x0 = exp.data("val")[3]
        fd[g] = frechet_distance(extractor(fs).features(x0.float().cpu()).double().numpy(), real_features(fs, "heldout"))
    return fd


def fill_rows(s: dict[str, Any], out: Path, rows: list[str], *, device: str = "cpu", progress: bool = True, log=None) -> None:
    """Train and cache only `rows` of the main table at every seed and NFE (the same run folders a full run uses)."""
    from ..io import ensure_dir
    from .digits_run import ROWS, DigitsRun

    bad = [r for r in rows if r not in ROWS]
    if bad:
        raise InputError(f"--rows: unknown row(s) {bad}; choose from {' '.join(ROWS)}")
    out = ensure_dir(out)
    h = load_handle(s["model"], s["guidance"])
    for seed in s["seeds"]:
        r = DigitsRun(s, seed, out, h, device=device, progress=progress, log=log)
        for nfe in s["nfes"]:
            r.table(nfe, "main", only=set(rows))


def run(s: dict[str, Any], out: Path, *, device: str = "cpu", progress: bool = True, log=None) -> dict[str, Any]:
    """Run every seed (cached), pool them, write results.json / results.md / figures under `out`. Each seed's own
    results.json (seed-S/) carries its settings and bootstrap evidence, so `indis bench pool` can pool it later with
    seeds run elsewhere."""
    from ..io import atomic_write_json, ensure_dir
    from . import digits_report as rep
    from .digits_run import DigitsRun

    out = ensure_dir(out)
    t0 = time.time()
    h = load_handle(s["model"], s["guidance"])
    seeds = []
    for seed in s["seeds"]:
        r = DigitsRun(s, seed, out, h, device=device, progress=progress, log=log)
        res = r.run(s["nfes"])
        res.update(settings=s, real_heldout=len(r.real_heldout), evidence=rep.seed_evidence(r, res, s["replicates"]))
        atomic_write_json(out / f"seed-{seed}" / "results.json", res)
        seeds.append(res)
    return report(seeds, s, out, wall_s=time.time() - t0)


def report(seeds: list[dict[str, Any]], s: dict[str, Any], out: Path, wall_s: float | None = None) -> dict[str, Any]:
    """Pool per-seed results (with their evidence) into results.json, results.md and the figures under `out`."""
    from ..io import atomic_write_json, atomic_write_text, ensure_dir
    from ..metrics.stats import mean_std
    from . import digits_report as rep

    out = ensure_dir(out)
    agg = rep.aggregate(seeds, s["nfes"])
    agg["teacher"] = {k: mean_std([x["teacher"][k] for x in seeds]) for k in seeds[0]["teacher"] if k != "steps"}
    first = seeds[0]
    if "overhead" in first:
        agg["overhead"] = first["overhead"]
    figures = {"ablations": rep.figure_ablations(agg, out / "ablations.png"),
               "timesteps": rep.figure_timesteps(first["timesteps"], out / "timesteps.png") if first.get("timesteps") else None,
               "grid": rep.figure_grid(first["grid"], out / "grid.png") if first.get("grid") else None}
    files = {k: v.name for k, v in figures.items() if v is not None}
    res = {"benchmark": BENCHMARK, "model": s["model"], "guidance": s["guidance"], "settings": s, **agg,
           "real_heldout": first["real_heldout"], "timesteps": first.get("timesteps"), "figures": files,
           "wall_s": None if wall_s is None else round(wall_s, 1), "torch": torch.__version__, "threads": torch.get_num_threads()}
    atomic_write_json(out / "results.json", res)
    atomic_write_text(out / "results.md", rep.to_markdown(res, s, files))
    return res
