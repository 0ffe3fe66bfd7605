"""Command-line entry point `indis` (also `python -m indis`).

Each subcommand lives in its own module that exposes `register(subparsers)`; the handler it sets with
`set_defaults(func=...)` takes the parsed args and returns an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from .errors import IndisError, InputError

# Modules that add subcommands. A module that is missing (optional extra) is skipped.
COMMAND_MODULES = [
    "indis.commands.demo",
    "indis.commands.sampling",
    "indis.commands.schedule",
    "indis.commands.teacher",
    "indis.commands.train",
    "indis.commands.evaluate",
    "indis.commands.bench",
    "indis.commands.export",
    "indis.zoo.cli",
]

# Optional packages -> what to install when one is missing.
OPTIONAL_PACKAGES = {"diffusers": "indis[diffusers]", "transformers": "indis[diffusers]", "accelerate": "indis[diffusers]",
                     "torchmetrics": "indis[metrics]", "lpips": "lpips"}


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error contract: a bad flag raises InputError (one line, exit 2) instead of printing
    the usage block and calling sys.exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        cmd = self.prog.removeprefix("indis").strip()
        raise InputError(f"{cmd + ': ' if cmd else ''}{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="indis", description="Instance-aware discretizations for few-step diffusion sampling.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == name or name.startswith(exc.name + ".")):
                continue
            raise
        mod.register(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        from .commands.common import check_numbers

        check_numbers(parser, args)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `indis ... | head`: the reader left; stop quietly, as other CLI tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except SystemExit as exc:  # --help / --version: argparse exits; main returns the code instead
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("indis: interrupted; work saved so far is kept and the job resumes when run again", file=sys.stderr)
        return 130
    except IndisError as exc:
        if debug:
            traceback.print_exc()
        print(f"indis: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except ImportError as exc:  # an optional dependency that a code path imports directly
        pkg = (getattr(exc, "name", None) or "").split(".")[0]
        if pkg not in OPTIONAL_PACKAGES or debug:
            if debug:
                raise
            print(f"indis: error: {type(exc).__name__}: {_one_line(exc)} (run with --debug for the traceback)", file=sys.stderr)
            return 2
        print(f"indis: error: this needs the optional package '{pkg}', which is not installed; fix: pip install '{OPTIONAL_PACKAGES[pkg]}'", file=sys.stderr)
        return 2
    except Exception as exc:  # unexpected: keep the one-line contract, offer --debug
        if debug:
            raise
        print(f"indis: error: {type(exc).__name__}: {_one_line(exc)} (run with --debug for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
