"""What the commands print: a short summary for people by default, the JSON document with `--json` (for scripts).

One place for the formatting every command shares: aligned tables, numbers rounded to what their confidence interval
supports, the `--json` / `--no-progress` flags. Progress bars and warnings go to stderr; bars are shown only when
stderr is a terminal.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from typing import Any, Callable, Sequence


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as one JSON document on stdout (for scripts); "
                   "progress and warnings stay on stderr")


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars: on unless --no-progress, and only when stderr is a terminal."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def emit(args: argparse.Namespace, data: Any, text: str | Callable[[], str], indent: int | None = None) -> None:
    """Print `data` as JSON with --json, else the human summary `text`."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=indent))
    else:
        print(text() if callable(text) else text)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[bool] | None = None) -> str:
    """Rows aligned under their headers (text left-aligned, columns flagged in `right` right-aligned)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    right = right or [False] * len(headers)
    lines = ["  ".join(c.rjust(w) if rt else c.ljust(w) for c, w, rt in zip(r, widths, right)).rstrip() for r in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths)] + lines[1:])


def decimals_for(width: float, significant: int = 2) -> int:
    """Decimals that show `significant` digits of an interval's half-width (at least 0)."""
    if not math.isfinite(width) or width <= 0:
        return 3
    return max(0, significant - 1 - math.floor(math.log10(width)))


def fmt_ci(value: float, ci: Sequence[float], scale: float = 1.0, signed: bool = False) -> str:
    """"v [lo, hi]" rounded to what the interval supports, after multiplying by `scale`."""
    v, lo, hi = (scale * float(x) for x in (value, *ci))
    d = decimals_for((hi - lo) / 2)
    sign = "+" if signed else ""
    return f"{v:{sign}.{d}f} [{lo:{sign}.{d}f}, {hi:{sign}.{d}f}]"


def display_scale(values: Sequence[float]) -> tuple[float, str]:
    """A power of ten that brings the largest |value| into [1, 1000), and its label (e.g. 1e3 -> "x1e3")."""
    m = max((abs(v) for v in values if math.isfinite(v)), default=0.0)
    if m == 0 or 1 <= m < 1000:
        return 1.0, ""
    k = 3 * math.floor(math.log10(m) / 3)
    return 10.0 ** -k, f" x1e{-k}"


def fmt_float(v: float | None, digits: int = 4) -> str:
    """A number with `digits` significant digits (no interval to round by)."""
    return "-" if v is None or not math.isfinite(v) else f"{v:.{digits}g}"


def command_line(*parts: Any) -> str:
    """A shell command line with each argument quoted as needed."""
    return " ".join(shlex.quote(str(p)) for p in parts)


def model_argv(args: argparse.Namespace) -> list[str]:
    """The --model (and guidance) flags of this run, to repeat in a suggested next command."""
    out = ["--model", args.model]
    if getattr(args, "guidance", None) is not None:
        out += ["--guidance", f"{args.guidance:g}"]
    if getattr(args, "guidance_range", None) is not None:
        out += ["--guidance-range", str(args.guidance_range)]
    return out
