"""The analytic speculative-decoding model (pyinfer.analysis.speculative) against the engine's measured
speculative runs on this CPU.

For each draft and k, in ONE process and one run (the machine may be shared, so only ratios measured
side by side are compared): plain batched greedy decoding of the prompts, then SpeculativeDecoder with
the same prompts. Measured: the acceptance rate a, the wall-clock speedup, and the step times the
formula needs -- the plain decode step (wall per target forward of the plain run), the draft step
(wall of the drafting phase per draft pass) and the verification step (the rest of the speculative run
per target pass: forward, sampling and acceptance together). Predicted:

    speedup = E(a, k) x t_plain_step / (k x t_draft_step + t_verify_step),   E = (1 - a^(k+1)) / (1 - a)

(pyinfer.analysis.speculative.speculative_speedup), written beside the measured speedup.

    python benchmarks/bench_spec_model.py [--ks 1,2,4] [--max-tokens 96]
    # writes benchmarks/results/spec_model-<machine>-<date>.json
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from pyinfer.analysis.speculative import expected_tokens_per_step, speculative_speedup
from pyinfer.api import load
from pyinfer.config import SamplingParams
from pyinfer.engine import Engine, EngineConfig
from pyinfer.engine.machine import machine_info
from pyinfer.engine.speculative import SpeculativeDecoder, truncated_draft

from common import write_dated  # benchmarks/ is sys.path[0] when run as a script

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ("Once upon a time", "The little dog", "Lily and Tom went", "One day, a big", "The sun was",
           "Tim had a red ball", "There was a cat", "Mom said")


class Timed:
    """Wraps a bound method: counts calls and sums their wall time."""

    def __init__(self, fn):
        self.fn, self.calls, self.seconds = fn, 0, 0.0

    def __call__(self, *a, **kw):
        t0 = time.perf_counter()
        try:
            return self.fn(*a, **kw)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1


def plain_run(model, prompts, params) -> tuple[float, int]:
    engine = Engine(model, config=EngineConfig(max_num_seqs=len(prompts)))
    for p, sp in zip(prompts, params):
        engine.add_request(p, sp)
    fwd = Timed(model.forward)
    model.forward = fwd
    try:
        t0 = time.perf_counter()
        engine.run_until_done()
        wall = time.perf_counter() - t0
    finally:
        del model.forward
    return wall, fwd.calls


def spec_run(target, draft, k, prompts, params) -> dict:
    dec = SpeculativeDecoder(target, draft, k)
    propose = Timed(dec._propose)
    dec._propose = propose
    tfwd = Timed(target.forward)
    target.forward = tfwd
    try:
        t0 = time.perf_counter()
        _, stats = dec.generate(prompts, params)
        wall = time.perf_counter() - t0
    finally:
        del target.forward
    return {"wall_s": wall, "stats": stats, "draft_passes": stats.draft_passes, "propose_s": propose.seconds,
            "target_passes": tfwd.calls, "target_forward_s": tfwd.seconds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT.parent / "shared" / "models" / "stories260K.bin"))
    ap.add_argument("--tokenizer", default=str(ROOT.parent / "shared" / "models" / "tok512.bin"))
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--ks", default="1,2,4")
    ap.add_argument("--draft-layers", default="2,3,4")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    gen = load(args.model, tokenizer=args.tokenizer)
    target, tok = gen.model, gen.tokenizer
    L = target.config.n_layers
    prompts = [tok.encode(p) for p in PROMPTS]
    params = [SamplingParams(temperature=0.0, max_tokens=args.max_tokens) for _ in prompts]
    result = {"benchmark": "speculative decoding: analytic model against the engine", "machine": machine_info(),
              "load_average_at_start": os.getloadavg(), "model": args.model, "prompts": len(prompts),
              "max_tokens": args.max_tokens, "temperature": 0.0,
              "formula": "speedup = E(a,k) x t_plain_step / (k x t_draft_step + t_verify_step)", "runs": []}
    print(f"target {args.model}: {L} layers; {len(prompts)} prompts x {args.max_tokens} tokens, batched, greedy")
    print(f"{'draft':<18}{'k':>3}{'accept':>8}{'E(a,k)':>8}{'tok/step':>9}{'plain ms':>9}{'draft ms':>9}"
          f"{'verify ms':>10}{'predicted':>10}{'measured':>9}{'pred/meas':>10}")
    for n in (int(x) for x in args.draft_layers.split(",")):
        draft = truncated_draft(target, n)
        for k in (int(x) for x in args.ks.split(",")):
            plain_s, plain_steps = plain_run(target, prompts, params)      # measured next to its spec run
            s = spec_run(target, draft, k, prompts, params)
            st = s["stats"]
            t_plain = plain_s / plain_steps
            t_draft = s["propose_s"] / max(1, st.draft_passes)
            t_verify = (s["wall_s"] - s["propose_s"]) / s["target_passes"]
            a = st.acceptance_rate
            predicted = speculative_speedup(a, k, t_plain, t_draft, t_verify)
            measured = plain_s / s["wall_s"]
            run = {"draft": f"first {n} of {L} layers", "k": k, "acceptance_rate": a,
                   "expected_tokens_per_step": expected_tokens_per_step(a, k),
                   "measured_tokens_per_step": st.mean_tokens_per_step, "plain_time_s": plain_s,
                   "plain_steps": plain_steps, "spec_time_s": s["wall_s"], "draft_passes": st.draft_passes,
                   "target_passes": s["target_passes"], "t_plain_step_s": t_plain, "t_draft_step_s": t_draft,
                   "t_verify_step_s": t_verify, "predicted_speedup": predicted, "measured_speedup": measured,
                   "predicted_over_measured": predicted / measured}
            result["runs"].append(run)
            print(f"{run['draft']:<18}{k:>3}{a:>8.3f}{run['expected_tokens_per_step']:>8.2f}"
                  f"{st.mean_tokens_per_step:>9.2f}{t_plain * 1e3:>9.3f}{t_draft * 1e3:>9.3f}{t_verify * 1e3:>10.3f}"
                  f"{predicted:>10.2f}{measured:>9.2f}{predicted / measured:>10.2f}")
            sys.stdout.flush()
    result["load_average_at_end"] = os.getloadavg()
    write_dated("spec_model", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
