"""The `pyinfer` command line: each command group lives in pyinfer/commands/<name>.py."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__

COMMANDS = ("run", "fetch", "quantize", "bench", "roofline", "cost")   # modules under pyinfer.commands, in help order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyinfer", description="A small, fast and honest LLM inference core.")
    parser.add_argument("--version", action="version", version=f"pyinfer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"pyinfer.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, OSError, RuntimeError, MemoryError) as e:
        if os.environ.get("PYINFER_DEBUG"):
            raise
        print(f"pyinfer {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
