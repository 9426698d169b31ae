"""The serving benchmarks behind docs/engine.md: `pyinfer bench serve` on a Poisson trace, and
`pyinfer bench sweep` over the batch cap (max_num_seqs) and over the arrival rate, each writing
JSON (and the sweeps a PNG of latency vs throughput) into benchmarks/results/.

    python benchmarks/bench_serve.py                      # stories260K from ../shared/models
    python benchmarks/bench_serve.py --preset toy --num-requests 64
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from pyinfer.commands import bench_serve
from pyinfer.engine.machine import machine_slug

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="pyinfer bench")
    bench_serve.register_bench(parser.add_subparsers(dest="bench", required=True))
    args = parser.parse_args(argv)
    print("$ pyinfer bench " + " ".join(argv))
    args.handler(args)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None, help="a preset instead of stories260K")
    ap.add_argument("--num-requests", default="100")
    args = ap.parse_args(argv)
    model = ["--preset", args.preset] if args.preset else [
        "--model", str(ROOT.parent / "shared" / "models" / "stories260K.bin"),
        "--tokenizer", str(ROOT.parent / "shared" / "models" / "tok512.bin")]
    name = args.preset or "stories260K"
    day = f"{machine_slug()}-{datetime.date.today().isoformat()}"
    trace = ["--num-requests", args.num_requests, "--prompt-len", "uniform:16:128", "--output-len", "uniform:16:128",
             "--seed", "0", "--ttft-target-ms", "500", "--tpot-target-ms", "50", "--no-progress"]
    run(["serve", *model, *trace, "--rate", "8", "--max-num-seqs", "32",
         "--json", str(RESULTS / f"serve-{name}-{day}.json")])
    for vary, fixed, values in (("max-num-seqs", ["--rate", "inf"], "1,2,4,8,16,32,64"),
                                ("rate", ["--max-num-seqs", "64"], "5,10,20,40,80")):
        stem = RESULTS / f"sweep-{vary}-{name}-{day}"
        run(["sweep", *model, *trace, *fixed, "--vary", vary, "--values", values,
             "--json", f"{stem}.json", "--png", f"{stem}.png"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
