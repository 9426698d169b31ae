"""`pyinfer bench serve` (replay a synthetic arrival trace, print the serving metrics) and
`pyinfer bench sweep` (the same trace at several batch caps or arrival rates: the
latency-throughput curve, as JSON and a PNG)."""
from __future__ import annotations

import argparse
import math
import os
import sys

from ..config import PRESETS
from ..threads import add_threads_option
from .jsonout import add_json_option, emit_json, json_safe, quiet_stdout_if_json


def _add_common(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="checkpoint path or fetched name (stories260K)")
    src.add_argument("--preset", choices=sorted(PRESETS), help="shape preset with seeded random weights (default: toy)")
    p.add_argument("--tokenizer", help="llama2.c tokenizer .bin (default: the fetched one or one beside the model)")
    p.add_argument("--backend", default=None, help="kernel backend (default: the fastest that loads here: "
                                                   "c, else numba, else numpy)")
    add_threads_option(p)
    p.add_argument("--weights-seed", type=int, default=0, help="seed of a preset's random weights")
    t = p.add_argument_group("trace")
    t.add_argument("--num-requests", type=int, default=100)
    t.add_argument("--rate", type=float, default=math.inf,
                   help="Poisson arrival rate, requests/s (default inf: all at once)")
    t.add_argument("--prompt-len", default="uniform:16:64", help="N | uniform:LO:HI | normal:MEAN:STD | exp:MEAN")
    t.add_argument("--output-len", default="uniform:16:64", help="same forms as --prompt-len")
    t.add_argument("--seed", type=int, default=0, help="seed of the trace and of request i's sampler (seed + i)")
    t.add_argument("--temperature", type=float, default=0.0)
    e = p.add_argument_group("engine")
    e.add_argument("--max-num-seqs", type=int, default=32, help="batch cap: sequences running at once")
    e.add_argument("--max-num-batched-tokens", type=int, default=512, help="token budget of one step")
    e.add_argument("--block-size", type=int, default=16)
    e.add_argument("--num-blocks", type=int, default=0, help="KV pool size in blocks (0: automatic)")
    e.add_argument("--no-prefix-caching", action="store_true")
    g = p.add_argument_group("report")
    g.add_argument("--ttft-target-ms", type=_target_ms, default=None, help="goodput: TTFT target")
    g.add_argument("--tpot-target-ms", type=_target_ms, default=None, help="goodput: TPOT target")
    add_json_option(g)
    g.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _target_ms(text: str) -> float:
    """A goodput target: a finite number of milliseconds > 0 (NaN, inf and negatives refused)."""
    import argparse
    import math
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number of milliseconds > 0, got {text!r}")
    return v


def register_bench(bench_sub) -> None:
    serve = bench_sub.add_parser("serve", help="replay a synthetic Poisson trace through the engine; latency metrics")
    _add_common(serve)
    h = serve.add_argument_group("over HTTP")
    h.add_argument("--url", help="also replay the same trace over HTTP against `pyinfer serve` at this URL "
                                 "(e.g. http://127.0.0.1:8000), streaming clients, reported beside the in-process run")
    h.add_argument("--disconnect-fraction", type=float, default=0.0,
                   help="with --url: this share of clients close their stream after the first chunk (default 0)")
    h.add_argument("--http-timeout", type=float, default=600.0, help="with --url: give up after this many seconds")
    serve.set_defaults(handler=_serve)
    sweep = bench_sub.add_parser("sweep", help="the same trace at several batch caps or rates: latency vs throughput")
    _add_common(sweep)
    sweep.add_argument("--vary", choices=("max-num-seqs", "rate"), default="max-num-seqs")
    sweep.add_argument("--values", default="1,2,4,8,16,32", help="comma-separated values of --vary")
    sweep.add_argument("--png", default="sweep.png", help="where to draw the curve (matplotlib)")
    sweep.set_defaults(handler=_sweep)


def _load(args):
    from ..api import load
    preset = args.preset or ("toy" if args.model is None else None)
    return load(model=args.model, tokenizer=args.tokenizer, preset=preset, backend=args.backend,
                seed=args.weights_seed, threads=args.threads)


