"""The `pyinfer` command line: each command group lives in pyinfer/commands/<name>.py."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__

COMMANDS = ("run", "serve", "fetch", "quantize", "bench", "roofline", "cost", "study")   # modules under pyinfer.commands, in help order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyinfer", description="A small, fast and honest LLM inference core.")
    parser.add_argument("--version", action="version", version=f"pyinfer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"pyinfer.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Errors a user can fix print one line (exit 2); Ctrl-C prints one line and
    exits 130 (128 + SIGINT, as shells do); output piped into a reader that stops early (`| head`)
    ends quietly with 141 (128 + SIGPIPE)."""
    args = None
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except KeyboardInterrupt:
        if os.environ.get("PYINFER_DEBUG"):
            raise
        print(f"\npyinfer{' ' + args.command if args else ''}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away: point stdout at devnull so the interpreter's final flush is silent
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141                                        # 128 + SIGPIPE, what a tool killed by it reports
    except (ValueError, OSError, RuntimeError, MemoryError) as e:
        if os.environ.get("PYINFER_DEBUG"):
            raise
        message = str(e) or type(e).__name__
        print(f"pyinfer {args.command if args else ''}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
