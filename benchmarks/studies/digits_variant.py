"""A variant against INDIS and GOD on finished seeds of `indis bench digits` / `bench images`, trained into the
same cache, then teacher-MSE and FD on each seed's test priors, paired bootstrap 95% intervals pooled over the seeds:

- `plus-denoised` (INDIS-D: phi also reads the solver's first model output): the bench's own ablation row,
  warm-started from the same global run as INDIS, same configuration and budget rule;
- `plus-projected` (INDIS-PD: phi reads x_T and D(x_T, t_max) on the top 16 principal directions of the training
  teacher endpoints): the bench's ablation row of that name, trained the same way;
- `god-polish` (a control on GOD): GOD trained further exactly as INDIS is trained from it (warm start from the
  bench's GOD run, INDIS's learning rates, the same budget rule, the lower validation loss kept), so that INDIS's
  second stage of training is no advantage of its own.

    python benchmarks/studies/digits_variant.py NFE DIR:SEED [DIR:SEED ...] [--variant V] [--out FILE] [-- BENCH ARGS]

Each DIR is a bench output folder. Where its seed-SEED/results.json exists, the study reuses the GOD and INDIS rows it
names (their runs must still be in DIR) and trains only the variant, cached there too, so a rerun only evaluates.
Where it does not, the main table's INDIS row (with GOD and LD3, its warm starts) is trained into DIR first, exactly as
`indis bench digits --rows indis` trains it, under the bench settings that BENCH ARGS give (e.g. `-- --model
zoo:digits-cond --guidance 4`; a later full bench run in DIR reuses all of it). Prints the report as JSON and writes it
to FILE (default: the first DIR's {V}-nfe{NFE}.json).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from indis.bench.digits import add_arguments, load_handle, settings_from_args
from indis.bench.digits_run import DigitsRun
from indis.io import atomic_write_json
from indis.metrics.stats import (fd_reference, paired_bootstrap_many, per_prior_view, ratio_ci, weighted_fd,
                                 weighted_mean)

# variant: its name in the report
VARIANTS = {"plus-denoised": "indis-d", "plus-projected": "indis-pd", "god-polish": "god-polished"}


def polished_god(run: DigitsRun, nfe: int, god: dict) -> dict:
    """GOD warm-started from the bench's GOD row at each of INDIS's learning rates, the lower validation loss kept."""
    sp = god["spec"]
    runs = [run.learned_run("god", nfe, sp["solver"], sp["afs"], lr=lr, warm=god) for lr in run.s["rates"]["indis"]]
    sp, d, info = min(runs, key=lambda r: r[2]["best_val"])
    return run._row(sp, d, {**info, "lr_choice": {f"{r[0]['train']['lr']:g}": r[2]["best_val"] for r in runs},
                            "warm_best_val": god["train"]["best_val"]}, {"by": "validation loss"})


def bench_settings(bench_args: list[str], nfe: int, seed: int) -> dict:
    """The settings `indis bench digits BENCH_ARGS --nfe NFE --seeds SEED` would run under."""
    p = argparse.ArgumentParser(prog="indis bench digits")
    add_arguments(p)
    return settings_from_args(p.parse_args([*bench_args, "--nfe", str(nfe), "--seeds", str(seed)]))


def seed_rows(out: Path, nfe: int, seed: int, variant: str, bench_args: list[str] | None = None
              ) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray, dict]:
    """Per-prior test rows (features, teacher-MSE) of GOD, INDIS and the variant for one seed, the real features FD is
    measured against, and the three row records (the bench's own test metrics in each record's "test")."""
    done = out / f"seed-{seed}" / "results.json"
    res = json.loads(done.read_text()) if done.exists() else None
    s = res["settings"] if res else bench_settings(bench_args or [], nfe, seed)
    log = None if res else lambda m: print(m, file=sys.stderr, flush=True)  # the bench's stage lines where it trains
    run = DigitsRun(s, seed, out, load_handle(s["model"], s["guidance"]), progress=False, log=log)
    rows = res["main"][str(nfe)] if res else run.table(nfe, "main", only={"indis"})
    d = polished_god(run, nfe, rows["god"]) if variant == "god-polish" else run.indis_row(nfe, "main", rows, variant)
    records = {"god": rows["god"], "indis": rows["indis"], VARIANTS[variant]: d}
    return {k: run.rows(r["spec"]) for k, r in records.items()}, run.real_all, records


def main(nfe: int, runs: list[tuple[Path, int]], dest: Path, variant: str = "plus-denoised",
         bench_args: list[str] | None = None) -> None:
    per_seed = [seed_rows(out, nfe, s, variant, bench_args) for out, s in runs]
    methods = ("god", "indis", VARIANTS[variant])
    seeds = [s for _, s in runs]
    feats = {k: [r[k]["features"] for r, _, _ in per_seed] for k in methods}
    mse = {k: [r[k]["mse"] for r, _, _ in per_seed] for k in methods}
    refs = [real for _, real, _ in per_seed]
    report = {"variant": variant, "nfe": nfe, "seeds": seeds, "per_seed": [], "pooled": {}}
    for i, s in enumerate(seeds):
        g, ind, dd = (mse[k][i] for k in methods)  # dd: the variant
        records = per_seed[i][2]
        rec = records[methods[2]]
        report["per_seed"].append({
            "seed": s, "mse": {k: float(mse[k][i].mean()) for k in methods},
            "fd": {k: records[k]["test"]["fd"] for k in methods},
            "d_over_indis": float(dd.mean() / ind.mean()), "d_over_indis_ci": ratio_ci(dd, ind),
            "d_over_god": float(dd.mean() / g.mean()), "d_over_god_ci": ratio_ci(dd, g),
            "indis_over_god": float(ind.mean() / g.mean()), "indis_over_god_ci": ratio_ci(ind, g),
            "d_view": per_prior_view(dd, g), "indis_view": per_prior_view(ind, g),
            "d_lr": rec["spec"]["train"]["lr"], "d_best_iter": rec["train"].get("best_iter"),
            "val": {"god": rec["train"].get("warm_best_val"), "variant": rec["train"]["best_val"]}})
    for name, stat, data, ref, prep in (("fd", weighted_fd, feats, refs, fd_reference),
                                        ("mse", weighted_mean, mse, [None] * len(seeds), None)):
        ci = paired_bootstrap_many(stat, data[methods[2]], {"indis": data["indis"], "god": data["god"]}, ref,
                                   replicates=200, prepare=prep)
        report["pooled"][name] = {f"{methods[2]} - {k}": v for k, v in ci.items()}
    print(json.dumps(report, indent=1))
    atomic_write_json(dest, report)


if __name__ == "__main__":
    torch.set_num_threads(1)
    argv = sys.argv[1:]
    bench_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    dest = Path(argv.pop(argv.index("--out") + 1)) if "--out" in argv else None
    variant = argv.pop(argv.index("--variant") + 1) if "--variant" in argv else "plus-denoised"
    if variant not in VARIANTS:
        raise SystemExit(f"--variant must be one of {VARIANTS}, got {variant!r}")
    argv = [a for a in argv if a not in ("--out", "--variant")]
    pairs = [(Path(a.rsplit(":", 1)[0]), int(a.rsplit(":", 1)[1])) for a in argv[1:]]
    main(int(argv[0]), pairs, dest or pairs[0][0] / f"{variant}-nfe{argv[0]}.json", variant, bench_args)
