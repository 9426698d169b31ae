"""What `pyinfer run` measures and reports after the text.

``measure_run`` runs a warm-up pass first (Numba's compile, first touch of the weights and the KV
cache: one-time costs, timed and reported as ``compile_s`` but kept out of every figure), then the
timed repetitions, watching /proc/stat meanwhile for other processes using our cores.
``run_summary`` turns that into one flat dict (the ``--json`` object): tokens, TTFT, prefill and
decode tokens/s (median, with min and max when repeated), the ops' cost functions' FLOPs and bytes per
decode token, and where that sits against this machine's measured ceilings (``this-cpu``: bandwidth
for the decode step's working set, the peak of each op's compute type). ``format_report`` prints it.
A figure that was not measured (no decode step ran) is None, never NaN.
"""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, replace

from .config import SamplingParams
from .generate import GenerationResult, count_costs
from .threads import CoreMonitor, CoreUse

CPU_BACKENDS = ("numpy", "c", "numba")


@dataclass
class RunMeasurement:
    results: list[GenerationResult]    # the timed repetitions, in order
    warmup_s: float | None             # the warm-up pass's wall time (None: no warm-up ran)
    compile_s: float | None            # warm-up time beyond what the same work took when timed
    core_use: CoreUse | None           # other processes on our cores during the timed repetitions


