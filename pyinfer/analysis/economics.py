"""Cost and energy per token: tokens/s, time per output token, $ per million input and output tokens,
joules per token, KV bytes per token and how many sequences a device's memory holds; tensor- and
pipeline-parallel sizing (on paper) for models that do not fit one device.

Everything is the roofline of pyinfer.analysis.roofline applied to pyinfer.analysis.estimate:

    time per output token (TPOT) = decode step time          output tokens/s = batch / TPOT
    $ per 1M output tokens = price/h x devices / 3600 x TPOT / batch x 1e6    (input: prefill time)
    J per output token     = power x devices x TPOT / batch
    max sequences          = (memory_fraction x memory x devices - weights) / (KV bytes/token x (context+1))

Tensor parallel (tp): the projections, attention, MLP and head split tp ways (their FLOPs and bytes
divided by tp), norms, residuals and the embedding replicated, plus two ring all-reduces of the step's
activations (T x dim) per layer: 2 (tp-1)/tp x bytes / link bandwidth + a fixed latency each.
Pipeline parallel (pp): layers split in pp stages; one batch flows through them one after another,
so the step time is unchanged plus (pp-1) activation sends (no micro-batch interleaving: a
conservative bound on throughput). KV heads split tp ways while tp <= n_kv_heads, else replicate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..config import ModelConfig
from ..quant import get_format
from .estimate import ITEM_DTYPES, estimate
from .hardware import Device
from .roofline import Efficiency, PhaseRoofline, predict

FLOAT_WEIGHTS = ("float32", "float16", "bfloat16", "fp8")     # stored as is; anything else: pyinfer.quant
WEIGHT_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int4": "int4-g128"}
KV_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
SHARDED_ROLES = frozenset({"wq", "wk", "wv", "wo", "w1", "w2", "w3", "attention", "kv_write", "rope_q", "rope_k",
                           "silu_mul", "lm_head"})
COLLECTIVE_LATENCY_S = 10e-6     # per all-reduce or stage send: a typical small-message NCCL latency


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
    emb = c.vocab_size * c.dim * item
    tied_float = c.tied_embeddings and weights in ("float32", "float16", "bfloat16") and weights == dtype
    head = 0 if tied_float else linear_bytes(c.vocab_size, c.dim, weights)
    return emb + head + c.n_layers * layer + c.dim * item


def kv_bytes_per_token(config: ModelConfig, kv_dtype: str = "float16") -> int:
    """K and V of one token across all layers."""
    return 2 * config.n_layers * config.kv_dim * ITEM_DTYPES[kv_name(kv_dtype)]().itemsize


@dataclass(frozen=True)
class TokenEconomics:
    device: Device
    tp: int
    pp: int
    batch: int
    context: int
    weights: str
    kv_dtype: str
    prefill: PhaseRoofline
    decode: PhaseRoofline
    prefill_s: float            # the batch's prompts, communication included
    tpot_s: float               # one decode step, communication included
    weight_bytes: int
    kv_bytes_per_token: int
    memory_per_device: float    # weights + the batch's KV on each device
    max_concurrent_seqs: int    # at this context, on all tp x pp devices
    memory_fraction: float

    @property
    def n_devices(self) -> int:
        return self.tp * self.pp

    @property
    def fits(self) -> bool:
        return self.memory_per_device <= self.memory_fraction * self.device.memory_bytes

    @property
    def tokens_per_s(self) -> float:
        return self.batch / self.tpot_s

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


def _sharded(r: PhaseRoofline, tp: int) -> float:
    """Step time with the sharded roles' ops divided tp ways."""
    return sum(p.time_s / tp if p.role in SHARDED_ROLES else p.time_s for p in r.ops)


def _comm_s(config: ModelConfig, tokens: int, dtype: str, device: Device, tp: int, pp: int) -> float:
    if tp == 1 and pp == 1:
        return 0.0
    if device.interconnect_bw is None:
        raise ValueError(f"{device.name} has no device-to-device interconnect listed: tp={tp}, pp={pp} "
                         f"is impossible on it; use one device")
    act = tokens * config.dim * ITEM_DTYPES[dtype]().itemsize
    allreduce = 2 * (tp - 1) / tp * act / device.interconnect_bw + COLLECTIVE_LATENCY_S if tp > 1 else 0.0
    send = act / device.interconnect_bw + COLLECTIVE_LATENCY_S
    return 2 * config.n_layers * allreduce + (pp - 1) * send


