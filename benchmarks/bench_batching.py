"""Why batching pays: decode tokens/s at batch 1..32, on a model whose weights dwarf the CPU caches
(stories110M, 0.44 GB of float32) and on one whose weights fit in them (toy, 13 MB).

A decode step reads every weight once whatever the batch size, so while that read dominates
(memory-bound), B sequences per step cost little more than one and tokens/s grows nearly B-fold.
When the weights sit in cache the step is cheap already and per-sequence work (attention over each
sequence's own KV cache, Python per op) takes over: batching helps much less.

Three measurements per preset, ratios taken within this process, each the best of a few rounds
run in turn over the batch sizes (so a burst of load from elsewhere does not favour one size):
  linears only the step's weight matmuls on B rows: the part that reads the weights
  model   Model.forward on B one-token decodes per step (the whole forward pass, greedy argmax)
  engine  the Engine serving B requests at max_num_seqs=B (scheduler, block tables, sampler included)
It also measures the machine's two roofs with numpy's matmul (weight-streaming GB/s, GEMM GFLOP/s):
a step of B tokens does B/2 FLOP per weight byte, so batching can speed decode up at most
min(B, 2 * GFLOP/s / (GB/s)) times; the table prints that bound beside each measurement.

    python benchmarks/bench_batching.py                      # writes benchmarks/results/batching-<date>.json
    python benchmarks/bench_batching.py --presets toy --batch-sizes 1,8 --steps 16
    python benchmarks/bench_batching.py --backend c --threads 1 --presets stories110M --quant int8-g32

The engine level also prints its figures in the form of llama.cpp's `llama-batched-bench -npp 16 -ntg 128
-npl 1,32` (S_TG t/s: generated tokens per second over all parallel sequences, prompts excluded), so
the two compare directly at the same prompt length, generated tokens and parallel sequence count.
The roofline bound uses this machine's measured ceilings (pyinfer.analysis.hardware.this_cpu: read
bandwidth and the peak for the format's arithmetic) with the format's bytes per weight.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from pyinfer.config import SamplingParams, get_preset
from pyinfer.engine import Engine, EngineConfig
from pyinfer.engine.machine import machine_info
from pyinfer.model import Model, linear
from pyinfer.ops import Ops
from pyinfer.quant import get_format, quantize_weights
from pyinfer.threads import set_threads
from pyinfer.weights import random_weights

from common import write_dated  # benchmarks/ is sys.path[0] when run as a script



def ceilings(repeats: int = 5) -> dict:
    """This machine's two roofs as numpy's matmul meets them, measured here: GB/s streaming a 256 MB
    float32 weight through a one-row matmul (a decode step's weight read), and GFLOP/s of a 1024^3
    matmul. Best of `repeats`."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16384, 4096), dtype=np.float32)                  # (N, K) 256 MB
    x, y = rng.standard_normal((1, 4096), dtype=np.float32), np.empty((1, 16384), np.float32)
    a = rng.standard_normal((1024, 1024), dtype=np.float32)
    c = np.empty_like(a)
    gemv, gemm = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(x, w.T, out=y)
        gemv.append(w.nbytes / (time.perf_counter() - t0) / 1e9)
        t0 = time.perf_counter()
        np.matmul(a, a, out=c)
        gemm.append(2 * 1024 ** 3 / (time.perf_counter() - t0) / 1e9)
    bw, flops = max(gemv), max(gemm)
    # A decode step of B tokens does 2 * params * B FLOP on 4 * params bytes of weights: B / 2 FLOP
    # per byte. Below the ridge B* = 2 * flops / bw the step is bound by the weight read (time flat
    # in B); above it by compute (time grows with B). So batching can give at most min(B, B*).
    return {"gemv_weight_gb_per_s": bw, "gemm_gflop_per_s": flops, "ridge_batch": 2 * flops / bw}


class DecodeBatch:
    """B sequences prefilled on their own cache, ready to be stepped one token each."""

    def __init__(self, model: Model, batch: int, prompt_len: int, max_steps: int, seed: int):
        c = model.config
        rng = np.random.default_rng(seed)
        self.model, self.batch, self.ids = model, batch, list(range(batch))
        self.cache = model.new_cache(num_blocks=batch * -(-(prompt_len + max_steps + 2) // 16), block_size=16)
        prompts = [rng.integers(3, c.vocab_size, prompt_len) for _ in self.ids]
        logits = model.forward(self.cache.prepare(self.ids, prompts), self.cache)      # (B, vocab)
        self.nxt = np.empty(batch, np.int64)
        model.ops.argmax(self.nxt, logits)
        self.step()                                                                  # warm-up

    def step(self) -> None:
        logits = self.model.forward(self.cache.prepare(self.ids, [self.nxt[i:i + 1] for i in self.ids]),
                                    self.cache)                                       # (B, vocab)
        self.model.ops.argmax(self.nxt, logits)

    def time_steps(self, steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        return time.perf_counter() - t0


def linear_rates(model: Model, batches: list[int], steps: int, rounds: int, prompt_len: int) -> list[dict]:
    """Only the step's weight matmuls (every layer's 7, then the output head) on B rows: the part
    of a decode step that reads the weights, without attention or the other per-token ops."""
    rng = np.random.default_rng(0)
    ws = [w for lw in model.weights.layers for w in (lw.wq, lw.wk, lw.wv, lw.wo, lw.w1, lw.w3, lw.w2)]
    ws.append(model.weights.output)
    times: dict[int, list[float]] = {b: [] for b in batches}
    bufs = {b: [(rng.standard_normal((b, w.shape[1]), dtype=np.float32), np.empty((b, w.shape[0]), np.float32))
                for w in ws] for b in batches}                                 # per weight: x (B, K), out (B, N)
    for _ in range(rounds):
        for b in batches:
            t0 = time.perf_counter()
            for _ in range(steps):
                for w, (x, out) in zip(ws, bufs[b]):
                    linear(model.ops, out, x, w)
            times[b].append(time.perf_counter() - t0)
    w_bytes = sum(w.nbytes for w in ws)             # QTensor.nbytes: codes and scales
    return [{"batch": b, "steps": steps, "rounds": rounds, "all_times_s": times[b],
             "tokens_per_s": b * steps / min(times[b]), "ms_per_step": 1e3 * min(times[b]) / steps,
             "weight_gb_per_s": w_bytes * steps / min(times[b]) / 1e9} for b in batches]


def model_decode_rates(model: Model, batches: list[int], steps: int, rounds: int, prompt_len: int) -> list[dict]:
    """Tokens/s of `steps` batched decode steps at each batch size, best of `rounds` rounds taken in
    turn (B = 1, 2, ..., then again), so a burst of load from elsewhere hits every size alike."""
    states = [DecodeBatch(model, b, prompt_len, steps * rounds + 1, seed=b) for b in batches]
    times: dict[int, list[float]] = {b: [] for b in batches}
    for _ in range(rounds):
        for st in states:
            times[st.batch].append(st.time_steps(steps))
    c, w_bytes = model.config, model.weights.nbytes()
    out = []
    for b in batches:
        dt = min(times[b])
        out.append({"batch": b, "steps": steps, "rounds": rounds, "time_s": dt, "all_times_s": times[b],
                    "tokens_per_s": b * steps / dt, "ms_per_step": 1e3 * dt / steps,
                    "weight_gb_per_s": w_bytes * steps / dt / 1e9,                 # weights read once per step
                    "gflop_per_s": 2 * c.n_params() * b * steps / dt / 1e9})       # 2 FLOP per weight per token
    return out


def engine_decode_rate(model: Model, batch: int, steps: int, prompt_len: int, seed: int) -> float:
    """Output tokens/s of the Engine serving `batch` requests of `steps` tokens at max_num_seqs=batch.
    Timed from the step after all prefills to the end, so it is the decode rate."""
    c = model.config
    rng = np.random.default_rng(seed)
    engine = Engine(model, config=EngineConfig(max_num_seqs=batch, max_num_batched_tokens=max(512, batch * prompt_len),
                                               num_blocks=batch * -(-(prompt_len + steps + 1) // 16)))
    for _ in range(batch):
        engine.add_request([1] + [int(t) for t in rng.integers(3, c.vocab_size, prompt_len - 1)],
                           SamplingParams(temperature=0.0, max_tokens=steps + 1, ignore_eos=True))
    engine.step()                                                     # all prefills, first tokens
    t0 = time.perf_counter()
    n = 0
    while engine.has_unfinished():
        engine.step()
        n += 1
    return (time.perf_counter() - t0) / n          # seconds per decode step


def engine_decode_rates(model: Model, batches: list[int], steps: int, rounds: int, prompt_len: int) -> list[dict]:
    """The engine's decode rate at each batch size, best of `rounds` runs taken in turn."""
    per_step: dict[int, list[float]] = {b: [] for b in batches}
    for _ in range(rounds):
        for b in batches:
            per_step[b].append(engine_decode_rate(model, b, steps, prompt_len, seed=b))
    return [{"batch": b, "steps": steps, "rounds": rounds, "all_s_per_step": per_step[b],
             "tokens_per_s": b / min(per_step[b]), "ms_per_step": 1e3 * min(per_step[b])} for b in batches]


def format_ridge(quant: str | None) -> dict:
    """This machine's measured ceilings (this-cpu, at the thread count in force) and the batch at which a
    step's weight matmuls reach its peak-to-bandwidth ratio for the format: 2 B FLOP per weight over
    bytes_per_weight bytes, so ridge_batch = (peak / bw) x bytes_per_weight / 2."""
    from pyinfer.analysis.hardware import this_cpu
    d = this_cpu()
    fmt = get_format(quant) if quant else None
    bpw = 4.0 if fmt is None else fmt.weight_bits / 8 + (4.0 / fmt.group_size if fmt.group_size else 0.0)
    key = "int8" if fmt is not None and fmt.act_int8 else "fp32"
    return {"device": d.full_name, "read_gb_per_s": d.memory_bw / 1e9, "peak_gflop_per_s": d.peak(key) / 1e9,
            "peak_key": key, "bytes_per_weight": bpw, "ridge_batch": d.peak(key) / d.memory_bw * bpw / 2}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="stories110M,toy")
    ap.add_argument("--batch-sizes", default="1,2,4,8,16,32")
    ap.add_argument("--steps", type=int, default=16, help="timed decode steps per batch size and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over all batch sizes; the best is kept")
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--quant", default=None, help="weight format (pyinfer.quant.FORMATS), e.g. int8-g32")
    ap.add_argument("--threads", default=None, help="threads for every pool: auto or a count (default: auto)")
    ap.add_argument("--engine-steps", type=int, default=128,
                    help="decode tokens per sequence at the engine level (llama-batched-bench's -ntg)")
    ap.add_argument("--no-engine", action="store_true", help="skip the engine-level measurement")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/batching-<cpu>-<date>.json)")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    setting = set_threads(args.threads or "auto")
    roof = ceilings()
    ridge = format_ridge(args.quant)
    print(f"threads {setting.count} ({setting.requested}); this-cpu: read {ridge['read_gb_per_s']:.1f} GB/s, "
          f"{ridge['peak_key']} peak {ridge['peak_gflop_per_s']:.1f} GFLOP/s, {ridge['bytes_per_weight']:.3f} "
          f"bytes/weight -> ridge_batch {ridge['ridge_batch']:.1f}")
    print(f"ceilings (numpy matmul, here): weight streaming {roof['gemv_weight_gb_per_s']:.1f} GB/s, "
          f"compute {roof['gemm_gflop_per_s']:.0f} GFLOP/s -> ridge at batch {roof['ridge_batch']:.1f} "
          "(a step of B tokens does B/2 FLOP per weight byte)")
    result = {"benchmark": "batched decode vs batch 1", "machine": machine_info(),
              "load_average_at_start": os.getloadavg(), "backend": args.backend, "quant": args.quant,
              "threads": setting.count, "ceilings": roof, "ridge": ridge, "presets": {}}
    for name in args.presets.split(","):
        config = get_preset(name)
        weights = random_weights(config, seed=0)
        model = Model(quantize_weights(weights, args.quant) if args.quant else weights, Ops(args.backend))
        entry = {"params": config.n_params(), "weight_mb": model.weights.nbytes() / 1e6}
        print(f"{name}: {config.n_params() / 1e6:.1f}M params, weights {model.weights.nbytes() / 1e6:.0f} MB "
              f"(best of {args.rounds} rounds)")
        print(f"  {'level':<7}{'batch':>6}{'tok/s':>10}{'ms/step':>10}{'x batch 1':>11}{'roofline x':>11}"
              f"{'weights GB/s':>14}")
        levels = [("linears", linear_rates, batches), ("model", model_decode_rates, batches)]
        if not args.no_engine:
            levels.append(("engine", engine_decode_rates, [batches[0], batches[-1]]))
        for level, fn, sizes in levels:
            steps = args.engine_steps if level == "engine" else args.steps
            rows = fn(model, sizes, steps, args.rounds, args.prompt_len)
            for r in rows:
                r["speedup_vs_batch1"] = r["tokens_per_s"] / rows[0]["tokens_per_s"]
                r["roofline_speedup_bound"] = min(r["batch"], ridge["ridge_batch"])
                r["bar_0_7"] = 0.7 * r["roofline_speedup_bound"]
                gbs = f"{r['weight_gb_per_s']:>14.1f}" if "weight_gb_per_s" in r else ""
                print(f"  {level:<7}{r['batch']:>6}{r['tokens_per_s']:>10.1f}{r['ms_per_step']:>10.2f}"
                      f"{r['speedup_vs_batch1']:>10.1f}x{r['roofline_speedup_bound']:>10.1f}x{gbs}")
            sys.stdout.flush()
            entry[level] = rows
        if "engine" in entry:
            print(f"  llama-batched-bench form (-npp {args.prompt_len} -ntg {args.engine_steps} -npl "
                  f"{','.join(str(r['batch']) for r in entry['engine'])}): " + ", ".join(
                      f"npl {r['batch']} S_TG {r['tokens_per_s']:.1f} t/s" for r in entry["engine"]) +
                  f"  [{args.backend}, {args.quant or 'float32'}, {setting.count} thread(s)]")
        result["presets"][name] = entry
    result["load_average_at_end"] = os.getloadavg()
    write_dated("batching", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