def _trace(gen, args):
    from ..engine.trace import LengthDist, synthetic_trace
    c = gen.model.config
    return synthetic_trace(args.num_requests, args.rate, LengthDist.parse(args.prompt_len),
                           LengthDist.parse(args.output_len), c.vocab_size, c.max_seq_len, args.seed)


def _run_point(gen, args) -> dict:
    from ..config import SamplingParams
    from ..engine import Engine, EngineConfig
    from ..engine.metrics import summarize
    from ..engine.trace import progress_bar, replay

    trace = _trace(gen, args)
    config = EngineConfig(max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                          block_size=args.block_size, num_blocks=args.num_blocks,
                          enable_prefix_caching=not args.no_prefix_caching)
    engine = Engine(gen.model, gen.tokenizer, config)
    params = SamplingParams(temperature=args.temperature, seed=args.seed)
    outputs = replay(engine, trace, params, None if args.no_progress else progress_bar)
    ms = (lambda v: None if v is None else v / 1e3)
    summary = summarize([o.metrics for o in outputs], ms(args.ttft_target_ms), ms(args.tpot_target_ms))
    return {"trace": {"num_requests": args.num_requests, "rate_per_s": args.rate, "prompt_len": args.prompt_len,
                      "output_len": args.output_len, "seed": args.seed, "temperature": args.temperature},
            "engine_config": config.to_dict(), "engine": engine.stats(), "summary": summary}


def _header(gen) -> dict:
    from ..engine.machine import machine_info
    c = gen.model.config
    t = gen.threads
    return {"machine": machine_info(), "model": gen.source, "backend": gen.model.ops.backend,
            "backend_detail": gen.model.ops.describe(), "threads": t.count if t else None,
            "threads_reason": t.reason if t else None,
            "params": c.n_params(), "dim": c.dim, "n_layers": c.n_layers, "vocab_size": c.vocab_size}


def _threads_line(gen) -> str:
    return f"threads {gen.threads.count} ({gen.threads.reason})" if gen.threads else "threads unknown"


def _serve(args) -> int:
    with quiet_stdout_if_json(args):
        result = _serve_report(args)
    emit_json(args, result)
    return 0


def _serve_report(args) -> dict:
    from ..engine.metrics import format_summary
    from ..threads import CoreMonitor
    gen = _load(args)
    monitor = CoreMonitor()
    point = _run_point(gen, args)
    use = monitor.stop()
    e = point["engine"]
    print(f"model {gen.source}, {gen.model.ops.describe()}, {_threads_line(gen)}")
    print(f"trace {args.num_requests} requests, rate {args.rate:g}/s, prompt {args.prompt_len}, "
          f"output {args.output_len}, seed {args.seed}")
    print(f"engine max_num_seqs {args.max_num_seqs}, max_num_batched_tokens {args.max_num_batched_tokens}, "
          f"{e['num_blocks']} blocks of {e['block_size']}, {e['steps']} steps, prefix cache hit rate "
          f"{100 * e['prefix_cache_hit_rate']:.1f}%")
    print(format_summary(point["summary"]))
    http = _http_point(gen, args, point) if getattr(args, "url", None) else None
    warning = use.busy_warning() if use else None
    if warning:
        print(f"warning: {warning}")
    return {**_header(gen), **point, **({"http": http} if http else {}), "busy_warning": warning}


