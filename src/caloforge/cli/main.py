"""Entry point of the ``caloforge`` command: a thin layer over the library.

Each sub-command lives in its own module of this package exposing
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking
the parsed arguments and returning an exit code. Heavy imports (torch) happen inside
those callables so that ``caloforge --help`` and ``caloforge info`` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from .._version import __version__
from ..errors import CaloforgeError

__all__ = ["main", "build_parser", "COMMANDS"]

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS = ("run", "simulate", "info", "train", "generate", "evaluate", "bench", "plot", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caloforge",
        description="Fast calorimeter shower simulation with latent generative models.",
    )
    parser.add_argument("--version", action="version", version=f"caloforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if importlib.util.find_spec(f"{__package__}.{name}_cmd") is None:
            continue  # sub-command not built yet
        importlib.import_module(f"{__package__}.{name}_cmd").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..threads import passive_openmp_waits

    passive_openmp_waits()  # before any command imports torch
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CaloforgeError as exc:
        print(f"caloforge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"caloforge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        # SIGINT, or SIGINT/SIGTERM during a write (caloforge.errors.Interrupted, whose
        # temporary file is already removed): one line, the shell's exit status
        print(f"caloforge {args.command}: {str(exc) or 'interrupted'}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 130))
    except BrokenPipeError:
        # the reader went away (`caloforge info FILE | head`): stop quietly, and point
        # stdout at /dev/null so that the interpreter's final flush does not complain
        _silence_stdout()
        return 141


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # stdout without a file descriptor (captured in tests)
