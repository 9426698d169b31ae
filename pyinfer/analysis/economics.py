"""Cost and energy per token: tokens/s, time per output token, $ per million input and output tokens,
joules per token, KV bytes per token and how many sequences a device's memory holds; tensor- and
pipeline-parallel sizing (on paper) for models that do not fit one device.

Everything is the roofline of pyinfer.analysis.roofline applied to pyinfer.analysis.estimate:

    time per output token (TPOT) = decode step time          output tokens/s = batch / TPOT
    $ per 1M output tokens = price/h x devices / 3600 x TPOT / batch x 1e6    (input: prefill time)
    J per output token     = power x devices x TPOT / batch
    max sequences          = (memory_fraction x memory x devices - weights) / (KV bytes/token x (context+1))

Two figures for every time: the roofline BOUND (pyinfer.analysis.roofline: no kernel beats it) and
the EXPECTED time (pyinfer.analysis.expected: the fractions real kernels reach, a fixed time per
kernel with or without CUDA graphs, and the links' latencies, all from the catalog with sources).
tpot_s, tokens_per_s, $ and J follow the expected figure where the device has kernel figures
(``model`` "expected", or "expected-generic" for a GPU with only generic figures), else the bound
(``model == "roofline"``).

Tensor parallel (tp): pyinfer.analysis.expected.shard_step (attention and KV never split beyond the
KV heads a device holds; KV memory is counted the same way), two all-reduces per layer over the link.
Pipeline parallel (pp): layers in pp stages; the batch runs as m = min(pp, batch) micro-batches, so
a token takes max(m, pp) stage times (pp - m of them idle: the bubble) plus pp - 1 sends.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..config import ModelConfig
from ..quant import get_format
from .estimate import ITEM_DTYPES, uniform_step_cost
from .expected import comm, expected_step, shard_step
from .hardware import Device
from .roofline import Efficiency, PhaseRoofline, predict

FLOAT_WEIGHTS = ("float32", "float16", "bfloat16", "fp8")     # stored as is; anything else: pyinfer.quant
WEIGHT_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int4": "int4-g128"}
KV_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
MAX_DEVICES = 1 << 20            # a deployment larger than this is refused, not searched


def weights_name(name: str) -> str:
    name = WEIGHT_ALIASES.get(name, name)
    if name not in FLOAT_WEIGHTS:
        get_format(name)                                    # ValueError naming the known formats
    return name


def kv_name(name: str) -> str:
    name = KV_ALIASES.get(name, name)
    if name not in ITEM_DTYPES:
        raise ValueError(f"KV format {name!r} is not one of {', '.join(ITEM_DTYPES)}")
    return name


def linear_bytes(n: int, k: int, weights: str) -> int:
    """Stored bytes of an (n, k) linear weight: float, fp8, or a pyinfer.quant format (with scales, zeros)."""
    if weights in FLOAT_WEIGHTS:
        return n * k * ITEM_DTYPES[weights]().itemsize
    f = get_format(weights)
    g = f.group_size
    k_pad = k if g == 0 else -(-k // g) * g
    q = n * k_pad * f.weight_bits // 8
    scales = 4 * n * (1 if g == 0 else k_pad // g)
    return q + scales + (n * k_pad // g if f.zero_point else 0)


def weight_bytes(config: ModelConfig, weights: str = "float16", dtype: str = "float16") -> int:
    """All stored weights: embedding and norms in ``dtype``, linears and the head in ``weights``
    (a tied head is stored once unless quantized, as pyinfer.quant.quantize_weights does)."""
    c, item = config, ITEM_DTYPES[dtype]().itemsize
    layer = sum(linear_bytes(n, k, weights) for n, k in (
        (c.q_dim, c.dim), (c.kv_dim, c.dim), (c.kv_dim, c.dim), (c.dim, c.q_dim),
        (c.hidden_dim, c.dim), (c.dim, c.hidden_dim), (c.hidden_dim, c.dim))) + 2 * c.dim * item
    layer += ((c.q_dim + 2 * c.kv_dim) if c.qkv_bias else 0) * item + (2 * c.head_dim if c.qk_norm else 0) * item
    emb = c.vocab_size * c.dim * item
    tied_float = c.tied_embeddings and weights in ("float32", "float16", "bfloat16") and weights == dtype
    head = 0 if tied_float else linear_bytes(c.vocab_size, c.dim, weights)
    return emb + head + c.n_layers * layer + c.dim * item


def kv_bytes_per_token(config: ModelConfig, kv_dtype: str = "float16") -> int:
    """K and V of one token across all layers."""
    return 2 * config.n_layers * config.kv_dim * ITEM_DTYPES[kv_name(kv_dtype)]().itemsize


class DoesNotFit(ValueError):
    """The weights and KV cache need more memory than the devices asked for hold."""

    def __init__(self, message: str, need_bytes: float, n_devices: int):
        super().__init__(message)
        self.need_bytes, self.n_devices = need_bytes, n_devices


@dataclass(frozen=True)
class TokenEconomics:
    device: Device
    tp: int
    pp: int
    batch: int
    context: int
    weights: str
    kv_dtype: str
    prefill: PhaseRoofline      # one device's share of the batch's prefill, on the roofline
    decode: PhaseRoofline       # one device's share of one decode (micro-)batch step, on the roofline
    prefill_s: float            # the batch's prompts (TTFT), communication included: model's figure
    tpot_s: float               # time per output token, communication and bubbles included: model's figure
    weight_bytes: int
    kv_bytes_per_token: int
    memory_per_device: float    # weights + the batch's KV on each device
    max_concurrent_seqs: int    # at this context, on all tp x pp devices
    memory_fraction: float
    bound_tpot_s: float = 0.0   # the roofline bound of tpot_s
    bound_prefill_s: float = 0.0
    model: str = "roofline"     # "expected" (the device's kernel figures), "expected-generic" (a GPU's generic
                                # ones) or "roofline" (ops at the bound, links with their latency)
    micro_batches: int = 1
    cuda_graphs: bool = True
    dtype: str = "float16"

    @property
    def n_devices(self) -> int:
        return self.tp * self.pp

    @property
    def parallel(self) -> str:
        return "".join(f"{k}{v}" for k, v in (("tp", self.tp), ("pp", self.pp)) if v > 1) or "tp1"

    @property
    def bubble(self) -> float:
        """Fraction of each device's time idle in the pipeline."""
        return (self.pp - min(self.micro_batches, self.pp)) / self.pp

    @property
    def fits(self) -> bool:
        return self.memory_per_device <= self.memory_fraction * self.device.memory_bytes

    @property
    def tokens_per_s(self) -> float:
        return self.batch / self.tpot_s

    @property
    def roofline_tokens_per_s(self) -> float:
        return self.batch / self.bound_tpot_s

    @property
    def input_tokens_per_s(self) -> float:
        return self.prefill.tokens / self.prefill_s

    def _usd_per_m(self, tokens_per_s: float) -> float | None:
        p = self.device.price_per_hour
        return None if p is None else p * self.n_devices / 3600 / tokens_per_s * 1e6

    @property
    def usd_per_m_output(self) -> float | None:
        return self._usd_per_m(self.tokens_per_s)

    @property
    def usd_per_m_input(self) -> float | None:
        return self._usd_per_m(self.input_tokens_per_s)

    @property
    def joules_per_output_token(self) -> float | None:
        w = self.device.power_w
        return None if w is None else w * self.n_devices / self.tokens_per_s

    @property
    def joules_per_input_token(self) -> float | None:
        w = self.device.power_w
        return None if w is None else w * self.n_devices / self.input_tokens_per_s