def _http_point(gen, args, point: dict) -> dict:
    """The same trace over HTTP, its client-side summary beside the in-process one."""
    from ..engine.metrics import summarize
    from ..serve.client import http_replay
    if not args.url.startswith(("http://", "https://")):
        raise ValueError(f"--url {args.url!r} must start with http:// or https://")
    got = http_replay(args.url, _trace(gen, args), args.temperature, args.seed, args.disconnect_fraction,
                      args.http_timeout)
    ms = (lambda v: None if v is None else v / 1e3)
    summary = summarize(got["metrics"], ms(args.ttft_target_ms), ms(args.tpot_target_ms)) if got["metrics"] else None
    i = got["integrity"]
    print(f"\nover HTTP ({args.url}, streaming clients, {i['disconnected']} disconnecting after their first chunk)")
    if summary:
        print(side_by_side(point["summary"], summary))
    a = i["after"]
    print(f"integrity: {i['completed']} completed, {i['disconnected']} disconnected, {i['lost']} lost, "
          f"{i['malformed']} malformed, {i['duplicated_ids']} duplicated; after settling: running {a['running']}, "
          f"waiting {a['waiting']}, KV blocks used {a['kv_blocks_used']}")
    return {"url": args.url, "disconnect_fraction": args.disconnect_fraction, "summary": summary, "integrity": i}


def side_by_side(local: dict, http: dict) -> str:
    """In-process replay vs HTTP clients: the overhead of HTTP, SSE and the engine thread, in ms."""
    lines = [f"{'metric (ms)':<24}{'in-process':>12}{'HTTP':>12}{'HTTP - in':>12}"]
    for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL"), ("e2e_s", "E2E")):
        for q in ("mean", "p50", "p99"):
            a, b = 1e3 * local[key][q], 1e3 * http[key][q]
            lines.append(f"{label + ' ' + q:<24}{a:>12.2f}{b:>12.2f}{b - a:>12.2f}")
    for key, label in (("output_token_throughput_per_s", "output tok/s"), ("request_throughput_per_s", "req/s")):
        a, b = local[key], http[key]
        lines.append(f"{label:<24}{a:>12.2f}{b:>12.2f}{b - a:>12.2f}")
    return "\n".join(lines)


def _sweep(args) -> int:
    with quiet_stdout_if_json(args):
        result = _sweep_report(args)
    emit_json(args, result)
    return 0


def _sweep_report(args) -> dict:
    gen = _load(args)
    print(f"model {gen.source}, {gen.model.ops.describe()}, {_threads_line(gen)}")
    key = args.vary.replace("-", "_")
    try:
        values = [float(v) if key == "rate" else int(v) for v in args.values.split(",")]
    except ValueError:
        raise ValueError(f"--values must be comma-separated numbers, got {args.values!r}") from None
    points = []
    print(f"{args.vary:>14} {'out tok/s':>10} {'req/s':>8} {'TPOT mean':>10} {'TTFT p50':>10} {'TTFT p99':>10} "
          f"{'E2E p99':>10}  (ms)")
    for v in values:
        point = _run_point(gen, replace_ns(args, **{key: v, "no_progress": True}))
        s = point["summary"]
        print(f"{v:>14g} {s['output_token_throughput_per_s']:>10.1f} {s['request_throughput_per_s']:>8.2f} "
              f"{1e3 * s['tpot_s']['mean']:>10.2f} {1e3 * s['ttft_s']['p50']:>10.2f} {1e3 * s['ttft_s']['p99']:>10.2f} "
              f"{1e3 * s['e2e_s']['p99']:>10.2f}")
        sys.stdout.flush()
        points.append({args.vary: v, **point})
    _plot(points, args.vary, args.png, os.path.basename(str(gen.source)))
    return {**_header(gen), "vary": args.vary, "points": points}


def replace_ns(ns: argparse.Namespace, **changes) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(ns), **changes})


def _plot(points: list[dict], vary: str, png: str, title: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG drawn (pip install matplotlib)", file=sys.stderr)
        return
    x = [p["summary"]["output_token_throughput_per_s"] for p in points]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((a1, "tpot_s", "time per output token (ms)"), (a2, "ttft_s", "time to first token (ms)")):
        for q, style in (("mean", "o-"), ("p99", "s--")):
            ax.plot(x, [1e3 * p["summary"][key][q] for p in points], style, label=q)
        for xi, p in zip(x, points):
            ax.annotate(f"{p[vary]:g}", (xi, 1e3 * p["summary"][key]["mean"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
        ax.set_xlabel("output tokens / s (throughput)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(title=f"labels: {vary}")
    fig.suptitle(f"latency vs throughput: {title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    print(f"wrote {png}")
