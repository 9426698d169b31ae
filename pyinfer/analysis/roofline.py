"""The roofline: each op call placed against a device's ceilings.

For an op with F FLOPs and B bytes on a device with peak P (FLOP/s, for the dtype its arithmetic runs
at) and bandwidth W (bytes/s):

    intensity I = F / B            ridge point R = P / W            bound = memory if I < R else compute
    attainable time t = max(F / (e_c P), B / (e_m W)) + overhead

with efficiency factors e_c, e_m (1 and overhead 0 unless calibrated: pyinfer.analysis.calibrate).
W depends on where the bytes come from: a step run again and again (decode) re-reads its working set
(weights, KV, activations: the step's total bytes), and a device with a measured bandwidth curve
(this-cpu) streams a working set that fits its caches faster than DRAM (Device.bandwidth); devices
without one use their memory bandwidth.
Ops run one after another, so a step's time is the sum of its ops' times; the step as a whole is
labelled by which total is larger, sum F / P or sum B / W. Achieved fraction = predicted / measured.
"""
from __future__ import annotations

from dataclasses import dataclass

from .cost import Cost, CostCounter
from .estimate import Estimate, PhaseCost
from .hardware import Device


# a working set is served from a cache when the device's bandwidth curve gives it this much more than
# DRAM bandwidth (the curve is flat, within noise, past the cache and steps down inside it)
CACHE_BW_RATIO = 1.15


@dataclass(frozen=True)
class Efficiency:
    memory: float = 1.0         # fraction of the device bandwidth kernels reach (from DRAM)
    compute: float = 1.0        # fraction of the peak FLOP/s kernels reach
    overhead_s: float = 0.0     # fixed time per op call (Python dispatch, kernel launch)
    memory_cache: float | None = None   # fraction of the cache bandwidth reached when the working set
                                        # fits a cache (None: the same as memory)
    # (lo, hi) bytes: working sets below lo stream wholly from a cache, above hi wholly from DRAM, the
    # cached fraction falling linearly between (a shared cache keeps part of a larger working set);
    # fitted by calibration, None: the bandwidth curve decides (in_cache)
    cache_band: tuple[float, float] | None = None

    def __post_init__(self):
        if not (self.memory > 0 and self.compute > 0 and self.overhead_s >= 0) or \
                (self.memory_cache is not None and not self.memory_cache > 0):
            raise ValueError(f"efficiencies must be > 0 and overhead >= 0, got {self}")
        if self.cache_band is not None:
            lo, hi = (float(x) for x in self.cache_band)
            if not 0 <= lo < hi:
                raise ValueError(f"cache_band must be (lo, hi) bytes with 0 <= lo < hi, got {self.cache_band}")
            object.__setattr__(self, "cache_band", (lo, hi))

    def memory_at(self, cached: bool) -> float:
        """The memory efficiency for bytes streamed from a cache (cached) or from DRAM."""
        return self.memory_cache if cached and self.memory_cache is not None else self.memory

    def memory_time_factor(self, cached_fraction: float) -> float:
        """Memory time per nominal memory time when that fraction of the bytes comes from a cache."""
        return cached_fraction / self.memory_at(True) + (1 - cached_fraction) / self.memory

    def cached_fraction(self, working_set: float | None) -> float | None:
        """The fitted band's cached fraction of a working set (None without a band)."""
        if self.cache_band is None or working_set is None:
            return None
        lo, hi = self.cache_band
        return 1.0 if working_set <= lo else 0.0 if working_set >= hi else (hi - working_set) / (hi - lo)


def in_cache(device: Device, bandwidth: float | None) -> bool:
    """Whether bytes arriving at ``bandwidth`` come from a cache level of the device (see CACHE_BW_RATIO)."""
    return bandwidth is not None and bandwidth > CACHE_BW_RATIO * device.memory_bw


NOMINAL = Efficiency()


@dataclass(frozen=True)
class OpPoint:
    phase: str
    role: str
    op: str
    cost: Cost
    compute: str                # peak key
    intensity: float            # FLOP/byte
    ridge: float                # the device's ridge for this peak key
    bound: str                  # "memory" or "compute" (nominal roofline)
    compute_s: float            # F / (e_c P)
    memory_s: float             # B / (e_m W)
    time_s: float               # max of the two + overhead
    calls: int = 1

    @property
    def flops_per_s(self) -> float:
        return self.cost.flops / self.time_s if self.time_s else 0.0


def op_point(phase: str, role: str, op: str, cost: Cost, compute: str, device: Device,
             eff: Efficiency = NOMINAL, calls: int = 1, bandwidth: float | None = None,
             cached_fraction: float | None = None) -> OpPoint:
    """``bandwidth``: bytes/s the op's bytes come at (default the device's memory bandwidth);
    ``cached_fraction``: share of them served from a cache (default: all if the bandwidth is a cache's)."""
    peak = device.peak(compute)
    bw = bandwidth or device.memory_bw
    h = cached_fraction if cached_fraction is not None else float(in_cache(device, bw))
    c_s = cost.flops / (peak * eff.compute)
    m_s = cost.bytes_total / bw * eff.memory_time_factor(h)
    intensity = cost.intensity
    ridge = peak / bw
    return OpPoint(phase, role, op, cost, compute, intensity, ridge, "memory" if intensity < ridge else "compute",
                   c_s, m_s, max(c_s, m_s) + calls * eff.overhead_s, calls)