def check_parallel(config: ModelConfig, tp: int, pp: int) -> None:
    if isinstance(tp, bool) or isinstance(pp, bool) or not (isinstance(tp, int) and isinstance(pp, int)) \
            or tp < 1 or pp < 1:
        raise ValueError(f"tp={tp!r} and pp={pp!r} must be integers >= 1")
    if config.n_heads % tp:
        raise ValueError(f"tp={tp} does not divide {config.name}'s n_heads={config.n_heads}")
    if pp > config.n_layers:
        raise ValueError(f"pp={pp} is more stages than {config.name}'s {config.n_layers} layers")


def memory_per_device(config: ModelConfig, wb: int, kvt: int, batch: int, context: int, tp: int, pp: int) -> float:
    """Weights split over tp x pp devices, KV over pp stages and the KV heads a device holds."""
    kv_share = -(-config.n_kv_heads // tp) / config.n_kv_heads / pp
    return wb / (tp * pp) + batch * (context + 1) * kvt * kv_share


def _phase(step, config, device, weights, tp, efficiency, cuda_graphs):
    """(roofline of one device's share, bound seconds, expected seconds or None) of a step."""
    sharded = shard_step(step, config, tp)
    r = predict(sharded, device, efficiency)
    x = None if efficiency is not None else expected_step(sharded, device, weights, cuda_graphs)
    return r, r.time_s, None if x is None else x.time_s, None if x is None else x.model


def token_economics(config: ModelConfig, device: Device, batch: int = 1, context: int = 512,
                    weights: str = "float16", *, dtype: str = "float16", kv_dtype: str | None = None,
                    tp: int = 1, pp: int = 1, efficiency: Efficiency | None = None,
                    prompt_len: int | None = None, memory_fraction: float = 0.9,
                    cuda_graphs: bool = True) -> TokenEconomics:
    """Cost of tokens for one configuration. ``memory_fraction`` of memory is usable (the rest:
    runtime, activations, fragmentation). ``efficiency`` (a calibration) replaces the kernel
    figures: the roofline with those factors is then the figure."""
    weights, kv_dtype = weights_name(weights), kv_name(kv_dtype or dtype)
    check_parallel(config, tp, pp)
    if not 0 < memory_fraction <= 1:
        raise ValueError(f"memory_fraction={memory_fraction} must be in (0, 1]")
    if weights in ("float32", "float16", "bfloat16") and weights != dtype:
        raise ValueError(f"float weights {weights} with {dtype} activations: pass dtype={weights}")
    if context < 1 or context + 1 > config.max_seq_len:
        raise ValueError(f"context={context} plus the decoded token must be in [2, {config.name}'s "
                         f"max_seq_len={config.max_seq_len}]")
    prompt_len = context if prompt_len is None else prompt_len
    kw = dict(weights=weights, dtype=dtype, kv_dtype=kv_dtype)
    m = min(pp, batch)                                  # micro-batches in flight
    micro = -(-batch // m)
    pre_step = uniform_step_cost(config, batch, prompt_len, 0, phase="prefill", **kw)
    dec_step = uniform_step_cost(config, micro, 1, context, phase="decode", **kw)
    pre, pre_bound, pre_exp, _ = _phase(pre_step, config, device, weights, tp, efficiency, cuda_graphs)
    dec, dec_bound, dec_exp, label = _phase(dec_step, config, device, weights, tp, efficiency, cuda_graphs)
    c_pre = comm(config, pre_step.tokens, dtype, device, tp, pp)
    c_dec = comm(config, dec_step.tokens, dtype, device, tp, pp)
    cycles = max(m, pp) / pp                            # stage times per token, over the whole pipeline
    bound_tpot = cycles * (dec_bound + c_dec.bound_s)
    bound_pre = pre_bound + c_pre.bound_s
    expected = dec_exp is not None
    tpot = cycles * (dec_exp + c_dec.expected_s) if expected else cycles * (dec_bound + c_dec.expected_s)
    pre_s = pre_exp + c_pre.expected_s if expected else pre_bound + c_pre.expected_s
    wb, kvt = weight_bytes(config, weights, dtype), kv_bytes_per_token(config, kv_dtype)
    per_device = memory_per_device(config, wb, kvt, batch, context, tp, pp)
    free = memory_fraction * device.memory_bytes - wb / (tp * pp)
    per_seq = memory_per_device(config, 0, kvt, 1, context, tp, pp)
    max_seqs = max(0, int(free // per_seq))
    return TokenEconomics(device, tp, pp, batch, context, weights, kv_dtype, pre, dec, pre_s, tpot,
                          wb, kvt, per_device, max_seqs, memory_fraction, bound_tpot, bound_pre,
                          label if expected else "roofline", m, cuda_graphs, dtype)


def splits(config: ModelConfig, n: int, device: Device | None = None) -> list[tuple[int, int]]:
    """(tp, pp) with tp * pp = n, the largest tp first (tp inside a node: at most 8 GPUs)."""
    max_tp = 8 if device is not None and device.kind == "gpu" else n
    return [(tp, n // tp) for tp in range(min(n, max_tp), 0, -1)
            if n % tp == 0 and config.n_heads % tp == 0 and n // tp <= config.n_layers]


def plan(config: ModelConfig, device: Device, batch: int = 1, context: int = 512, weights: str = "float16",
         device_counts: Sequence[int] | int | None = None, **kw) -> TokenEconomics:
    """The fewest devices (tensor parallel within what divides the heads, then pipeline) whose memory
    holds the weights and the batch's KV cache: any count (``None``), the fewest of a list, or exactly
    ``device_counts`` devices (an int). DoesNotFit (a ValueError) says how much memory it needs."""
    weights = weights_name(weights)
    dtype = kw.get("dtype", "float16")
    kvt = kv_bytes_per_token(config, kw.get("kv_dtype") or dtype)
    wb = weight_bytes(config, weights, dtype)
    usable = kw.get("memory_fraction", 0.9) * device.memory_bytes
    total = wb + batch * (context + 1) * kvt
    at_least = max(1, int(-(-total // usable)))
    if isinstance(device_counts, int) and not isinstance(device_counts, bool):
        counts = [device_counts]
    elif device_counts is None:
        counts = None
    else:
        counts = sorted(set(device_counts))
    if counts is not None and any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts):
        raise ValueError(f"device counts {counts} must be integers >= 1")
    if device.interconnect_bw is None:                  # no links: one device or nothing
        counts = [1] if counts is None or 1 in counts else []
    if counts is None:
        counts = range(at_least, min(MAX_DEVICES, 4 * at_least + 64) + 1) if at_least <= MAX_DEVICES else []
    n_max = 0
    for n in counts:
        n_max = max(n_max, n)
        for tp, pp in splits(config, n, device):
            if memory_per_device(config, wb, kvt, batch, context, tp, pp) <= usable:
                return token_economics(config, device, batch, context, weights, tp=tp, pp=pp, **kw)
    n_show = n_max or at_least
    links = "" if device.interconnect_bw else f" ({device.name} has no device-to-device links: one device only)"
    more = f", at least {at_least} devices hold it" if at_least > n_show and device.interconnect_bw else ""
    raise DoesNotFit(f"does not fit: needs {total / 1e9:.4g} GB on {n_show} devices{links} "
                     f"({config.name}, {weights} weights {wb / 1e9:.4g} GB + KV for batch {batch} x context "
                     f"{context}; {usable / 1e9:.4g} GB usable per {device.name}{more})", total, n_show)


def with_batches(e: TokenEconomics, config: ModelConfig, batches: Sequence[int], **kw) -> list[TokenEconomics]:
    """The same deployment at other batch sizes (for curves)."""
    return [token_economics(config, e.device, b, e.context, e.weights, kv_dtype=e.kv_dtype, tp=e.tp, pp=e.pp,
                            memory_fraction=e.memory_fraction, **kw) for b in batches]


__all__ = ["TokenEconomics", "DoesNotFit", "token_economics", "plan", "splits", "memory_per_device", "weight_bytes", "kv_bytes_per_token", "linear_bytes",
           "weights_name", "kv_name", "with_batches"]
