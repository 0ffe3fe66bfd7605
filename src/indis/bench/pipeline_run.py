"""`indis bench pipeline` driver: every configuration in a fresh process (`python -m indis.bench.pipeline_run --child
JSON`), so that the peak memory it reports is its own; the results pooled into one JSON document with the
summary figures (phi_share, memory_ratio, throughput_ratio), the scaling fits and the full-size estimates."""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from . import pipeline as bp

NFES = (3, 5, 7)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", required=True, choices=sorted(bp.ARCHS), help="sd15 (UNet ~860M), flux (FLUX.1-dev, 12B at "
                   "full depth), ltx (LTX-Video, 2B at full depth)")
    p.add_argument("--blocks", type=int, default=1, help="flux/ltx: transformer blocks K built at full width (FLUX: K "
                   "double + 2K single blocks); timings are also taken at 2K to fit the per-block cost (default 1)")
    p.add_argument("--size", choices=["small", "full"], default=None, help="latent size of the measurements: the model's "
                   "real one (SD 512x512, FLUX 1024x1024, LTX 768x512x121 frames) or a stated smaller one (256x256, "
                   "128x128, 128x128x9); default: full on CUDA, small on CPU (model calls are timed at both)")
    p.add_argument("--height", type=int, default=None, help="override the measurement height in pixels")
    p.add_argument("--width", type=int, default=None, help="override the measurement width in pixels")
    p.add_argument("--frames", type=int, default=None, help="ltx: override the number of frames")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=sorted(bp.DTYPES), default="float32", help="the model's dtype (times, shift, scale, "
                   "the solver and phi stay in float32)")
    p.add_argument("--jobs", nargs="*", default=None, help="subset of: calls teacher train sampling scheduler (default all)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON document")
    p.add_argument("--out", default=None, help="also write the JSON here")


def _size(arch: str, args: argparse.Namespace, which: str) -> tuple[int, int, int | None]:
    h, w, f = bp.ARCHS[arch][which]
    return (args.height or h, args.width or w, (args.frames or f) if f is not None else None)


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The child jobs of one run: (kind, size, blocks, nfe, checkpoint)."""
    arch, cuda = args.arch, str(args.device).startswith("cuda")
    which = args.size or ("full" if cuda else "small")
    size = _size(arch, args, which)
    deep = bool(bp.ARCHS[arch]["depth"])
    kinds = args.jobs or ["calls", "teacher", "train", "sampling", "scheduler"]
    unknown = set(kinds) - {"calls", "teacher", "train", "sampling", "scheduler"}
    if unknown:
        raise InputError(f"--jobs: unknown job(s) {sorted(unknown)}; choose from calls teacher train sampling scheduler")
    base = {"arch": arch, "device": args.device, "dtype": args.dtype, "threads": args.threads,
            "repeats": 2 if cuda else 1}  # timed repetitions after the warm-up (a CPU minute each at full size)
    jobs = []
    if "calls" in kinds:
        for s in ("small", "full"):
            for k in ([args.blocks, 2 * args.blocks] if deep else [None]):
                jobs.append({**base, "kind": "calls", "size": _size(arch, args, s), "size_name": s, "blocks": k})
    blocks = args.blocks if deep else None
    for kind in ("teacher", "sampling", "scheduler"):
        if kind in kinds:
            jobs.append({**base, "kind": kind, "size": size, "size_name": which, "blocks": blocks, "nfe": 5})
    if "train" in kinds:
        for nfe in NFES:
            for ck in (True, False):
                jobs.append({**base, "kind": "train", "size": size, "size_name": which, "blocks": blocks, "nfe": nfe,
                             "checkpoint": ck})
    return jobs


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def child(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job in this (fresh) process and return its figures with the process's peak memory."""
    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    dev, dtype = job["device"], bp.DTYPES[job["dtype"]]
    cuda = str(dev).startswith("cuda")
    t0 = time.perf_counter()
    handle, pipe = bp.build_handle(job["arch"], job["blocks"], tuple(job["size"]), dtype, dev)
    built = {"build_s": time.perf_counter() - t0, "latent_shape": list(handle.data_shape),
             "params": sum(p.numel() for p in bp.pipe_model(pipe).parameters()), "rss_after_build": _rss()}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    kind, nfe = job["kind"], job.get("nfe", 5)
    if kind == "calls":
        res = bp.time_calls(handle, 1, dev, repeats=job.get("repeats", 2))
    elif kind == "teacher":
        with tempfile.TemporaryDirectory(prefix="indis-bench-") as tmp:
            res = bp.time_teacher(handle, 1, 4, dev, Path(tmp), repeats=job.get("repeats", 2) + 1)
    elif kind == "train":
        res = bp.time_train(handle, nfe, bool(job["checkpoint"]), 1, dev, repeats=job.get("repeats", 2))
    elif kind == "sampling":
        res = bp.time_sampling(handle, nfe, 1, dev)
    else:
        res = bp.time_scheduler(job["arch"], handle, pipe, nfe, tuple(job["size"]), dev)
    peak = torch.cuda.max_memory_allocated() if cuda else _rss()
    return {**job, **built, **res, "peak_memory_bytes": int(peak),
            "peak_over_build_bytes": int(peak - (0 if cuda else built["rss_after_build"]))}


