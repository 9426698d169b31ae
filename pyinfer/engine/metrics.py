"""Serving metrics with exact definitions (docs/engine.md repeats them).

For a request with arrival time a, output tokens sampled at times t_1 <= ... <= t_N, finished at f:

    queue = s - a                            queue time, s = when a step first took the request
    TTFT  = t_1 - a                          time to first token (queueing + prefill included)
    E2E   = f - a                            end-to-end latency (f = t_N)
    TPOT  = (t_N - t_1) / (N - 1)            time per output token after the first; only N >= 2
    ITL   = t_{i+1} - t_i, i = 1..N-1        inter-token latencies, pooled over all requests

Over a run of R finished requests, duration D = max(f) - min(a):

    request throughput     = R / D
    output token throughput = sum(N) / D
    total token throughput  = sum(prompt_len + N) / D
    goodput                = #(requests with TTFT <= ttft_target and TPOT <= tpot_target) / D
                             (a request with N = 1 has no TPOT and is judged on TTFT alone)

Each latency is summarised as mean, p50, p90 and p99, percentiles by numpy's default linear
interpolation between order statistics. All times in seconds from ``time.perf_counter``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RequestMetrics:
    arrival_s: float
    token_times_s: tuple[float, ...]    # (N,) when each output token was sampled
    finish_s: float | None
    prompt_len: int
    num_output_tokens: int
    num_preemptions: int = 0
    num_cached_tokens: int = 0
    first_scheduled_s: float | None = None   # when a step first took the request

    @property
    def queue_s(self) -> float | None:
        """Time waiting before a step first took it (vLLM's queued time)."""
        return None if self.first_scheduled_s is None else self.first_scheduled_s - self.arrival_s

    @property
    def ttft_s(self) -> float:
        return self.token_times_s[0] - self.arrival_s

    @property
    def e2e_s(self) -> float:
        return self.finish_s - self.arrival_s

    @property
    def tpot_s(self) -> float | None:
        n = len(self.token_times_s)
        return (self.token_times_s[-1] - self.token_times_s[0]) / (n - 1) if n >= 2 else None

    @property
    def itl_s(self) -> list[float]:
        return list(np.diff(self.token_times_s))


def latency_summary(values) -> dict[str, float]:
    """mean, p50, p90, p99 of a list of seconds (NaN for an empty list), in seconds."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return {"mean": float("nan"), "p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "n": 0}
    p50, p90, p99 = np.percentile(v, [50, 90, 99])
    return {"mean": float(v.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99), "n": int(v.size)}


def summarize(metrics: list[RequestMetrics], ttft_target_s: float | None = None,
              tpot_target_s: float | None = None) -> dict:
    """The run's latency distributions, throughputs and goodput, as a JSON-ready dict."""
    if not metrics:
        raise ValueError("no finished requests to summarise")
    start = min(m.arrival_s for m in metrics)
    duration = max(m.finish_s for m in metrics) - start
    n_out = sum(m.num_output_tokens for m in metrics)
    n_prompt = sum(m.prompt_len for m in metrics)
    tpots = [m.tpot_s for m in metrics if m.tpot_s is not None]
    good = [m for m in metrics
            if (ttft_target_s is None or m.ttft_s <= ttft_target_s)
            and (tpot_target_s is None or m.tpot_s is None or m.tpot_s <= tpot_target_s)]
    per_s = (lambda x: x / duration) if duration > 0 else (lambda x: float("nan"))
    return {
        "num_requests": len(metrics),
        "duration_s": duration,
        "prompt_tokens": n_prompt,
        "output_tokens": n_out,
        "ttft_s": latency_summary(m.ttft_s for m in metrics),
        "tpot_s": latency_summary(tpots),
        "itl_s": latency_summary(x for m in metrics for x in m.itl_s),
        "e2e_s": latency_summary(m.e2e_s for m in metrics),
        "request_throughput_per_s": per_s(len(metrics)),
        "output_token_throughput_per_s": per_s(n_out),
        "total_token_throughput_per_s": per_s(n_out + n_prompt),
        "goodput": {"ttft_target_s": ttft_target_s, "tpot_target_s": tpot_target_s,
                    "good_requests": len(good), "fraction": len(good) / len(metrics),
                    "requests_per_s": per_s(len(good))},
        "preemptions": sum(m.num_preemptions for m in metrics),
        "prefix_cached_prompt_tokens": sum(m.num_cached_tokens for m in metrics),
    }


def format_summary(s: dict) -> str:
    """A plain-text table of ``summarize``'s output, latencies in milliseconds."""
    lines = [f"{'metric':<22}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}   (ms)"]
    for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL"), ("e2e_s", "E2E latency")):
        d = s[key]
        lines.append(f"{label:<22}" + "".join(f"{1e3 * d[q]:>10.2f}" for q in ("mean", "p50", "p90", "p99")))
    g = s["goodput"]
    targets = ", ".join(f"{name} <= {1e3 * v:g} ms" for name, v in (("TTFT", g["ttft_target_s"]),
                                                                    ("TPOT", g["tpot_target_s"])) if v is not None)
    lines += [
        f"requests              {s['num_requests']} in {s['duration_s']:.2f} s: "
        f"{s['request_throughput_per_s']:.2f} req/s",
        f"tokens                {s['prompt_tokens']} prompt + {s['output_tokens']} output: "
        f"{s['output_token_throughput_per_s']:.1f} output tok/s, {s['total_token_throughput_per_s']:.1f} total tok/s",
        f"goodput               {g['requests_per_s']:.2f} req/s ({100 * g['fraction']:.1f}% of requests"
        + (f" meet {targets})" if targets else ", no targets set)"),
        f"preemptions           {s['preemptions']}; prompt tokens from the prefix cache "
        f"{s['prefix_cached_prompt_tokens']}",
    ]
    return "\n".join(lines)
