"""`indis bench {solvers,digits}`: long measurements kept out of the timed test suite."""
from __future__ import annotations

import argparse
import importlib
import json

BENCHES = {"solvers": "indis.bench.solvers", "digits": "indis.bench.digits", "pipeline": "indis.bench.pipeline_run"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: solvers (overhead, memory), digits (the paper's table-1 protocol)")
    bs = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    s = bs.add_parser("solvers", help="solver overhead at NFE 5 and backprop memory NFE 3 vs 10 with checkpointing")
    s.add_argument("--json", action="store_true", help="print the result as one JSON document (for scripts)")
    s.add_argument("--batch", type=int, default=16)
    s.add_argument("--size", type=int, default=32)
    s.add_argument("--device", default="cpu")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=_solvers)
    try:
        mod = importlib.import_module(BENCHES["digits"])
    except ModuleNotFoundError:
        mod = None
    if mod is not None and hasattr(mod, "add_arguments"):
        d = bs.add_parser("digits", help="the paper's table-1 protocol on zoo:digits / zoo:digits-cond: every method at its "
                          "best solver, equal budgets, seeds and confidence intervals, oracle, ablations")
        mod.add_arguments(d)
        d.set_defaults(func=mod.main)
        im = bs.add_parser("images", help="`bench digits` on any shipped image model (e.g. --model zoo:glyphs): the same "
                           "protocol, FD in that model's own classifier features")
        mod.add_arguments(im, default_model="zoo:glyphs")
        im.set_defaults(func=mod.main)
    po = bs.add_parser("pool", help="one report from per-seed results of `bench digits` / `images` run apart (other "
                       "sessions, machines or NFEs): the same tables and paired intervals as one joint run")
    from ..bench import pool

    pool.add_arguments(po)
    po.set_defaults(func=pool.main)
    sc = bs.add_parser("scaling", help="where instance-awareness pays: INDIS vs GOD on exact Gaussian mixtures over "
                       "dimension, modes, condition and guidance, with the oracle, its reach and the diagnostic's prediction")
    from ..bench import scaling_cli

    scaling_cli.add_arguments(sc)
    sc.set_defaults(func=scaling_cli.main)
    pl = bs.add_parser("pipeline", help="Stable Diffusion 1.5, FLUX.1-dev or LTX-Video architectures at their real width "
                       "(random weights): teacher, INDIS training with and without checkpointing, per-instance sampling "
                       "and IndisScheduler in the stock pipeline, with peak memory and seconds")
    from ..bench import pipeline_run

    pipeline_run.add_arguments(pl)
    pl.set_defaults(func=pipeline_run.main)


def _solvers(args: argparse.Namespace) -> int:
    from ..bench.solvers import run

    res = run(args.batch, args.size, args.device, args.threads)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for o in res["overhead"]:
            print(f"{o['solver']:>9} NFE {o['nfe']}: sample {o['sample_s']*1e3:.1f} ms vs {o['nfe']} model calls {o['model_calls_s']*1e3:.1f} ms -> overhead x{o['overhead_ratio']:.3f}")
        m = res["memory"]
        tp = res["tree_posterior_mean"]
        print(f"tree toy posterior mean: {tp['points']} points x {tp['components']} components in {tp['seconds']:.2f} s")
        r = m["ratio_nfe10_over_nfe3"]
        print(f"backprop peak extra memory with checkpoint: NFE3 {m['peak_extra_mib_nfe3']:.1f} MiB, NFE10 "
              f"{m['peak_extra_mib_nfe10']:.1f} MiB, ratio {'n/a (too small to measure)' if r is None else f'{r:.3f}'}")
    return 0
