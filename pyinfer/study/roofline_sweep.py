"""`pyinfer study roofline`: where a step turns from memory- to compute-bound, measured on this machine.

Decode: B sequences, each holding ``context`` cached tokens, step one token each, B = 1, 2, 4, ...
Prefill: one sequence of n new tokens, n = 1, 2, 4, ... up to the model's context.
Each point is timed two ways where they differ: the step as production runs it (the C backend's fused
decode step: one call for every layer) and op by op through a timing wrapper (study/timing.py), which
splits the step into weight matmuls, attention and the rest, measured. FLOPs and bytes per class come
from the analytic accounting (pyinfer.analysis.estimate: the ops' own cost functions), so GFLOP/s and
GB/s are those counts over measured time.

The crossing: the smallest batch whose step time is at least twice the batch-1 step time, measured
(the first measured batch past it, and a log-interpolation between the two measured batches around it)
and predicted by the calibrated roofline for the same format and working set (bisection over integer
batches). Calibration of this run: compute efficiency from the best compute-bound prefill (its nominal
compute time over its measured time; else the measured peak), then the memory efficiency that makes the
calibrated batch-1 decode step equal the measured one: both measured in this run, under the same load,
neither from the batches around the crossing.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..analysis.estimate import uniform_step_cost
from ..analysis.hardware import Device
from ..analysis.roofline import Efficiency, predict
from ..model import Model
from .timing import OP_CLASSES, OpClassTimer, role_class


@dataclass
class Point:
    phase: str                  # decode or prefill
    batch: int                  # sequences in the step
    tokens: int                 # new tokens in the step
    context: int                # cached tokens per sequence before the step
    step_s: float               # best wall time of the step as production runs it (fused decode where native)
    opbyop_s: float             # best wall time op by op (timing wrapper on)
    class_s: dict               # weights / attention / rest / untimed seconds of that op-by-op step
    flops: dict                 # per class and "total" (analytic)
    bytes: dict                 # per class and "total" (analytic: weights, activations, KV)
    nominal_s: float = 0.0      # nominal roofline of the step on this machine
    calibrated_s: float = 0.0   # calibrated roofline
    fused: bool = False         # step_s is the fused decode step
    compute_fraction: float = 0.0   # nominal compute time / step_s: share of the measured peak reached

    def rates(self) -> dict:
        """GFLOP/s and GB/s per class (op-by-op times) and for the step (step_s)."""
        out = {}
        for c in OP_CLASSES:
            t = self.class_s.get(c, 0.0)
            out[c] = {"gflop_per_s": self.flops[c] / t / 1e9 if t > 0 else None,
                      "gb_per_s": self.bytes[c] / t / 1e9 if t > 0 else None}
        out["step"] = {"gflop_per_s": self.flops["total"] / self.step_s / 1e9,
                       "gb_per_s": self.bytes["total"] / self.step_s / 1e9}
        return out

    def to_dict(self) -> dict:
        return {**asdict(self), "rates": self.rates(), "intensity": self.flops["total"] / self.bytes["total"]}


def _class_costs(config, weights: str, batch: int, q_len: int, cached: int):
    step = uniform_step_cost(config, batch, q_len, cached, weights=weights,
                             phase="decode" if q_len == 1 else "prefill")
    flops = {c: 0 for c in OP_CLASSES}
    nbytes = {c: 0 for c in OP_CLASSES}
    for o in step.ops:
        c = role_class(o.role)
        flops[c] += o.cost.flops
        nbytes[c] += o.cost.bytes_total
    flops["total"], nbytes["total"] = sum(flops.values()), sum(nbytes.values())
    return step, flops, nbytes


def predicted_s(config, weights: str, batch: int, q_len: int, cached: int, device: Device,
                eff: Efficiency | None = None) -> float:
    """The roofline's time of one step (nominal without ``eff``), bandwidth for the step's working set."""
    step = uniform_step_cost(config, batch, q_len, cached, weights=weights,
                             phase="decode" if q_len == 1 else "prefill")
    return predict(step, device, eff).time_s


def opbyop_model(model: Model) -> tuple[Model, OpClassTimer]:
    """The same model and weights on a copy of its ops wrapped by a class timer, fused step off."""
    from ..ops import Ops
    timed = Model.__new__(Model)
    timed.__dict__.update(model.__dict__)
    timed.ops = Ops(model.ops.backend)
    timed.decode_plan = None
    return timed, OpClassTimer(timed.ops)


def measure_decode(model: Model, timed: Model, timer: OpClassTimer, batch: int, context: int, steps: int,
                   seed: int) -> tuple[float, float, dict]:
    """(best fused/production step s, best op-by-op step s, class seconds of that op-by-op step).
    The cache is filled with ``context`` slots per sequence without a forward (attention reads them
    all the same), so no prefill of B x context tokens is paid before the timing."""
    c = model.config
    rng = np.random.default_rng(seed)
    need = context + 2 * steps + 4
    cache = model.new_cache(num_blocks=batch * -(-need // 16), block_size=16)
    ids = list(range(batch))
    cache.prepare(ids, [np.zeros(context, np.int64)] * batch)

    def step(m) -> float:
        """One decode step's forward (the cache bookkeeping before it is not timed)."""
        meta = cache.prepare(ids, [rng.integers(3, c.vocab_size, 1) for _ in ids])
        timer.reset()
        t0 = time.perf_counter()
        m.forward(meta, cache)
        return time.perf_counter() - t0

    step(model)                                                           # warm-up
    fused = min(step(model) for _ in range(steps))
    best, classes = float("inf"), {}
    for _ in range(steps):
        dt = step(timed)
        if dt < best:
            best, classes = dt, {**timer.snapshot(), "untimed": dt - sum(timer.snapshot().values())}
    return fused, best, classes


