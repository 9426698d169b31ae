"""Predicted against measured: time decode steps here, compare with the roofline, fit efficiency factors.

The calibrated model of one step is the roofline with factors per (device, backend, weights):

    t = sum over ops of max(B_i / (e_m W), F_i / (e_c P_i)) + n_calls x overhead

(e_m: fraction of the bandwidth reached, e_c: of the peak, overhead: fixed time per op call, e.g.
Python dispatch). W is the bandwidth the step's working set gets (the device's measured curve), and
e_m has two values: one for steps whose working set streams from a cache, one for steps that stream
from DRAM (a kernel that reaches all of the L3's bandwidth may reach only 70% of DRAM's: fewer
loads in flight per byte once the integer arithmetic per byte grows). The fit minimises the squared
relative error over the runs: with a = 1/e_m (per level) and b = 1/e_c the model is linear (a
non-negative least-squares problem) once each op's side of the max is fixed, and the sides depend
only on b / a, so each interval of b / a between the ops' m / c breakpoints is solved (per level)
and the solution with the least true (max-model) loss is kept: no local minimum from a poor guess.
"""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from .estimate import step_cost
from .hardware import Device
from .roofline import Efficiency, in_cache, predict


@dataclass(frozen=True)
class Run:
    """One measured decode run and its nominal roofline terms, per step."""
    device: str
    backend: str
    weights: str                # float32 or a pyinfer.quant format
    preset: str
    context: int                # tokens cached before the first timed step
    steps: int
    measured_s: float           # best (least) time of one decode step, as microbenchmarks take the best
    memory_s: tuple[float, ...]     # per op role: bytes / bandwidth (nominal)
    compute_s: tuple[float, ...]    # per op role: FLOPs / peak (nominal)
    calls: int                  # op calls per step
    cached: float = 0.0         # share of the step's bytes served from a cache: 0 or 1 as the bandwidth
                                # curve says when measured, the fitted band's value after apply_band
    working_set: float = 0.0    # bytes the step re-reads (weights, KV, activations)

    @property
    def key(self) -> str:
        return f"{self.device}/{self.backend}/{self.weights}"

    @property
    def nominal_s(self) -> float:
        return sum(max(m, c) for m, c in zip(self.memory_s, self.compute_s))

    def predicted_s(self, eff: Efficiency) -> float:
        f = eff.memory_time_factor(self.cached)
        return sum(max(m * f, c / eff.compute) for m, c in zip(self.memory_s, self.compute_s)) \
            + self.calls * eff.overhead_s


def roofline_terms(config: ModelConfig, device: Device, weights: str, context: int) -> tuple:
    """(memory_s per role, compute_s per role, calls, cached, working set bytes) of one batch-1 decode
    step at ``context``."""
    quant = None if weights == "float32" else weights
    step = step_cost(config, [1], [context], weights=quant or "float32")
    r = predict(step, device)
    roles = r.by_role()
    return (tuple(p.memory_s for p in roles), tuple(p.compute_s for p in roles), len(step.ops),
            float(in_cache(device, r.bandwidth)), float(r.cost.bytes_total))


def measure_decode(preset: str, backend: str, weights: str, device: Device, contexts=(32,), steps: int = 8,
                   seed: int = 0, base_weights=None) -> list[Run]:
    """Time ``steps`` batch-1 decode forwards of a preset with random weights after a prefill of each
    context; the fastest step is the measurement (on a shared machine the others wait for a core;
    the microbenchmarks behind the roofline take their best too). ``base_weights``: float32
    ModelWeights to reuse (or already quantized to ``weights``)."""
    from ..config import get_preset
    from ..model import Model
    from ..ops import Ops
    from ..quant import quantize_weights
    from ..weights import random_weights

    config = get_preset(preset)
    w = base_weights if base_weights is not None else random_weights(config, seed=seed)
    if weights != "float32" and not any(hasattr(getattr(w.layers[0], n), "fmt") for n in ("wq", "w1")):
        w = quantize_weights(w, weights)                # unless the caller passed them quantized
    model = Model(w, Ops(backend))
    rng = np.random.default_rng(seed)
    runs = []
    for context in contexts:
        if context + steps + 1 > config.max_seq_len:
            raise ValueError(f"context {context} + {steps} steps passes {preset}'s context of {config.max_seq_len}")
        cache = model.new_cache(block_size=16)
        model.forward(cache.prepare([0], [rng.integers(0, config.vocab_size, context)]), cache)
        times = []
        for _ in range(steps + 1):                      # the first step warms caches up, not timed
            batch = cache.prepare([0], [rng.integers(0, config.vocab_size, 1)])
            t0 = time.perf_counter()
            model.forward(batch, cache)
            times.append(time.perf_counter() - t0)
        mid = context + 1 + steps // 2                  # the middle step's cached tokens
        mem, comp, calls, cached, ws = roofline_terms(config, device, weights, mid)
        runs.append(Run(device.name, backend, weights, preset, context, steps, float(np.min(times[1:])),
                        mem, comp, calls, cached, ws))
    return runs


