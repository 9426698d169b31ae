"""Speculative decoding on the real stories260K model: acceptance rate, mean tokens per
verification step beside the analytic (1 - a^(k+1)) / (1 - a), target decode steps saved, and
wall-clock time against plain batched decoding of the same prompts (measured in this process).

Drafts are free ones cut from the target itself: its first n layers (early exit), and the target
with one layer skipped (self-speculative decoding). Greedy outputs are checked to equal plain
greedy decoding token for token. At temperature > 0 the output follows the target's
distribution (tests/test_speculative.py checks it); the rates here are measured, not asserted.

    python benchmarks/bench_speculative.py          # writes benchmarks/results/speculative-<date>.json
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from pyinfer.api import load
from pyinfer.config import SamplingParams
from pyinfer.engine import Engine, EngineConfig
from pyinfer.engine.machine import machine_info
from pyinfer.engine.speculative import SpeculativeDecoder, layer_draft, truncated_draft

from common import write_dated  # benchmarks/ is sys.path[0] when run as a script

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ("Once upon a time", "The little dog", "Lily and Tom went", "One day, a big", "The sun was",
           "Tim had a red ball", "There was a cat", "Mom said")


def plain(model, prompts, params) -> tuple[list[list[int]], float]:
    engine = Engine(model, config=EngineConfig(max_num_seqs=len(prompts)))
    ids = [engine.add_request(p, sp) for p, sp in zip(prompts, params)]
    t0 = time.perf_counter()
    outs = {o.request_id: o.output_ids for o in engine.run_until_done()}
    return [outs[i] for i in ids], time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT.parent / "shared" / "models" / "stories260K.bin"))
    ap.add_argument("--tokenizer", default=str(ROOT.parent / "shared" / "models" / "tok512.bin"))
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--ks", default="1,2,4,6")
    ap.add_argument("--temperatures", default="0,1")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    gen = load(args.model, tokenizer=args.tokenizer)
    target, tok = gen.model, gen.tokenizer
    L = target.config.n_layers
    prompts = [tok.encode(p) for p in PROMPTS]
    drafts = [(f"first {n} of {L} layers", truncated_draft(target, n), n / L) for n in (2, 3, 4)]
    drafts.append((f"layers 0,1,2,4 of {L} (skip 3)", layer_draft(target, [0, 1, 2, 4]), 4 / L))
    result = {"benchmark": "speculative decoding", "machine": machine_info(), "load_average_at_start": os.getloadavg(),
              "model": args.model, "prompts": len(prompts), "max_tokens": args.max_tokens, "runs": []}
    print(f"target {args.model}: {L} layers; {len(prompts)} prompts x {args.max_tokens} tokens, batched")
    print(f"{'T':>3} {'draft':<28}{'k':>3}{'accept':>8}{'tok/step':>9}{'analytic':>9}{'steps/tok':>10}"
          f"{'saved':>7}{'wall x':>8}  greedy==")
    for temp in (float(t) for t in args.temperatures.split(",")):
        params = [SamplingParams(temperature=temp, seed=i, max_tokens=args.max_tokens) for i in range(len(prompts))]
        want, base_s = plain(target, prompts, params)
        for name, draft, cost in drafts:
            for k in (int(x) for x in args.ks.split(",")):
                dec = SpeculativeDecoder(target, draft, k)
                t0 = time.perf_counter()
                outs, stats = dec.generate(prompts, params)
                dt = time.perf_counter() - t0
                d = stats.to_dict()
                same = [o.output_ids for o in outs] == want if temp == 0 else None
                run = {"temperature": temp, "draft": name, "draft_cost_fraction_of_layers": cost, "k": k,
                       "time_s": dt, "plain_time_s": base_s, "wall_speedup": base_s / dt,
                       "greedy_equal_to_plain": same, **d}
                result["runs"].append(run)
                print(f"{temp:>3g} {name:<28}{k:>3}{d['acceptance_rate']:>8.3f}{d['mean_tokens_per_step']:>9.2f}"
                      f"{d['expected_tokens_per_step']:>9.2f}{d['target_steps_per_token']:>10.3f}"
                      f"{100 * d['decode_step_savings']:>6.0f}%{base_s / dt:>7.2f}x  {'' if same is None else same}")
                sys.stdout.flush()
    result["load_average_at_end"] = os.getloadavg()
    write_dated("speculative", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