def measure_prefill(timed: Model, timer: OpClassTimer, n: int, repeats: int, seed: int) -> tuple[float, dict]:
    c = timed.config
    rng = np.random.default_rng(seed)
    best, classes = float("inf"), {}
    for _ in range(repeats):
        cache = timed.new_cache(num_blocks=-(-n // 16), block_size=16)
        batch = cache.prepare([0], [rng.integers(3, c.vocab_size, n)])
        timer.reset()
        t0 = time.perf_counter()
        timed.forward(batch, cache)
        dt = time.perf_counter() - t0
        if dt < best:
            best, classes = dt, {**timer.snapshot(), "untimed": dt - sum(timer.snapshot().values())}
    return best, classes


def kv_bytes(config, tokens: int) -> int:
    return 2 * config.n_layers * config.kv_dim * 4 * tokens


def mem_available() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


@dataclass
class SweepResult:
    weights: str
    config: object = None       # the model's ModelConfig
    decode: list[Point] = field(default_factory=list)
    prefill: list[Point] = field(default_factory=list)
    efficiency: Efficiency | None = None
    calibration_how: str = ""
    stopped: str = ""


def crossing_measured(points: list[Point]) -> dict:
    """First measured batch with step >= 2 x batch 1, and the batch where log-interpolation puts 2 x."""
    t1 = points[0].step_s
    for lo, hi in zip(points, points[1:]):
        if hi.step_s >= 2 * t1:
            f = (2 * t1 - lo.step_s) / (hi.step_s - lo.step_s) if hi.step_s > lo.step_s else 1.0
            est = float(lo.batch * (hi.batch / lo.batch) ** min(max(f, 0.0), 1.0))
            return {"first_batch_at_2x": hi.batch, "interpolated_batch": est}
    return {"first_batch_at_2x": None, "interpolated_batch": None,
            "note": f"no measured batch up to {points[-1].batch} took twice batch 1's step"}


def crossing_predicted(config, weights: str, context: int, device: Device, eff: Efficiency | None,
                       limit: int = 1 << 16) -> int | None:
    """Smallest integer batch whose predicted step is >= 2 x the predicted batch-1 step (bisection)."""
    t1 = predicted_s(config, weights, 1, 1, context, device, eff)
    if predicted_s(config, weights, limit, 1, context, device, eff) < 2 * t1:
        return None
    lo, hi = 1, limit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if predicted_s(config, weights, mid, 1, context, device, eff) >= 2 * t1:
            hi = mid
        else:
            lo = mid
    return hi


def calibrate_from(sweep: SweepResult, config, device: Device, context: int) -> tuple[Efficiency, str]:
    """Compute efficiency: the best share of the peak a compute-bound prefill reached (nominal compute
    time over measured time; 1, the measured peak, when no prefill was compute-bound). Memory efficiency:
    the one that makes the calibrated batch-1 decode step equal its measured time (bisection; the step is
    a sum of max(memory, compute) per op, monotone in it). Both from this run, under the same load, and
    neither from the batches around the crossing."""
    e_c, how = 1.0, "compute at this-cpu's measured peak (no compute-bound prefill measured)"
    for p in sweep.prefill:
        rp = predict(uniform_step_cost(config, 1, p.tokens, 0, weights=sweep.weights, phase="prefill"), device)
        comp, mem = sum(o.compute_s for o in rp.ops), sum(o.memory_s for o in rp.ops)
        if comp > mem and (how.startswith("compute at") or comp / p.step_s > e_c):
            e_c, how = comp / p.step_s, f"compute efficiency from the {p.tokens}-token prefill (the best compute-bound one)"
    step1 = uniform_step_cost(config, 1, 1, context, weights=sweep.weights, phase="decode")
    target = sweep.decode[0].step_s
    lo, hi = 1e-4, 1e4                                   # e_m bounds; the predicted time falls as e_m grows
    if predict(step1, device, Efficiency(memory=hi, compute=e_c)).time_s >= target:
        return Efficiency(memory=hi, compute=e_c), (f"{how}; the batch-1 step is no slower than its compute "
                                                    "alone at that efficiency: memory never limits (e_m 1e4)")
    for _ in range(60):
        mid = (lo * hi) ** 0.5
        if predict(step1, device, Efficiency(memory=mid, compute=e_c)).time_s > target:
            lo = mid
        else:
            hi = mid
    return Efficiency(memory=hi, compute=e_c), f"{how}; memory efficiency fitting the batch-1 decode step"


def compute_fraction(p: Point, config, device: Device, weights: str) -> float:
    """Nominal compute time of a measured step over its measured time: the share of the peak it reached."""
    q = 1 if p.phase == "decode" else p.tokens
    r = predict(uniform_step_cost(config, p.batch, q, p.context, weights=weights, phase=p.phase), device)
    return sum(o.compute_s for o in r.ops) / p.step_s


def batches_to_try(max_batch: int, hard_limit: int) -> list[int]:
    out, b = [], 1
    while b <= hard_limit:
        out.append(b)
        b *= 2
    return out


def points_from_json(data: dict) -> SweepResult:
    """The measured points of a saved `study roofline` JSON, to predict and report again (no timing)."""
    from ..config import ModelConfig
    keys = [f.name for f in Point.__dataclass_fields__.values()]
    try:
        config = ModelConfig(**data["config"])
        pts = {ph: [Point(**{k: p[k] for k in keys if k in p}) for p in data[ph]] for ph in ("decode", "prefill")}
        return SweepResult(data["weights"], config, pts["decode"], pts["prefill"], stopped=data.get("stopped", ""))
    except (KeyError, TypeError) as e:
        raise ValueError(f"not a study roofline JSON: {e}") from None


def predict_points(res: SweepResult, device: Device) -> SweepResult:
    """Calibrate on the measured points, then the nominal and calibrated prediction of each."""
    c, weights = res.config, res.weights
    res.efficiency, res.calibration_how = calibrate_from(res, c, device, res.decode[0].context)
    for p in res.decode + res.prefill:
        q = 1 if p.phase == "decode" else p.tokens
        p.nominal_s = predicted_s(c, weights, p.batch, q, p.context, device)
        p.calibrated_s = predicted_s(c, weights, p.batch, q, p.context, device, res.efficiency)
        p.compute_fraction = compute_fraction(p, c, device, weights)
    return res


def run_sweep(model: Model, weights: str, device: Device, *, context: int = 16, steps: int = 3,
              max_batch: int = 256, hard_limit: int = 1024, prefill_max: int | None = None,
              prefill_repeats: int = 2, seed: int = 0, log=print) -> SweepResult:
    """The decode sweep (until B >= max_batch and the last doubling nearly doubled the step time, or the
    hard limit, the context or a quarter of free memory), then the prefill sweep."""
    c = model.config
    timed, timer = opbyop_model(model)
    res = SweepResult(weights, c)
    fused = model.decode_plan is not None
    for b in batches_to_try(max_batch, hard_limit):
        if context + 2 * steps + 4 > c.max_seq_len:
            raise ValueError(f"context {context} + {2 * steps + 4} timed tokens passes {c.name}'s context "
                             f"of {c.max_seq_len}")
        need = kv_bytes(c, b * (context + 2 * steps + 20)) + 8 * b * c.vocab_size
        if need > mem_available() / 4:
            res.stopped = f"batch {b} would need {need / 1e9:.1f} GB of KV cache and logits (over a quarter of free memory)"
            break
        f_s, o_s, cls = measure_decode(model, timed, timer, b, context, steps, seed + b)
        mid = context + 1 + steps
        _, flops, nbytes = _class_costs(c, weights, b, 1, mid)
        p = Point("decode", b, b, mid, f_s, o_s, cls, flops, nbytes, fused=fused)
        res.decode.append(p)
        log(f"  decode batch {b:>5}: step {1e3 * f_s:9.2f} ms{' (fused)' if fused else ''}, op by op "
            f"{1e3 * o_s:9.2f} ms")
        prev = res.decode[-2] if len(res.decode) > 1 else None
        if b >= max_batch and (prev is None or p.step_s >= 1.8 * prev.step_s or b >= hard_limit):
            res.stopped = (f"batch {b}: past --max-batch {max_batch} and the last doubling took "
                           f"{p.step_s / prev.step_s:.2f}x the time" if prev else f"batch {b} = --max-batch")
            break
    else:
        res.stopped = f"hard limit {hard_limit}"
    top = min(prefill_max or c.max_seq_len, c.max_seq_len)
    ns = [n for n in batches_to_try(top, top) if n <= top] + ([top] if top & (top - 1) else [])
    for n in ns:
        t, cls = measure_prefill(timed, timer, n, prefill_repeats if n < 256 else 1, seed + n)
        _, flops, nbytes = _class_costs(c, weights, 1, n, 0)
        res.prefill.append(Point("prefill", 1, n, 0, t, t, cls, flops, nbytes))
        log(f"  prefill {n:>5} tokens: {1e3 * t:9.2f} ms")
    predict_points(res, device)
    return res
