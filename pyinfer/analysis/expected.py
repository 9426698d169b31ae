"""The expected time of a step on an accelerator: the roofline's bytes and FLOPs at the fractions real
kernels reach (pyinfer/analysis/catalog_kernels.py, each figure sourced), plus a fixed time per kernel,
plus the links' collectives. The roofline (pyinfer.analysis.roofline) stays the bound: no kernel
beats it, and devices without kernel figures are predicted at it, labelled so.

Per op call (one kernel), by its class (``kernel_class``):

    gemv / gemm    max(B / (stream W) + n_w x instr / lane rate,  F / (gemm P))      instr = 0 for float weights
    attn_decode    max(B / (attn_decode W), F / (gemm P))
    attn_prefill   max(B / (stream W), F / (attn_prefill P))
    elementwise    B / (stream W)
    + kernel_s (with or without CUDA graphs)

n_w: the weights the call multiplies; instr: dequantizing instructions per weight (8-bit or 4-bit,
+ 2 per group), at the lane rate fp32 peak / 2.

Tensor parallelism over tp devices (``shard_step``): projections, MLP and head split tp ways; the KV
projections, K RoPE, KV writes and attention's KV bytes split only over the KV heads a device holds
(min(tp, n_kv_heads): beyond that each device holds a replica of one KV head), attention's FLOPs tp
ways; norms, residuals and embedding replicated. Two all-reduces per layer of the step's activations
(T x dim): ring time 2 (tp-1)/tp x bytes / link bandwidth, plus the link's latency in the expected
figure (the bound has none).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import ModelConfig
from ..quant import get_format
from .catalog_kernels import KernelFigures, figures_for, link_figures
from .cost import Cost
from .estimate import ITEM_DTYPES, OpCost, PhaseCost
from .hardware import Device

MATMUL_ROLES = frozenset({"wq", "wk", "wv", "wo", "w1", "w2", "w3", "lm_head"})
KV_ROLES = frozenset({"wk", "wv", "bk", "bv", "k_norm", "rope_k", "kv_write"})   # over the KV heads a device holds
HEAD_ROLES = frozenset({"wq", "wo", "w1", "w2", "w3", "lm_head", "bq", "q_norm", "rope_q", "silu_mul"})


def kv_split(config: ModelConfig, tp: int) -> int:
    """Ways the KV heads (their projections, cache and attention reads) split over tp devices."""
    return min(tp, config.n_kv_heads)


def _div(c: Cost, flops: float, weights: float, acts: float, kv: float) -> Cost:
    return Cost(c.flops / flops, c.bytes_weights / weights, c.bytes_activations / acts, c.bytes_kv / kv)


def shard_step(step: PhaseCost, config: ModelConfig, tp: int) -> PhaseCost:
    """The step as one of tp tensor-parallel devices runs it (costs as floats)."""
    if tp == 1:
        return step
    kvs = kv_split(config, tp)
    ops = []
    for o in step.ops:
        if o.role in KV_ROLES:
            c, w = _div(o.cost, kvs, kvs, kvs, kvs), o.weights / kvs
        elif o.role in HEAD_ROLES:
            c, w = _div(o.cost, tp, tp, tp, tp), o.weights / tp
        elif o.role == "attention":
            c, w = _div(o.cost, tp, 1, tp, kvs), 0
        else:
            c, w = o.cost, o.weights
        ops.append(OpCost(o.op, o.role, o.layer, c, o.compute, w))
    return PhaseCost(step.phase, step.q_lens, step.cached, tuple(ops), step.repeat)


def kernel_class(op: OpCost) -> str:
    if op.role in MATMUL_ROLES:
        return "dequant" if op.op.startswith("matmul_w") else "gemv"
    if op.op == "paged_decode_attention":
        return "attn_decode"
    if op.op in ("paged_prefill_attention", "attention_prefill"):
        return "attn_prefill"
    return "elementwise"


def dequant_instr(figs: KernelFigures, weights: str) -> float:
    """Dequantizing instructions per weight of a pyinfer.quant format (0 for float weights)."""
    try:
        f = get_format(weights)
    except ValueError:
        return 0.0
    base = figs.dequant_instr.get(f.weight_bits)
    if base is None:
        raise ValueError(f"{figs.device}: no dequantization figure for {f.weight_bits}-bit weights")
    return base + (2.0 / f.group_size if f.group_size else 0.0)


@dataclass(frozen=True)
class ExpectedStep:
    time_s: float                       # the ops' kernels, collectives not included
    kernels: int
    by_class: dict[str, float]          # seconds per kernel class (fixed times included)
    model: str = "expected"             # "expected" (the device's own figures) or "expected-generic"


def expected_step(step: PhaseCost, device: Device, weights: str, cuda_graphs: bool = True
                  ) -> ExpectedStep | None:
    """Expected time of a (sharded) step's kernels on the device; None without kernel figures."""
    figs, model = figures_for(device)
    if figs is None:
        return None
    bw, fixed = device.memory_bw, figs.kernel_s_graphs if cuda_graphs else figs.kernel_s_eager
    lane = device.peak("fp32") / 2
    instr = dequant_instr(figs, weights)
    by: dict[str, float] = {}
    for o in step.ops:
        cls, c = kernel_class(o), o.cost
        peak = device.peak(o.compute)
        if cls in ("gemv", "dequant"):
            mem = c.bytes_total / (figs.stream * bw) + (o.weights * instr / lane if cls == "dequant" else 0.0)
            t = max(mem, c.flops / (figs.gemm * peak))
        elif cls == "attn_decode":
            t = max(c.bytes_total / (figs.attn_decode * bw), c.flops / (figs.gemm * peak))
        elif cls == "attn_prefill":
            t = max(c.bytes_total / (figs.stream * bw), c.flops / (figs.attn_prefill * peak))
        else:
            t = c.bytes_total / (figs.stream * bw)
        by[cls] = by.get(cls, 0.0) + t + fixed
    return ExpectedStep(sum(by.values()), len(step.ops), by, model)


@dataclass(frozen=True)
class Comm:
    bound_s: float                      # bytes over the link's bandwidth only
    expected_s: float                   # plus the link's published latency per collective / send
    latency_known: bool


def comm(config: ModelConfig, tokens: int, dtype: str, device: Device, tp: int, pp: int) -> Comm:
    """Per step: 2 all-reduces per layer (tp > 1) of tokens x dim activations; pp - 1 stage sends."""
    if tp == 1 and pp == 1:
        return Comm(0.0, 0.0, True)
    if device.interconnect_bw is None:
        raise ValueError(f"{device.name} has no device-to-device interconnect listed: tp={tp}, pp={pp} "
                         f"is impossible on it; use one device")
    link = link_figures(device.name)
    lat = link.latency_s if link is not None and link.latency_s is not None else None
    act = tokens * config.dim * ITEM_DTYPES[dtype]().itemsize
    n_ar = 2 * config.n_layers if tp > 1 else 0
    ar_bw = 2 * (tp - 1) / tp * act / device.interconnect_bw
    send_bw = act / device.interconnect_bw
    bound = n_ar * ar_bw + (pp - 1) * send_bw
    extra = 0.0 if lat is None else (n_ar + pp - 1) * lat
    return Comm(bound, bound + extra, lat is not None)
