"""The short report `pyinfer run` prints after the text: tokens, latency, and the cost functions'
FLOPs and bytes per token, beside what the timings imply (achieved FLOP/s and bandwidth)."""
from __future__ import annotations

from .config import SamplingParams
from .generate import GenerationResult, count_costs


def _si(x: float, unit: str) -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.2f} {prefix}{unit}"
    return f"{x:.0f} {unit}"


def run_report(gen, result: GenerationResult, params: SamplingParams, block_size: int = 16) -> str:
    model = gen.model
    c = model.config
    counter = count_costs(model, result, block_size=block_size)
    n_prompt = len(result.prompt_ids)
    sampling = "greedy" if params.temperature == 0 else (
        f"temperature {params.temperature}, top-p {params.top_p}, top-k {params.top_k or 'off'}")
    lines = [
        "---",
        *(["note        random weights: the text is noise; try `pyinfer fetch stories260K` then "
           "`pyinfer run --model stories260K`"] if gen.source.startswith("preset") else []),
        f"model       {gen.source}: {c.n_params() / 1e6:.2f}M params, dim {c.dim}, {c.n_layers} layers, "
        f"{c.n_heads} heads ({c.n_kv_heads} KV), vocab {c.vocab_size}, context {c.max_seq_len}",
        f"backend     {model.ops.describe()}",
        f"sampling    {sampling}, seed {params.seed}",
        f"tokens      prompt {n_prompt} (BOS included), generated {result.n_generated}, "
        f"stopped by {result.stop_reason}",
        f"latency     time to first token {result.ttft_s * 1e3:.2f} ms "
        f"(prefill {n_prompt} tokens: {n_prompt / result.ttft_s:.0f} tok/s)",
    ]
    prefill = counter.total("prefill")
    lines.append(f"prefill     {_si(prefill.flops, 'FLOP')}, weights {_si(prefill.bytes_weights, 'B')}, "
                 f"KV {_si(prefill.bytes_kv, 'B')}, activations {_si(prefill.bytes_activations, 'B')}")
    n_decode = len(result.step_q_lens) - 1
    if n_decode > 0:
        per_tok = counter.total("decode").scaled(1 / n_decode)
        tps = result.decode_tokens_per_s
        lines += [
            f"decode      {tps:.1f} tokens/s ({1e3 / tps:.3f} ms/token) over {n_decode} steps",
            f"per token   {_si(per_tok.flops, 'FLOP')}, weights {_si(per_tok.bytes_weights, 'B')}, "
            f"KV {_si(per_tok.bytes_kv, 'B')}, activations {_si(per_tok.bytes_activations, 'B')} "
            f"(decode mean, from the ops' cost functions)",
            f"achieved    {_si(per_tok.flops * tps, 'FLOP/s')}, {_si(per_tok.bytes_total * tps, 'B/s')} "
            f"(intensity {per_tok.intensity:.2f} FLOP/byte)",
        ]
    else:
        lines.append("decode      no decode steps ran")
    mgr_blocks = result.kv_blocks_in_use
    lines.append(f"KV cache    {mgr_blocks} blocks of {block_size} tokens in use, {_si(result.kv_bytes_in_use, 'B')} "
                 f"(K and V, {c.n_layers} layers, float32)")
    return "\n".join(lines)