def measure_run(gen, prompt: str, steps: int, params: SamplingParams, repeat: int = 1, on_text=None,
                block_size: int = 16, warmup: bool = True, messages: list | None = None) -> tuple[str, RunMeasurement]:
    """(text of the first timed repetition, the measurement). Repetitions after the first
    detokenise as the first does but do not call ``on_text`` (the text is printed once). With
    ``messages`` the run is a chat turn (the model's chat template; ``steps`` new tokens at most)."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")

    def once(steps_: int, params_: SamplingParams, on_text_):
        if messages is not None:
            return gen.chat(messages, max_tokens=steps_, params=params_, on_text=on_text_, block_size=block_size)
        return gen.generate(prompt, steps=steps_, params=params_, on_text=on_text_, block_size=block_size)

    warmup_s = None
    if warmup:
        # the prompt's prefill and one decode step, whatever is sampled
        n_new = 2 if messages is not None else len(gen.tokenizer.encode(prompt, bos=True)) + 1
        t0 = time.perf_counter()
        once(n_new, replace(params, stop_token_ids=(), ignore_eos=True), None)
        warmup_s = time.perf_counter() - t0
    monitor = CoreMonitor()
    text, results = "", []
    for i in range(repeat):
        done = once(steps, params, on_text if i == 0 else None)
        text = done.text if i == 0 else text
        results.append(done.result)
    use = monitor.stop()
    compile_s = None
    if warmup_s is not None:
        r = results[0]
        per_token = r.decode_time_s / (r.n_generated - 1) if r.n_generated > 1 else 0.0
        compile_s = max(0.0, warmup_s - r.ttft_s - per_token)
    return text, RunMeasurement(results, warmup_s, compile_s, use)


def _spread(values: list[float | None], name: str) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {name: None} if len(values) == 1 else {name: None, f"{name}_min": None, f"{name}_max": None}
    out = {name: statistics.median(vals)}
    if len(values) > 1:
        out.update({f"{name}_min": min(vals), f"{name}_max": max(vals)})
    return out


def run_summary(gen, m: RunMeasurement, params: SamplingParams, block_size: int = 16,
                ceilings: bool = True) -> dict:
    """The report as one flat dict (strict-JSON-ready once NaN-free: unmeasured figures are None)."""
    model, r0 = gen.model, m.results[0]
    c = model.config
    n_prompt = len(r0.prompt_ids)
    n_decode = len(r0.step_q_lens) - 1               # decode forward passes of each repetition
    counter = count_costs(model, r0, block_size=block_size)
    prefill, decode = counter.total("prefill"), (counter.total("decode") if n_decode > 0 else None)
    per_tok = decode.scaled(1 / n_decode) if decode is not None else None
    timed_decode = [r.n_generated - 1 for r in m.results]
    d = {
        "model": gen.source, "backend": model.ops.backend, "backend_detail": model.ops.describe(),
        "threads": gen.threads.count if gen.threads else None,
        "threads_reason": gen.threads.reason if gen.threads else None,
        "params": c.n_params(), "seed": params.seed, "temperature": params.temperature,
        "top_p": params.top_p, "top_k": params.top_k, "repeat": len(m.results),
        "prompt_tokens": n_prompt, "generated_tokens": r0.n_generated, "stop_reason": r0.stop_reason,
        **_spread([r.ttft_s for r in m.results], "ttft_s"),
        "prefill_tokens": r0.step_q_lens[0],        # fewer than prompt_tokens when --steps ends inside the prompt
        **_spread([r.step_q_lens[0] / r.ttft_s if r.ttft_s > 0 else None for r in m.results], "prefill_tokens_per_s"),
        **_spread([(k / r.decode_time_s) if k > 0 and r.decode_time_s > 0 else None
                   for k, r in zip(timed_decode, m.results)], "decode_tokens_per_s"),
        "decode_steps": max(0, r0.n_generated - 1),
        "prefill_flops": prefill.flops, "prefill_bytes": prefill.bytes_total,
        "flops_per_token": per_tok.flops if per_tok else None,
        "bytes_per_token": per_tok.bytes_total if per_tok else None,
        "bytes_weights_per_token": per_tok.bytes_weights if per_tok else None,
        "bytes_kv_per_token": per_tok.bytes_kv if per_tok else None,
        "bytes_activations_per_token": per_tok.bytes_activations if per_tok else None,
        "compile_s": m.compile_s, "warmup_s": m.warmup_s,
        "kv_blocks_in_use": r0.kv_blocks_in_use, "kv_bytes_in_use": r0.kv_bytes_in_use, "block_size": block_size,
        "busy_warning": m.core_use.busy_warning() if m.core_use else None,
        "others_busy_cores": m.core_use.others_busy_cores if m.core_use else None,
        "steal_fraction": m.core_use.steal_fraction if m.core_use else None,
    }
    tps = d["decode_tokens_per_s"]
    d["achieved_flops_per_s"] = per_tok.flops * tps if per_tok and tps else None
    d["achieved_bytes_per_s"] = per_tok.bytes_total * tps if per_tok and tps else None
    d.update(_against_ceilings(gen, counter, n_decode, tps, ceilings))
    return d


def _against_ceilings(gen, counter, n_decode: int, tps: float | None, ceilings: bool) -> dict:
    """bound, % of this CPU's bandwidth (for the decode step's working set) and % of its peak."""
    none = {"bound": None, "device": None, "bandwidth_ceiling_bytes_per_s": None, "pct_of_bandwidth": None,
            "pct_of_peak": None, "ceilings_note": None}
    backend = gen.model.ops.backend
    if not ceilings:
        return {**none, "ceilings_note": "not asked (--no-ceilings)"}
    if backend not in CPU_BACKENDS:
        return {**none, "ceilings_note": f"backend {backend} runs on a device this-cpu does not describe"}
    if n_decode < 1 or not tps:
        return {**none, "ceilings_note": "no decode step was timed"}
    from .analysis.hardware import this_cpu
    from .analysis.roofline import predict_counter
    device = this_cpu(threads=gen.threads.count if gen.threads else None)
    per_step = sum(cst.bytes_total for (ph, _), cst in counter.by_key.items() if ph == "decode") / n_decode
    r = predict_counter(counter, "decode", device, working_set=per_step)
    measured_s = 1.0 / tps                                      # one decode step, median
    return {"bound": r.bound, "device": device.full_name, "bandwidth_ceiling_bytes_per_s": r.bandwidth,
            "pct_of_bandwidth": 100 * (r.memory_s / n_decode) / measured_s,
            "pct_of_peak": 100 * (r.compute_s / n_decode) / measured_s,
            "ceilings_note": f"this-cpu measured with {device.extra.get('threads', 0):.0f} thread(s); "
                             f"bandwidth for a {per_step / 2**20:.2f} MiB working set"}


def _si(x: float | None, unit: str) -> str:
    if x is None:
        return "n/a"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.2f} {prefix}{unit}"
    return f"{x:.0f} {unit}"


def _rate(d: dict, key: str) -> str:
    if d[key] is None:
        return "not measured"
    text = f"{d[key]:.1f} tokens/s"
    if f"{key}_min" in d and d[f"{key}_min"] is not None:
        text += f" (median of {d['repeat']}, min {d[f'{key}_min']:.1f}, max {d[f'{key}_max']:.1f})"
    return text


def format_report(gen, d: dict) -> str:
    c = gen.model.config
    sampling = "greedy" if d["temperature"] == 0 else (
        f"temperature {d['temperature']}, top-p {d['top_p']}, top-k {d['top_k'] or 'off'}")
    lines = [
        "---",
        *(["note        random weights: the text is noise; try `pyinfer fetch stories260K` then "
           "`pyinfer run --model stories260K`"] if gen.source.startswith("preset") else []),
        f"model       {gen.source}: {c.n_params() / 1e6:.2f}M params, dim {c.dim}, {c.n_layers} layers, "
        f"{c.n_heads} heads ({c.n_kv_heads} KV), vocab {c.vocab_size}, context {c.max_seq_len}",
        f"backend     {d['backend_detail']}",
        f"threads     {d['threads']} ({d['threads_reason']})" if d["threads"] else "threads     unknown",
        f"sampling    {sampling}, seed {d['seed']}",
        f"tokens      prompt {d['prompt_tokens']} (BOS included), generated {d['generated_tokens']}, "
        f"stopped by {d['stop_reason']}",
        f"one-time    warm-up pass {d['warmup_s']:.3f} s, of which compile and first touch ~{d['compile_s']:.3f} s "
        f"(kept out of the figures below)" if d["warmup_s"] is not None else "one-time    no warm-up: figures include compile",
        f"latency     time to first token {1e3 * d['ttft_s']:.2f} ms",
        f"prefill     {d['prefill_tokens']} tokens: {_rate(d, 'prefill_tokens_per_s')}; {_si(d['prefill_flops'], 'FLOP')}, "
        f"{_si(d['prefill_bytes'], 'B')} moved",
    ]
    if d["decode_tokens_per_s"] is not None:
        tps = d["decode_tokens_per_s"]
        lines += [
            f"decode      {_rate(d, 'decode_tokens_per_s')}, {1e3 / tps:.3f} ms/token over {d['decode_steps']} steps",
            f"per token   {_si(d['flops_per_token'], 'FLOP')}, weights {_si(d['bytes_weights_per_token'], 'B')}, "
            f"KV {_si(d['bytes_kv_per_token'], 'B')}, activations {_si(d['bytes_activations_per_token'], 'B')} "
            f"(decode mean, from the ops' cost functions)",
            f"achieved    {_si(d['achieved_flops_per_s'], 'FLOP/s')}, {_si(d['achieved_bytes_per_s'], 'B/s')}",
        ]
    else:
        why = "the first sampled token was a stop token" if d["stop_reason"].startswith("stop") else "too few steps"
        lines.append(f"decode      not measured: {d['decode_steps']} decode steps timed ({why})")
    if d["bound"] is not None:
        lines.append(f"ceilings    {d['bound']}-bound on this CPU: {d['pct_of_bandwidth']:.0f}% of its bandwidth "
                     f"({_si(d['bandwidth_ceiling_bytes_per_s'], 'B/s')}), {d['pct_of_peak']:.0f}% of its peak "
                     f"compute ({d['ceilings_note']})")
    elif d["ceilings_note"]:
        lines.append(f"ceilings    none: {d['ceilings_note']}")
    lines.append(f"KV cache    {d['kv_blocks_in_use']} blocks of {d['block_size']} tokens in use, "
                 f"{_si(d['kv_bytes_in_use'], 'B')} (K and V, {c.n_layers} layers, float32)")
    if d["busy_warning"]:
        lines.append(f"warning     {d['busy_warning']}")
    return "\n".join(lines)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
