"""`indis bench pool`: one report from per-seed results of `indis bench digits` / `images` that ran apart (other
sessions, machines or NFEs). Each seed's results.json carries its bootstrap evidence (`digits_report.seed_evidence`),
so seeds pooled here get the same tables and intervals as seeds run in one invocation."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import InputError

#: settings that may differ between the runs pooled (what ran, not how): everything else must match
FREE = {"seeds", "nfes", "oracle_nfes", "ablation_nfes", "ipndm_table", "ipndm_nfes", "teacher", "guidance_choice", "protocol"}
TABLES = ("main", "ipndm", "oracle", "ablations")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", help="per-seed results: seed-S/results.json files (or their seed-S folders) "
                   "written by `indis bench digits` / `images`")
    p.add_argument("--out", required=True, help="folder for the pooled results.json, results.md and figures")
    p.add_argument("--json", action="store_true", help="print the pooled results.json to stdout")


def load(paths: list[str]) -> list[dict[str, Any]]:
    """Read per-seed results, refusing files without settings and evidence (a pooled report or an older run)."""
    from ..io import load_json

    docs = []
    for given in paths:
        p = Path(given)
        p = p / "results.json" if p.is_dir() else p
        if not p.is_file():
            raise InputError(f"files: {given} is neither a per-seed results.json nor a folder holding one")
        d = load_json(p)
        if not isinstance(d, dict) or not {"seed", "settings", "evidence"} <= set(d):
            raise InputError(f"files: {p} is not a per-seed result with bootstrap evidence (seed-S/results.json of "
                             "`indis bench digits` / `images`; a pooled results.json or one written before the evidence "
                             "existed cannot be pooled: rerun that seed into its folder, everything cached is reused)")
        d["_path"] = str(p)
        docs.append(d)
    return docs


def check_compatible(docs: list[dict[str, Any]]) -> None:
    """Every file must come from the same protocol: model, guidance, sizes, budgets, loss, replicates."""
    ref = docs[0]["settings"]
    for d in docs[1:]:
        other = d["settings"]
        diff = sorted(k for k in set(ref) | set(other) if k not in FREE and ref.get(k) != other.get(k))
        if diff:
            raise InputError(f"files: {d['_path']} ran with other settings than {docs[0]['_path']} "
                             f"({', '.join(diff)}): their seeds cannot be pooled")


def merge(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per seed, ordered by seed: files of one seed that ran other NFEs are merged; the same seed and NFE in
    two files is an error (which one would count?)."""
    by_seed: dict[int, dict[str, Any]] = {}
    for d in docs:
        m = by_seed.get(d["seed"])
        if m is None:
            by_seed[d["seed"]] = json.loads(json.dumps(d))  # a copy: merging must not alter the loaded documents
            continue
        for t in TABLES:
            for n, v in d[t].items():
                if v is None:
                    continue
                if m[t].get(n) is not None:
                    raise InputError(f"files: seed {d['seed']} NFE {n} ({t}) is in both {m['_path']} and {d['_path']}; "
                                     "give one of them")
                m[t][n] = v
        for t, per_nfe in d["evidence"].items():
            m["evidence"].setdefault(t, {}).update(per_nfe)
        for k in ("timesteps", "grid"):  # the figures show the NFE nearest 3
            if d.get(k) and (not m.get(k) or abs(d[k].get("nfe", 3) - 3) < abs(m[k].get("nfe", 3) - 3)):
                m[k] = d[k]
        if "overhead" not in m and "overhead" in d:
            m["overhead"] = d["overhead"]
    return [by_seed[k] for k in sorted(by_seed)]


def settings_of(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """The first file's settings, with the seeds and NFEs that the pooled files hold."""
    s = dict(seeds[0]["settings"])
    s["seeds"] = [d["seed"] for d in seeds]
    s["nfes"] = sorted({int(n) for d in seeds for n, v in d["main"].items() if v is not None})
    s["oracle_nfes"] = sorted({int(n) for d in seeds for n in d["oracle"]})
    s["ablation_nfes"] = sorted({int(n) for d in seeds for n in d["ablations"]})
    return s


def main(args: argparse.Namespace) -> int:
    from ..commands.output import emit
    from .digits import report

    docs = load(args.files)
    check_compatible(docs)
    seeds = merge(docs)
    s = settings_of(seeds)
    if not s["nfes"]:
        raise InputError("files: none of them holds a finished main table")
    res = report(seeds, s, Path(args.out))
    emit(args, res, lambda: (Path(args.out) / "results.md").read_text(), indent=2)
    return 0
