"""`--json [PATH]` for every command that reports: one JSON object (or list) on stdout when no path
is given, and then nothing else on stdout; written to PATH otherwise. NaN and infinities are null."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys

TO_STDOUT = "-"


def add_json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", nargs="?", const=TO_STDOUT, default=None, metavar="PATH",
                   help="write the report as JSON to PATH, or to stdout (and nothing else there) without one")


def json_safe(x):
    """NaN and infinity as null, tuples as lists, numpy scalars as Python numbers: strict JSON."""
    if hasattr(x, "item") and getattr(x, "shape", None) == ():     # numpy scalar
        x = x.item()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def json_to_stdout(args: argparse.Namespace) -> bool:
    return getattr(args, "json", None) == TO_STDOUT


@contextlib.contextmanager
def quiet_stdout_if_json(args: argparse.Namespace):
    """While the command computes, keep its human-readable prints off stdout when JSON goes there
    (they go to stderr instead, so progress is still visible)."""
    if not json_to_stdout(args):
        yield
        return
    real = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = real


def emit_json(args: argparse.Namespace, obj) -> None:
    """Write obj as strict JSON where --json asked; nothing when it was not given."""
    path = getattr(args, "json", None)
    if path is None:
        return
    text = json.dumps(json_safe(obj), indent=2, allow_nan=False)
    if path == TO_STDOUT:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    else:
        with open(path, "w") as f:
            f.write(text + "\n")
        print(f"wrote {path}", file=sys.stderr)
