"""`pyinfer fetch NAME`: download a known model and verify its sha256."""
from __future__ import annotations

import sys


def register(sub) -> None:
    fetch = sub.add_parser("fetch", help="download a known model and verify its sha256")
    fetch.add_argument("name", help="model name, e.g. stories260K")
    fetch.add_argument("--url", help="base URL to fetch from (default: its public home; env PYINFER_FETCH_URL)")
    fetch.add_argument("--cache-dir", help="where to keep models (default: env PYINFER_CACHE or ~/.cache/pyinfer)")
    fetch.set_defaults(handler=_fetch)


def _fetch(args: argparse.Namespace) -> int:
    from ..fetch import fetch_model

    def progress(name: str, done: int, total: int | None) -> None:
        of = f" of {total / 1e6:.2f} MB" if total else ""
        sys.stderr.write(f"\r{name}: {done / 1e6:.2f} MB{of}")
        if total and done >= total:
            sys.stderr.write("\n")

    fetched = fetch_model(args.name, base_url=args.url, cache_dir=args.cache_dir, progress=progress)
    print(f"model      {fetched.model_path}\ntokenizer  {fetched.tokenizer_path}\n(sha256 verified)")
    return 0
