"""The per-token formulas of docs/analysis.md (2 x parameters plus the attention terms), against the
op-by-op estimate for every preset, and against a hand computation for one small configuration."""
from __future__ import annotations

import pytest

from pyinfer.analysis import estimate
from pyinfer.analysis.economics import weight_bytes
from pyinfer.config import PRESETS, ModelConfig


def matmul_params(c: ModelConfig) -> int:
    """P_mm: the weights every token multiplies (projections, MLP, output head)."""
    return c.n_layers * (c.dim * c.q_dim + 2 * c.dim * c.kv_dim + c.q_dim * c.dim + 3 * c.dim * c.hidden_dim) \
        + c.vocab_size * c.dim


def elementwise_flops(c: ModelConfig) -> int:
    """Per token per layer: 2 rmsnorms (4D each), rope on q and k (3 each), silu_mul (5F), 2 adds (D each),
    and the q/k/v bias adds (1 each) of a Qwen2-style config."""
    return 8 * c.dim + 3 * (c.q_dim + c.kv_dim) + 5 * c.hidden_dim + 2 * c.dim + \
        ((c.q_dim + 2 * c.kv_dim) if c.qkv_bias else 0)


def decode_flops(c: ModelConfig, S: int) -> int:
    """One decode token with S tokens already cached (it attends S + 1 keys)."""
    return 2 * matmul_params(c) + 4 * c.n_layers * c.n_heads * c.head_dim * (S + 1) \
        + c.n_layers * elementwise_flops(c) + 4 * c.dim


def prefill_flops(c: ModelConfig, T: int) -> int:
    """One sequence's T-token prefill on an empty cache: the head runs for the last token only."""
    return 2 * (matmul_params(c) - c.vocab_size * c.dim) * T + 2 * c.vocab_size * c.dim \
        + 4 * c.n_layers * c.n_heads * c.head_dim * T * (T + 1) // 2 + T * c.n_layers * elementwise_flops(c) + 4 * c.dim


def decode_weight_bytes(c: ModelConfig, B: int, b: int) -> int:
    """Weight bytes of a decode step of B sequences, b bytes per value: every matmul weight once,
    the norms once, one embedding row per sequence."""
    return b * (matmul_params(c) + (2 * c.n_layers + 1) * c.dim + B * c.dim
                + (c.n_layers * (c.q_dim + 2 * c.kv_dim) if c.qkv_bias else 0))


def decode_kv_bytes(c: ModelConfig, S: int, b_kv: int) -> int:
    """KV bytes of one decode token: read S + 1 tokens' K and V in every layer, write its own."""
    return c.n_layers * 2 * c.kv_dim * b_kv * (S + 1) + c.n_layers * 2 * c.kv_dim * b_kv


@pytest.mark.parametrize("preset", list(PRESETS))
def test_formulas_match_estimate(preset, rng):
    c = PRESETS[preset]
    assert not c.qk_norm and (not c.sliding_window or c.sliding_window > 3000)    # what these formulas cover
    S = int(rng.integers(1, min(c.max_seq_len - 1, 3000)))
    B = int(rng.integers(1, 5))
    for dtype, b in (("float32", 4), ("float16", 2)):
        est = estimate(c, B, S, dtype=dtype, prompt_len=min(S, 700))
        assert est.decode.total.flops == B * decode_flops(c, S)
        assert est.decode.total.bytes_weights == decode_weight_bytes(c, B, b)
        assert est.decode.total.bytes_kv == B * decode_kv_bytes(c, S, b)
        assert est.prefill.total.flops == B * prefill_flops(c, min(S, 700))


def test_hand_computation_small_config():
    """dim 8, 2 layers, 2 heads of 4 (1 KV head: GQA), hidden 12, vocab 10; decode after 5 cached tokens."""
    c = ModelConfig(dim=8, n_layers=2, n_heads=2, n_kv_heads=1, hidden_dim=12, vocab_size=10, max_seq_len=16)
    S = 5
    # matmul weights per layer: wq 8x8=64, wk 4x8=32, wv 32, wo 64, w1 12x8=96, w3 96, w2 96 -> 480;
    # 2 layers 960, output head 10x8=80: P_mm = 1040, so 2 x P_mm = 2080 FLOPs
    matmul = 2 * 1040
    # attention: 4 x head_dim 4 x 2 heads x 6 keys = 192 per layer, 2 layers
    attention = 384
    # per layer: rmsnorm 2 x 4 x 8 = 64, rope 3 x (8 + 4) = 36, silu_mul 5 x 12 = 60, adds 2 x 8 = 16 -> 176;
    # 2 layers 352, final rmsnorm 32
    elementwise = 352 + 32
    est = estimate(c, batch=1, context=S)
    assert est.decode.total.flops == matmul + attention + elementwise == 2848
    # float32 weight bytes: 1040 matmul weights + norms 5 x 8 + one embedding row of 8 = 1088 values
    assert est.decode.total.bytes_weights == 4 * 1088
    # KV: per layer read 6 tokens x (K 4 + V 4) floats = 192 bytes, write 1 token = 32 bytes; 2 layers
    assert est.decode.total.bytes_kv == 2 * (192 + 32)
    # stored weights: embedding 80 + untied? no, tied: head shares it; layers 2 x (480 + 16 norms) + final norm 8
    assert weight_bytes(c, "float32", "float32") == 4 * (80 + 2 * 496 + 8)