def _spawn(job: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "indis.bench.pipeline_run", "--child", json.dumps(job)]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return {**job, "error": tail[:500], "wall_s": round(time.time() - t0, 1)}
    return {**json.loads(r.stdout.strip().splitlines()[-1]), "wall_s": round(time.time() - t0, 1)}


def _tokens(arch: str, latent: list[int]) -> int:
    if arch == "flux":
        return latent[1] * latent[2] // 4 + bp.ARCHS[arch]["text"][0]
    if arch == "ltx":
        return latent[1] * latent[2] * latent[3] + bp.ARCHS[arch]["text"][0]
    return latent[1] * latent[2]  # SD: latent positions (the UNet's cost grows with them)


def scaling(arch: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-block and per-size scaling of the model call, and the full-depth estimate at each measured size."""
    out: dict[str, Any] = {}
    for s in ("small", "full"):
        pts = sorted((r["blocks"] or 0, r["call_s"], r["bare_call_s"], r["latent_shape"]) for r in calls if r["size_name"] == s)
        if not pts:
            continue
        row: dict[str, Any] = {"latent_shape": pts[0][3], "tokens": _tokens(arch, pts[0][3]),
                               "measured": [{"blocks": b or None, "call_s": c, "bare_call_s": bc} for b, c, bc, _ in pts]}
        if len(pts) == 2 and bp.ARCHS[arch]["depth"]:
            (k1, t1, _, _), (k2, t2, _, _) = pts
            per = (t2 - t1) / (k2 - k1)
            full = bp.ARCHS[arch]["full_blocks"]
            row.update(per_block_s=per, outside_blocks_s=t1 - k1 * per, full_depth_blocks=full,
                       full_depth_call_s_estimate=t1 + (full - k1) * per)
        out[s] = row
    if "small" in out and "full" in out:
        a, b = out["small"], out["full"]
        t_a, t_b = a["measured"][0]["call_s"], b["measured"][0]["call_s"]
        out["size_exponent"] = math.log(t_b / t_a) / math.log(b["tokens"] / a["tokens"])  # call time ~ tokens^exponent
    return out


def summarize(arch: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures the issue names, from the child results (None where a job failed or was not run)."""
    ok = [r for r in results if "error" not in r]
    train = {(r["nfe"], r["checkpoint"]): r for r in ok if r["kind"] == "train"}
    one = {k: next((r for r in ok if r["kind"] == k), None) for k in ("teacher", "sampling", "scheduler")}

    def ratio(key: str, ck: bool) -> float | None:
        a, b = train.get((7, ck)), train.get((3, ck))
        return a[key] / b[key] if a and b and b[key] > 0 else None

    calls = [r for r in ok if r["kind"] == "calls"]
    return {
        "memory_ratio": ratio("peak_memory_bytes", True), "memory_ratio_no_checkpoint": ratio("peak_memory_bytes", False),
        "memory_ratio_over_model": ratio("peak_over_build_bytes", True),
        "memory_ratio_over_model_no_checkpoint": ratio("peak_over_build_bytes", False),
        "phi_share": one["sampling"]["phi_share"] if one["sampling"] else None,
        "throughput_ratio": one["teacher"]["throughput_ratio"] if one["teacher"] else None,
        "seconds_per_teacher_sample": one["teacher"]["teacher_s_per_sample"] if one["teacher"] else None,
        "seconds_per_train_step": {f"nfe{n}{'_checkpoint' if ck else ''}": r["train_step_s"] for (n, ck), r in sorted(train.items())},
        "train_peak_memory_gib": {f"nfe{n}{'_checkpoint' if ck else ''}": r["peak_memory_bytes"] / 2**30
                                  for (n, ck), r in sorted(train.items())},
        "phi_grads_finite": all(r["phi_grads_finite"] for r in train.values()) if train else None,
        "scheduler_rel_diff": one["scheduler"]["rel_diff_vs_sample_pipeline"] if one["scheduler"] else None,
        "scaling": scaling(arch, calls) if calls else None,
    }


def report(res: dict[str, Any]) -> str:
    """The human summary: one line per job, then the headline figures."""
    from ..commands.output import fmt_float, table

    rows = []
    for r in res["jobs"]:
        what = r["kind"] + (f" NFE {r['nfe']}" if r["kind"] == "train" else "") + (" +ckpt" if r.get("checkpoint") else "")
        secs = next((r[k] for k in ("call_s", "teacher_s_per_sample", "train_step_s", "sample_s", "pipeline_s") if k in r), None)
        rows.append([what, r["size_name"], r.get("blocks") or "-", "x".join(map(str, r.get("latent_shape", []))),
                     fmt_float(secs, 3), "-" if "error" in r else f"{r['peak_memory_bytes'] / 2**30:.2f}",
                     r.get("error", "")[:60]])
    s = res["summary"]
    lines = [f"indis bench pipeline --arch {res['arch']} ({res['device']}, {res['dtype']}): {len(res['jobs'])} jobs, "
             f"{res['wall_s']:.0f} s", "",
             table(["job", "size", "blocks", "latent", "seconds", "peak GiB", "error"], rows, [False] * 4 + [True, True, False]),
             "", f"memory NFE 7 / NFE 3: {fmt_float(s['memory_ratio'], 3)} with checkpointing, "
             f"{fmt_float(s['memory_ratio_no_checkpoint'], 3)} without (process peak)",
             f"phi's share of sampling time: {fmt_float(s['phi_share'], 3)}; teacher throughput / bare model calls: "
             f"{fmt_float(s['throughput_ratio'], 3)}"]
    full = ((s.get("scaling") or {}).get("full") or {}).get("full_depth_call_s_estimate")
    if full is not None:
        lines.append(f"estimated model call at full depth and full size: {full:.1f} s")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from ..commands.output import emit
    from ..io import atomic_write_json

    jobs = plan(args)
    t0, results = time.time(), []
    for k, job in enumerate(jobs):
        print(f"[{k + 1}/{len(jobs)}] {job['kind']} {job.get('nfe', '')} {'checkpoint' if job.get('checkpoint') else ''} "
              f"size {job['size_name']} blocks {job.get('blocks')}", file=sys.stderr, flush=True)
        results.append(_spawn(job))
    res = {"benchmark": "pipeline", "arch": args.arch, "device": args.device, "dtype": args.dtype,
           "params_full_model": bp.PARAMS[args.arch], "torch": torch.__version__, "jobs": results,
           "summary": summarize(args.arch, results), "wall_s": round(time.time() - t0, 1)}
    if args.out:
        atomic_write_json(args.out, res)
    emit(args, res, lambda: report(res), indent=1)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
