"""The levers study's analytic side and quality measurement.

Prediction of a lever's output tokens/s over the trace: the trace's prefills and decode steps priced by
the roofline (pyinfer.analysis.estimate's op costs on a device) at the lever's concurrency c (1 one at a
time, else min(max_num_seqs, requests)):

    time = (N / c) x t(c sequences x mean prompt tokens not served by the prefix cache)
         + (output tokens / c) x t(c sequences x 1 token, at the mean context)

with speculative decoding dividing the decode term by the #14 model's speedup
E(a, k) t_target / (k t_draft + t_verify) (pyinfer.analysis.speculative) at the measured acceptance a,
and the draft's own prefill of the same prompt tokens added to the prefill term (it runs in lockstep).
Chunked prefill moves latency between requests, not work: predicted equal to the row it stacks on.
On this machine each step also pays a fixed overhead (Python, the engine, the sampler) fitted once, on
the first lever's measured TPOT p50 minus its nominal step: "calibrated"; it has no per-sequence term, so
where per-sequence Python dominates a step (a tiny model) it overstates what batching buys. On --hw: the
expected figure (pyinfer.analysis.expected: kernel efficiencies and a launch time per kernel, CUDA graphs),
the roofline where the catalog has no kernel figures; the engine's own overhead is not in it.
"""
from __future__ import annotations

import numpy as np

from ..analysis.estimate import uniform_step_cost
from ..analysis.expected import expected_step
from ..analysis.roofline import predict
from ..analysis.speculative import speculative_speedup
from ..config import SamplingParams
from ..generate import generate


def step_s(config, device, weights: str, batch: int, q_len: int, cached: int, expected: bool = False) -> float:
    """The roofline time of one step; ``expected``: the expected figure instead (pyinfer.analysis.expected:
    the fractions real kernels reach and a launch time per kernel, CUDA graphs on) where the device has
    kernel figures, else the roofline."""
    q_len = max(1, min(q_len, config.max_seq_len - cached))
    cached = max(0, min(cached, config.max_seq_len - q_len))
    step = uniform_step_cost(config, batch, q_len, cached, weights=weights,
                             phase="decode" if q_len == 1 else "prefill")
    if expected:
        x = expected_step(step, device, weights, cuda_graphs=True)
        if x is not None:
            return x.time_s
    return predict(step, device).time_s


def _trace_time(config, device, row: dict, res: dict, args, overhead_s: float, expected: bool = False) -> float:
    trace = res["trace"]
    n = len(trace)
    serial = row["engine_config"]["max_num_seqs"] == 1 and not row["speculative"]
    conc = 1 if serial else min(args.max_num_seqs, n)
    prompt = np.mean([len(r.prompt_ids) for r in trace])
    saved = row.get("prefix_cached_prompt_tokens", 0) / n
    out = sum(r.max_tokens for r in trace)
    ctx = int(prompt + np.mean([r.max_tokens for r in trace]) / 2)
    w = row["weights"]
    t_pre = step_s(config, device, w, conc, int(round(prompt - saved)), 0, expected) + overhead_s
    t_dec = step_s(config, device, w, conc, 1, ctx, expected) + overhead_s
    decode = out / conc * t_dec
    spec = row.get("spec")
    if spec:
        a = spec["acceptance_rate"]
        a = 0.0 if not isinstance(a, float) or a != a else a
        k = spec["k"]
        draft = config.with_(n_layers=res["draft_layers"])
        t_draft = step_s(draft, device, w, conc, 1, ctx, expected) + overhead_s
        t_verify = step_s(config, device, w, conc, k + 1, ctx, expected) + overhead_s
        decode /= speculative_speedup(a, k, t_dec, t_draft, t_verify)
        t_pre += step_s(draft, device, w, conc, int(round(prompt - saved)), 0, expected)   # the draft's prefill
    return n / conc * t_pre + decode


def lever_predictions(config, res: dict, args, here, hw) -> list[dict]:
    rows = res["rows"]
    first = rows[0]
    ctx = int(np.mean([len(r.prompt_ids) for r in res["trace"]]) + np.mean([r.max_tokens for r in res["trace"]]) / 2)
    tpot0 = first["tpot_s"]["p50"]
    nominal1 = step_s(config, here, first["weights"], 1, 1, ctx)
    overhead = max(0.0, (tpot0 or nominal1) - nominal1)
    out = []
    prev = None
    for row in rows:
        chunk_only = "chunked prefill" in row["lever"] and prev is not None
        tokens = sum(r.max_tokens for r in res["trace"])
        if chunk_only:
            p = dict(prev)
        else:
            p = {"predicted_tokens_per_s": tokens / _trace_time(config, here, row, res, args, overhead),
                 "predicted_nominal_tokens_per_s": tokens / _trace_time(config, here, row, res, args, 0.0),
                 "predicted_hw_tokens_per_s": tokens / _trace_time(config, hw, row, res, args, 0.0, True)}
            p["predicted_hw_usd_per_m_output_tokens"] = None if hw.price_per_hour is None else \
                hw.price_per_hour / 3600 / p["predicted_hw_tokens_per_s"] * 1e6
        p["prediction_overhead_s_per_step"] = overhead
        out.append(p)
        prev = p
    return out


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _all_logits(model, tokens) -> np.ndarray:
    cache = model.new_cache(num_blocks=-(-len(tokens) // 16) + 1, block_size=16)
    return model.forward(cache.prepare([0], [np.asarray(tokens, np.int64)]), cache, all_logits=True)   # (T, V)


def quality_vs_f32(base, models: dict, n_tokens: int, seed: int) -> dict:
    """Mean KL(p_f32 || p_fmt) and top-1 agreement per format, teacher-forced over text the float32 model
    sampled (seeded), as benchmarks/quant_quality.py measures them."""
    n = min(n_tokens, base.config.max_seq_len)
    text = generate(base, [1], n, SamplingParams(temperature=1.0, top_p=0.95, seed=seed + 1))
    tokens = ([1] + list(text.output_ids))[:n]
    ref = _log_softmax(_all_logits(base, tokens))
    out = {"float32": {"mean_kl": 0.0, "top1_agreement": 1.0, "tokens": len(tokens)}}
    for fmt, m in models.items():
        if fmt == "float32":
            continue
        lq = _log_softmax(_all_logits(m, tokens))
        kl = np.sum(np.exp(ref) * (ref - lq), axis=1)                          # (T,)
        out[fmt] = {"mean_kl": float(kl.mean()), "top1_agreement": float(np.mean(ref.argmax(1) == lq.argmax(1))),
                    "tokens": len(tokens)}
    return out
