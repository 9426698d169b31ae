"""`pyinfer run` on stories260K (greedy, 256 steps, text streamed, 1 thread) against llama2.c's run.c on
the same model and prompt, interleaved, median of --rounds each (issue 13, point 6). run.c is not in
this repository: build it yourself and pass its path.

    gcc -Ofast -march=native -fopenmp run.c -o /tmp/run -lm      # from karpathy/llama2.c
    python benchmarks/bench_run_vs_runc.py --runc /tmp/run

pyinfer's figure is its report's decode tokens/s (JSON); run.c's is its own "achieved tok/s" (it
times from its second forward to the end, prompt positions included, with a millisecond clock).
Both stream text to a pipe; the texts must be equal.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_dated  # noqa: E402

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runc", required=True, help="path of a built llama2.c run binary")
    ap.add_argument("--model", default=str(MODELS / "stories260K.bin"))
    ap.add_argument("--tokenizer", default=str(MODELS / "tok512.bin"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    prompt = "Once upon a time"
    ours, theirs, texts = [], [], set()
    for _ in range(args.rounds):
        p = subprocess.run([sys.executable, "-m", "pyinfer.cli", "run", "--model", args.model, "--tokenizer",
                            args.tokenizer, "--temperature", "0", "--steps", "256", "--threads", "1",
                            "--prompt", prompt, "--no-ceilings", "--json"],
                           capture_output=True, text=True, env=env, check=True)
        d = json.loads(p.stdout)
        ours.append(d["decode_tokens_per_s"])
        texts.add(("pyinfer", p.stderr.split("\n---\n")[0].strip()))
        r = subprocess.run([args.runc, args.model, "-z", args.tokenizer, "-t", "0", "-n", "256", "-i", prompt],
                           capture_output=True, text=True, env=env, check=True)
        theirs.append(float(re.search(r"achieved tok/s: ([0-9.]+)", r.stdout + r.stderr)[1]))
        texts.add(("run.c", r.stdout.strip()))
        print(f"pyinfer {ours[-1]:9.0f} tok/s   run.c {theirs[-1]:9.0f} tok/s", flush=True)
    same = len({t for _, t in texts}) == 1
    result = {"pyinfer_decode_tokens_per_s": ours, "runc_achieved_tokens_per_s": theirs,
              "pyinfer_median": statistics.median(ours), "runc_median": statistics.median(theirs),
              "ratio": statistics.median(ours) / statistics.median(theirs), "same_text": same,
              "busy_warnings": d.get("busy_warning")}
    print(f"median: pyinfer {result['pyinfer_median']:.0f}, run.c {result['runc_median']:.0f} tok/s "
          f"({result['ratio']:.2f}x); same text: {same}")
    write_dated("run-vs-runc", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
