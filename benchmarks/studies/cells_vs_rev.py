"""How far do the committed cells of `indis bench scaling` move when recomputed by newer code? Compares each cell's
INDIS/GOD ratio (and INDIS-D's, and the diagnostic's prediction) in the working tree with the same cell's result.json
at git revision REV, for the cells whose result differs; prints one line per cell and how often the two ratios agree
within +-0.05 (the study's tolerance; compare with its seed-to-seed agreement).

    python benchmarks/studies/cells_vs_rev.py REV [--cells DIR]

Nothing is computed; both sides are read from committed files.
"""
from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np

CELLS = Path(__file__).resolve().parents[1] / "results" / "scaling" / "cells"


def at_rev(rev: str, root: Path, path: Path) -> dict | None:
    """The file `path` of the git work tree `root` as committed at `rev`, parsed (None where it did not exist)."""
    rel = path.resolve().relative_to(root)
    out = subprocess.run(["git", "show", f"{rev}:{rel.as_posix()}"], cwd=root, capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else None


def compare(rev: str, cells: Path) -> list[tuple[str, dict, dict]]:
    """(cell name, result at rev, result now) for every cell whose result.json changed since rev."""
    root = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cells, capture_output=True, text=True,
                               check=True).stdout.strip()).resolve()
    pairs = []
    for f in sorted(cells.glob("*/result.json")):
        old, new = at_rev(rev, root, f), json.loads(f.read_text())
        if old is not None and old != new:
            pairs.append((f.parent.name, old, new))
    return pairs


def _ci(r: dict) -> str:
    return "[%.3f, %.3f]" % tuple(r["ratio_ci"])


def _d(r: dict) -> float:
    return r.get("denoised_input", {}).get("ratio", float("nan"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rev", help="git revision holding the earlier results")
    p.add_argument("--cells", type=Path, default=CELLS, help="folder of cell folders (default: the committed ones)")
    a = p.parse_args()
    pairs = compare(a.rev, a.cells)
    if not pairs:
        raise SystemExit(f"no cell under {a.cells} changed since {a.rev}")
    gaps = []
    for name, old, new in pairs:
        print(f"{name:40s} INDIS/GOD {old['ratio']:.3f} {_ci(old)} -> {new['ratio']:.3f} {_ci(new)}   INDIS-D "
              f"{_d(old):.3f} -> {_d(new):.3f}   predicted {old['diagnosis']['predicted_ratio']:.3f} -> "
              f"{new['diagnosis']['predicted_ratio']:.3f}")
        gaps.append(abs(old["ratio"] - new["ratio"]))
    g = np.array(gaps)
    print(f"{len(g)} cells changed; INDIS/GOD within +-0.05 of the earlier value in {np.mean(g <= 0.05):.0%} "
          f"(median gap {np.median(g):.3g}, max {g.max():.3g})")


if __name__ == "__main__":
    main()