@dataclass(frozen=True)
class PhaseRoofline:
    phase: str
    device: Device
    tokens: int                 # new tokens in the step (the batch, in decode)
    seqs: int
    ops: tuple[OpPoint, ...]
    bandwidth: float | None = None      # bytes/s the step's bytes came at (None: device memory_bw)

    @property
    def cost(self) -> Cost:
        return sum((p.cost for p in self.ops), Cost())

    @property
    def time_s(self) -> float:
        return sum(p.time_s for p in self.ops)

    @property
    def compute_s(self) -> float:
        return sum(p.cost.flops / self.device.peak(p.compute) for p in self.ops)

    @property
    def memory_s(self) -> float:
        return self.cost.bytes_total / (self.bandwidth or self.device.memory_bw)

    @property
    def bound(self) -> str:
        return "compute" if self.compute_s > self.memory_s else "memory"

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.time_s

    def by_role(self) -> list[OpPoint]:
        """One point per role (wq, attention, w1, ...), summed over layers: the plot's points."""
        groups: dict[str, list[OpPoint]] = {}
        for p in self.ops:
            groups.setdefault(p.role, []).append(p)
        out = []
        for role, ps in groups.items():
            cost = sum((p.cost for p in ps), Cost())
            first = ps[0]
            c_s, m_s, t = (sum(getattr(p, a) for p in ps) for a in ("compute_s", "memory_s", "time_s"))
            out.append(OpPoint(self.phase, role, first.op, cost, first.compute, cost.intensity, first.ridge,
                               "memory" if cost.intensity < first.ridge else "compute", c_s, m_s, t, len(ps)))
        return out


def predict(step: PhaseCost, device: Device, efficiency: Efficiency | None = None,
            working_set: float | None = None) -> PhaseRoofline:
    """Every op of a step placed on the device's roofline; the bandwidth is the device's for a working
    set of ``working_set`` bytes (default: the step's total bytes, re-read by the next step)."""
    eff = efficiency or NOMINAL
    ws = sum(o.cost.bytes_total for o in step.ops) if working_set is None else working_set
    bw, h = device.bandwidth(ws), eff.cached_fraction(ws)
    ops = tuple(op_point(step.phase, o.role, o.op, o.cost, o.compute, device, eff, bandwidth=bw, cached_fraction=h)
                for o in step.ops)
    return PhaseRoofline(step.phase, device, step.tokens, step.n_seqs, ops, bw)


def predict_estimate(est: Estimate, device: Device, efficiency: Efficiency | None = None
                     ) -> tuple[PhaseRoofline, PhaseRoofline]:
    """(prefill, decode) of an Estimate on a device."""
    return predict(est.prefill, device, efficiency), predict(est.decode, device, efficiency)


def compute_key_of_op(op: str, weights_compute: str = "fp32") -> str:
    """The peak key of an op of this engine by name: integer-activation matmuls run at int8."""
    return "int8" if op in ("matmul_w8a8", "matmul_w4a8") else weights_compute


def predict_counter(counter: CostCounter, phase: str, device: Device, efficiency: Efficiency | None = None,
                    compute: str = "fp32", working_set: float | None = None) -> PhaseRoofline:
    """A counted run's phase on a device, one point per op name (the counter keeps no per-call detail);
    ``working_set``: bytes one step re-reads (default: none fits a cache, the device's memory_bw)."""
    eff = efficiency or NOMINAL
    bw, h = device.bandwidth(working_set), eff.cached_fraction(working_set)
    ops = tuple(op_point(phase, op, op, cost, compute_key_of_op(op, compute), device, eff,
                         counter.calls[(ph, op)], bandwidth=bw, cached_fraction=h)
                for (ph, op), cost in counter.by_key.items() if ph == phase)
    if not ops:
        raise ValueError(f"the counter has no {phase!r} calls")
    return PhaseRoofline(phase, device, 0, 0, ops, bw)


def achieved_fraction(predicted_s: float, measured_s: float) -> float:
    """Fraction of the roofline reached: 1.0 means the run took exactly the predicted time."""
    if measured_s <= 0:
        raise ValueError(f"measured time {measured_s} must be > 0")
    return predicted_s / measured_s


def where_run_sits(counter: CostCounter, decode_steps: int, decode_time_s: float, device: Device,
                   efficiency: Efficiency | None = None) -> str:
    """One line for a run report: the decode phase's bound and its predicted against measured time."""
    if decode_steps < 1 or decode_time_s <= 0:
        return f"roofline    {device.name}: no decode steps timed"
    per_step = sum(c.bytes_total for (ph, _), c in counter.by_key.items() if ph == "decode") / decode_steps
    r = predict_counter(counter, "decode", device, efficiency, working_set=per_step)
    pred, meas = r.time_s / decode_steps, decode_time_s / decode_steps
    return (f"roofline    {device.name}: decode {r.bound}-bound, predicted {pred * 1e3:.3f} ms/token, measured "
            f"{meas * 1e3:.3f} ms/token ({100 * achieved_fraction(pred, meas):.0f}% of the roofline"
            f"{'' if efficiency is None else ', calibrated'})")