def token_economics(config: ModelConfig, device: Device, batch: int = 1, context: int = 512,
                    weights: str = "float16", *, dtype: str = "float16", kv_dtype: str | None = None,
                    tp: int = 1, pp: int = 1, efficiency: Efficiency | None = None,
                    prompt_len: int | None = None, memory_fraction: float = 0.9) -> TokenEconomics:
    """Cost of tokens for one configuration. ``memory_fraction`` of memory is usable (the rest:
    runtime, activations, fragmentation)."""
    weights, kv_dtype = weights_name(weights), kv_name(kv_dtype or dtype)
    if tp < 1 or pp < 1:
        raise ValueError(f"tp={tp} and pp={pp} must be >= 1")
    if config.n_heads % tp:
        raise ValueError(f"tp={tp} does not divide {config.name}'s n_heads={config.n_heads}")
    if pp > config.n_layers:
        raise ValueError(f"pp={pp} is more stages than {config.name}'s {config.n_layers} layers")
    if not 0 < memory_fraction <= 1:
        raise ValueError(f"memory_fraction={memory_fraction} must be in (0, 1]")
    quant = None if weights in ("float32", "float16", "bfloat16") else weights
    if weights in ("float32", "float16", "bfloat16") and weights != dtype:
        raise ValueError(f"float weights {weights} with {dtype} activations: pass dtype={weights}")
    est = estimate(config, batch, context, quant, dtype=dtype, kv_dtype=kv_dtype, prompt_len=prompt_len)
    pre, dec = predict(est.prefill, device, efficiency), predict(est.decode, device, efficiency)
    prefill_s = _sharded(pre, tp) + _comm_s(config, est.prefill.tokens, dtype, device, tp, pp)
    tpot_s = _sharded(dec, tp) + _comm_s(config, est.decode.tokens, dtype, device, tp, pp)
    wb, kvt = weight_bytes(config, weights, dtype), kv_bytes_per_token(config, kv_dtype)
    kv_share = -(-config.n_kv_heads // tp) / config.n_kv_heads / pp        # KV fraction on one device
    n = tp * pp
    per_device = wb / n + batch * (context + 1) * kvt * kv_share
    free = memory_fraction * device.memory_bytes - wb / n
    max_seqs = max(0, int(free // ((context + 1) * kvt * kv_share)))
    return TokenEconomics(device, tp, pp, batch, context, weights, kv_dtype, pre, dec, prefill_s, tpot_s,
                          wb, kvt, per_device, max_seqs, memory_fraction)


def plan(config: ModelConfig, device: Device, batch: int = 1, context: int = 512, weights: str = "float16",
         device_counts: Sequence[int] = (1, 2, 4, 8), **kw) -> TokenEconomics:
    """The fewest devices (tensor parallel within what divides the heads, then pipeline) among
    ``device_counts`` whose memory holds the weights and the batch's KV cache; ValueError if none."""
    counts = sorted(set(device_counts))
    if any(n < 1 for n in counts):
        raise ValueError(f"device counts {counts} must be >= 1")
    if device.interconnect_bw is None:          # no links: one device or nothing
        counts = [n for n in counts if n == 1]
    tried = []
    for n in counts:
        for tp, pp in _splits(config, n):
            e = token_economics(config, device, batch, context, weights, tp=tp, pp=pp, **kw)
            if e.fits:
                return e
            tried.append(e)
    need = tried[-1] if tried else token_economics(config, device, batch, context, weights, **kw)
    total = need.weight_bytes + batch * (context + 1) * need.kv_bytes_per_token
    usable = need.memory_fraction * device.memory_bytes
    at_least = -(-total // usable)
    links = "" if device.interconnect_bw else f"; {device.name} has no device-to-device links, so one device only"
    raise ValueError(
        f"{config.name} with {need.weights} weights, batch {batch} x context {context} ({need.kv_dtype} KV) needs "
        f"{total / 1e9:.1f} GB (weights {need.weight_bytes / 1e9:.1f} GB + KV); it fits on no device count asked "
        f"({', '.join(map(str, sorted(set(device_counts))))} x {device.name}, {usable / 1e9:.1f} GB usable each"
        f"{links}): ask for {'' if links else f'at least {int(at_least)} devices, '}a smaller batch or context, "
        f"or a smaller format")


def _splits(config: ModelConfig, n: int) -> list[tuple[int, int]]:
    """(tp, pp) with tp * pp = n, the largest tp that divides the heads first (tp inside a node)."""
    out = [(tp, n // tp) for tp in range(n, 0, -1)
           if n % tp == 0 and config.n_heads % tp == 0 and n // tp <= config.n_layers]
    return out


def with_batches(e: TokenEconomics, config: ModelConfig, batches: Sequence[int], **kw) -> list[TokenEconomics]:
    """The same deployment at other batch sizes (for curves)."""
    return [token_economics(config, e.device, b, e.context, e.weights, kv_dtype=e.kv_dtype, tp=e.tp, pp=e.pp,
                            memory_fraction=e.memory_fraction, **kw) for b in batches]


__all__ = ["TokenEconomics", "token_economics", "plan", "weight_bytes", "kv_bytes_per_token", "linear_bytes",
           "weights_name", "kv_name", "with_batches"]