def _nnls(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """min |A x - y| with x >= 0, for a handful of columns: best feasible least squares over subsets."""
    n = A.shape[1]
    best, best_x = np.inf, np.zeros(n)
    for k in range(1, n + 1):
        for cols in itertools.combinations(range(n), k):
            x_sub, *_ = np.linalg.lstsq(A[:, cols], y, rcond=None)
            if np.all(x_sub >= 0):
                x = np.zeros(n)
                x[list(cols)] = x_sub
                loss = float(np.sum((A @ x - y) ** 2))
                if loss < best:
                    best, best_x = loss, x
    return best_x


def _loss(runs: list[Run], x: np.ndarray) -> float:
    """Squared relative error of the max-model with x = (a_cache, a_dram, b, o)."""
    return sum((r.predicted_s(_efficiency(x)) / r.measured_s - 1) ** 2 for r in runs)


def _efficiency(x: np.ndarray, levels: set | None = None) -> Efficiency:
    """x = (a_cache, a_dram, b, o) as an Efficiency: a scale that fits to zero never limited a run
    (infinite efficiency); with runs of one level only, that level's factor stands for both."""
    inv = [float("inf") if v <= 0 else 1 / float(v) for v in x[:3]]
    e_cache, e_dram, e_c = inv
    if levels == {True}:
        return Efficiency(memory=e_cache, compute=e_c, overhead_s=float(x[3]))
    if levels == {False}:
        return Efficiency(memory=e_dram, compute=e_c, overhead_s=float(x[3]))
    return Efficiency(memory=e_dram, compute=e_c, overhead_s=float(x[3]), memory_cache=e_cache)


def _fit_at_ratio(runs: list[Run], rho: dict[bool, float], overhead: bool) -> np.ndarray:
    """NNLS for (a_cache, a_dram, b[, o]) with each op's side fixed by its level's rho = b / a (memory
    side if m >= rho c)."""
    cols = []
    for r in runs:
        cut = rho[r.cached >= 0.5]
        mem = sum(m for m, c in zip(r.memory_s, r.compute_s) if m >= cut * c)
        comp = sum(c for m, c in zip(r.memory_s, r.compute_s) if m < cut * c)
        cols.append([mem * r.cached, mem * (1 - r.cached), comp] + ([r.calls] if overhead else []))
    A = np.array(cols, dtype=np.float64) / np.array([[r.measured_s] for r in runs])
    x = _nnls(A, np.ones(len(runs)))
    return x if overhead else np.append(x, 0.0)


def _ratios(runs: list[Run]) -> list[float]:
    """Candidate values of b / a for these runs: one inside each interval between the ops' m / c
    breakpoints, nominal (1.0) first."""
    cuts = sorted({m / c for r in runs for m, c in zip(r.memory_s, r.compute_s) if m > 0 and c > 0})
    return [1.0] + ([cuts[0] / 2, cuts[-1] * 2] if cuts else []) + \
        [float(np.sqrt(x * y)) for x, y in zip(cuts, cuts[1:])]


def fit(runs: list[Run], overhead: bool = True) -> Efficiency:
    """Efficiency factors for runs of one (device, backend, weights) key; see the module docstring.
    Which side of its max each op takes depends only on its level's rho = b / a, and changes only where
    rho crosses some op's m / c: every such interval is tried, the least true (max-model) loss wins."""
    if not runs:
        raise ValueError("no runs to fit")
    levels = {lv for lv in (True, False) if any((r.cached > 0) if lv else (r.cached < 1) for r in runs)}
    cand = {lv: _ratios([r for r in runs if (r.cached >= 0.5) == lv]) if lv in levels else [1.0]
            for lv in (True, False)}
    fits = [(_loss(runs, x), x) for x in (_fit_at_ratio(runs, {True: rc, False: rd}, overhead)
                                          for rc in cand[True] for rd in cand[False])]
    best = min(loss for loss, _ in fits)
    # ops whose sides are proportional (a batch-1 decode's matmuls: FLOPs and bytes both ~ weights) let
    # either side explain the time: keep the nominal sides (rho = 1, tried first) unless another split
    # fits clearly better
    loss0, x0 = fits[0]
    x = x0 if loss0 <= 1.1 * best + 1e-12 else min(fits, key=lambda f: f[0])[1]
    return _efficiency(x, levels)


def _band_loss(runs: list[Run], band: tuple[float, float]) -> float:
    """Squared relative error summed over keys when each run's cached share follows ``band``, each key
    fitted with every op on its memory side (a fast, additive stand-in for fit: used to pick the band)."""
    total = 0.0
    for key in {r.key for r in runs}:
        rs = apply_band([r for r in runs if r.key == key], band)
        A = np.array([[sum(r.memory_s) * r.cached, sum(r.memory_s) * (1 - r.cached), sum(r.compute_s), r.calls]
                      for r in rs]) / np.array([[r.measured_s] for r in rs])
        total += float(np.sum((A @ _nnls(A, np.ones(len(rs))) - 1) ** 2))
    return total


def choose_band(runs: list[Run]) -> tuple[float, float] | None:
    """The device's cache band (lo, hi) in bytes, fitted over all runs (every backend and format share
    it: it is the share of the cache this process gets): edges between the runs' working sets, the
    pair with the least summed loss. None when the runs do not say their working sets."""
    sizes = sorted({r.working_set for r in runs})
    if len(sizes) < 2 or sizes[0] <= 0:
        return None
    edges = [sizes[0] / 2] + [(a + b) / 2 for a, b in zip(sizes, sizes[1:])] + [sizes[-1] * 2]
    pairs = [(lo, hi) for i, lo in enumerate(edges) for hi in edges[i + 1:]]
    return min(pairs, key=lambda band: _band_loss(runs, band))


def apply_band(runs: list[Run], band: tuple[float, float] | None) -> list[Run]:
    """The runs with their cached share set from ``band`` (unchanged without one)."""
    if band is None:
        return list(runs)
    e = Efficiency(cache_band=band)
    return [replace(r, cached=e.cached_fraction(r.working_set)) for r in runs]


def best_of(runs: list[Run]) -> list[Run]:
    """One run per (key, preset, context): the fastest of repeated passes, in first-seen order."""
    best: dict[tuple, Run] = {}
    for r in runs:
        k = (r.key, r.preset, r.context)
        if k not in best or r.measured_s < best[k].measured_s:
            best[k] = r
    return list(best.values())


def fit_all(runs: list[Run], overhead: bool = True, band: tuple[float, float] | None = None) -> dict[str, Efficiency]:
    """Efficiency per key; ``band``: the cache band the runs' cached shares came from (apply_band), kept
    in each Efficiency so that predictions from it place other working sets the same way."""
    keys = sorted({r.key for r in runs})
    return {k: replace(fit([r for r in runs if r.key == k], overhead), cache_band=band) for k in keys}


def residual(run: Run, eff: Efficiency | None = None) -> float:
    """(predicted - measured) / measured; nominal roofline when ``eff`` is None."""
    pred = run.nominal_s if eff is None else run.predicted_s(eff)
    return (pred - run.measured_s) / run.measured_s


def leave_one_preset_out(runs: list[Run]) -> dict[int, float]:
    """Residual of each run (by index) predicted from factors fitted without its preset."""
    out = {}
    for i, r in enumerate(runs):
        train = [x for x in runs if x.key == r.key and x.preset != r.preset]
        if len(train) >= 2:
            out[i] = residual(r, fit(train))
    return out


def efficiency_json(e: Efficiency) -> dict:
    """An Efficiency as JSON: an efficiency that never limits (infinite) is written "inf", an unset
    cache efficiency null."""
    return {k: ("inf" if v == float("inf") else v) for k, v in asdict(e).items()}


def _efficiency_field(name: str, x):
    if x is None:                                       # old files wrote an infinite efficiency as null
        return None if name in ("memory_cache", "cache_band") else float("inf")
    return tuple(float(v) for v in x) if name == "cache_band" else float(x)


def calibration_json(runs: list[Run], effs: dict[str, Efficiency]) -> dict:
    return {"efficiency": {k: efficiency_json(e) for k, e in effs.items()},
            "runs": [{**asdict(r), "nominal_s": r.nominal_s,
                      "predicted_s": r.predicted_s(effs[r.key]) if r.key in effs else None} for r in runs]}


def load_calibration(path: str | Path) -> dict[str, Efficiency]:
    """Efficiency factors by "device/backend/weights" from a calibration JSON (benchmarks/results/)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        return {k: Efficiency(**{f: _efficiency_field(f, x) for f, x in v.items()})
                for k, v in data["efficiency"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"calibration file {path} is unreadable or malformed: {e}") from None


def efficiency_for(effs: dict[str, Efficiency], device: str, backend: str, weights: str) -> Efficiency | None:
    return effs.get(f"{device}/{backend}/{weights}")


# ---- GPU results committed under benchmarks/results/ -----------------------------------------------

_TIME_KEYS = {"time_s": 1.0, "seconds": 1.0, "ms": 1e-3, "time_ms": 1e-3, "median_ms": 1e-3,
              "us": 1e-6, "time_us": 1e-6, "median_us": 1e-6}
_DEVICE_KEYS = ("device", "gpu", "card", "device_name")
_GPU_NAMES = (("H200", "h200"), ("H100", "h100"), ("B200", "b200"), ("MI300X", "mi300x"))
_DTYPE_KEYS = {"float16": "fp16", "fp16": "fp16", "half": "fp16", "bfloat16": "bf16", "bf16": "bf16",
               "float32": "fp32", "fp32": "fp32", "fp8": "fp8", "int8": "int8", "w8a8": "int8"}


def _records(node, inherited: dict):
    """Every dict in a JSON tree, with the device name of its nearest ancestor that names one."""
    if isinstance(node, dict):
        here = {**inherited, **{k: node[k] for k in _DEVICE_KEYS if isinstance(node.get(k), str)}}
        yield node, here
        for v in node.values():
            yield from _records(v, here)
    elif isinstance(node, list):
        for v in node:
            yield from _records(v, inherited)


def compare_gpu_results(results_dir: str | Path = "benchmarks/results",
                        efficiency: Efficiency | None = None) -> list[dict]:
    """Each timed record of benchmarks/results/gpu_suite*.json that states its FLOPs and/or bytes
    (keys ``flops``, ``bytes``; a time as time_s / ms / us / median_ms / median_us; ``dtype`` optional,
    fp16 by default) placed on its card's roofline: predicted time and achieved fraction."""
    from .catalog import CATALOG
    from .cost import Cost
    from .roofline import op_point

    out = []
    for path in sorted(Path(results_dir).glob("gpu_suite*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for rec, ctx in _records(data, {"device": path.stem}):
            t_key = next((k for k in _TIME_KEYS if isinstance(rec.get(k), (int, float))), None)
            flops, nbytes = rec.get("flops", 0), rec.get("bytes", 0)
            if t_key is None or not (isinstance(flops, (int, float)) and isinstance(nbytes, (int, float))) \
                    or not (flops or nbytes):
                continue
            names = " ".join(str(v) for v in ctx.values()).upper()
            dev = next((CATALOG[k] for pat, k in _GPU_NAMES if pat in names), None)
            if dev is None:
                continue
            measured = rec[t_key] * _TIME_KEYS[t_key]
            key = _DTYPE_KEYS.get(str(rec.get("dtype", "fp16")).lower(), "fp16")
            name = str(rec.get("name", rec.get("kernel", "?")))
            p = op_point("gpu", name, "gpu", Cost(int(flops), 0, int(nbytes), 0), key, dev, efficiency or Efficiency())
            out.append({"file": path.name, "device": dev.name, "name": p.role, "dtype": key, "flops": flops,
                        "bytes": nbytes, "measured_s": measured, "predicted_s": p.time_s, "bound": p.bound,
                        "achieved_fraction": p.time_s / measured if measured > 0 else None})
    return out


def gpu_runs(rows: list[dict]) -> list[Run]:
    """compare_gpu_results' rows as single-op Runs (keyed device/gpu/dtype), to fit as the CPU runs."""
    from .catalog import CATALOG
    out = []
    for r in rows:
        d = CATALOG[r["device"]]
        out.append(Run(d.name, "gpu", r["dtype"], r["name"], 0, 1, r["measured_s"],
                       (r["bytes"] / d.memory_bw,), (r["flops"] / d.peak(r["dtype"]),), 1))
    return out
