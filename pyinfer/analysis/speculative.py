"""Speculative decoding on paper: a draft model proposes k tokens per sequence, the target verifies
them in one step of k + 1 tokens per sequence, and with a per-token acceptance rate a (each draft
token accepted independently with probability a, as Leviathan et al. 2023 assume) a verification
step yields on average

    E(a, k) = (1 - a^(k+1)) / (1 - a)          tokens (k + 1 when a = 1)

so one round costs k draft decode steps + one verification step and yields E tokens per sequence:

    speedup = E x t_target_step / (k x t_draft_step + t_verify_step)

``speculative_speedup`` is that formula on any three step times (measured ones: benchmarks/
bench_spec_model.py checks it against the engine on this CPU); ``speculative_economics`` prices the
steps with pyinfer.analysis (the target's deployment: device, tp, pp, batch, context), giving tokens/s,
time per output token, $ and J per token beside plain decoding. The draft runs on the same devices,
one after the other with the target, tensor parallel as far as its heads divide the target's tp.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import ModelConfig
from .economics import TokenEconomics, kv_bytes_per_token, memory_per_device, token_economics, weight_bytes
from .estimate import uniform_step_cost
from .expected import comm, expected_step, shard_step
from .roofline import predict


def expected_tokens_per_step(acceptance: float, k: int) -> float:
    """Mean tokens a verification step yields: (1 - a^(k+1)) / (1 - a)."""
    check_spec(k, acceptance)
    a = float(acceptance)
    return float(k + 1) if a == 1.0 else (1.0 - a ** (k + 1)) / (1.0 - a)


def check_spec(k: int, acceptance: float) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 64:
        raise ValueError(f"spec k={k!r} must be an integer in [1, 64] (draft tokens per round)")
    if isinstance(acceptance, bool) or not isinstance(acceptance, (int, float)) or not 0 <= acceptance <= 1:
        raise ValueError(f"acceptance={acceptance!r} must be a number in [0, 1]")


def speculative_speedup(acceptance: float, k: int, target_step_s: float, draft_step_s: float,
                        verify_step_s: float) -> float:
    """Plain decode time per token over speculative time per token, from the three step times."""
    for name, t in (("target_step_s", target_step_s), ("draft_step_s", draft_step_s),
                    ("verify_step_s", verify_step_s)):
        if not (isinstance(t, (int, float)) and t > 0 and t < float("inf")):
            raise ValueError(f"{name}={t!r} must be a positive finite time")
    return expected_tokens_per_step(acceptance, k) * target_step_s / (k * draft_step_s + verify_step_s)


@dataclass(frozen=True)
class SpecEconomics:
    plain: TokenEconomics           # the target alone, same deployment
    draft: TokenEconomics           # the draft's decode step on the same devices
    k: int
    acceptance: float
    tokens_per_step: float          # E(a, k)
    verify_s: float                 # one verification step (k + 1 tokens per sequence)
    round_s: float                  # k draft steps + the verification
    bound_round_s: float
    fits: bool                      # target + draft weights and KV within memory

    @property
    def tpot_s(self) -> float:
        return self.round_s / self.tokens_per_step

    @property
    def tokens_per_s(self) -> float:
        return self.plain.batch / self.tpot_s

    @property
    def roofline_tokens_per_s(self) -> float:
        return self.plain.batch * self.tokens_per_step / self.bound_round_s

    @property
    def speedup(self) -> float:
        return self.plain.tpot_s / self.tpot_s

    @property
    def usd_per_m_output(self) -> float | None:
        p, n = self.plain.device.price_per_hour, self.plain.n_devices
        return None if p is None else p * n / 3600 / self.tokens_per_s * 1e6

    @property
    def joules_per_output_token(self) -> float | None:
        w = self.plain.device.power_w
        return None if w is None else w * self.plain.n_devices / self.tokens_per_s


def speculative_economics(target: ModelConfig, draft: ModelConfig, plain: TokenEconomics, *, k: int,
                          acceptance: float, draft_weights: str | None = None) -> SpecEconomics:
    """Speculative decoding in ``plain``'s deployment (a token_economics or plan result of ``target``)."""
    check_spec(k, acceptance)
    if draft.vocab_size != target.vocab_size:
        raise ValueError(f"draft {draft.name} has vocabulary {draft.vocab_size}, target {target.name} "
                         f"{target.vocab_size}: a draft must share the target's tokenizer")
    e, dw = plain, draft_weights or plain.weights
    if plain.context + k + 1 > target.max_seq_len or plain.context + k > draft.max_seq_len:
        raise ValueError(f"context {plain.context} + {k} draft tokens passes a model's max_seq_len")
    dtype = e.dtype if dw not in ("float32", "float16", "bfloat16") else dw
    d_tp = max(t for t in range(1, e.tp + 1) if e.tp % t == 0 and draft.n_heads % t == 0)
    d = token_economics(draft, e.device, e.batch, e.context, dw, dtype=dtype, kv_dtype=e.kv_dtype, tp=d_tp,
                        prompt_len=1, memory_fraction=e.memory_fraction, cuda_graphs=e.cuda_graphs)
    kw = dict(weights=e.weights, dtype=e.dtype, kv_dtype=e.kv_dtype)
    step = shard_step(uniform_step_cost(target, e.batch, k + 1, e.context, phase="prefill", **kw), target, e.tp)
    c = comm(target, step.tokens, e.dtype, e.device, e.tp, e.pp)
    bound_v = predict(step, e.device).time_s + c.bound_s
    x = expected_step(step, e.device, e.weights, e.cuda_graphs) if e.model.startswith("expected") else None
    verify = (x.time_s if x is not None else predict(step, e.device).time_s) + c.expected_s
    d_kvt = kv_bytes_per_token(draft, e.kv_dtype)
    d_mem = memory_per_device(draft, weight_bytes(draft, dw, dtype), d_kvt, e.batch, e.context + k, d_tp, 1)
    fits = e.memory_per_device + d_mem / e.pp <= e.memory_fraction * e.device.memory_bytes
    return SpecEconomics(e, d, k, float(acceptance), expected_tokens_per_step(acceptance, k), verify,
                         k * d.tpot_s + verify, k * d.bound_tpot_s + bound_v, fits)


__all__ = ["expected_tokens_per_step", "speculative_speedup", "speculative_economics", "SpecEconomics",
           "check_spec"]
