"""The levers study's command body: run, table, JSON, waterfall plot, the closing sentence."""
from __future__ import annotations

import datetime

from .levers import run_levers, summary_json


def _c(x, fmt: str) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, str):
        return "n/a" if x.startswith("n/a") else x
    return format(x, fmt)


def format_table(data: dict) -> str:
    lines = [f"study levers: {data['model']} ({data['source']}), backend {data['backend']}, {data['threads']} "
             f"thread(s), {data['machine']}, {data['date']}",
             f"trace: {data['trace']['num_requests']} requests, {data['trace']['rate_per_s']:g}/s, prompt "
             f"{data['trace']['prompt_len']} (+{data['trace']['system_prompt_len']} shared on "
             f"{data['trace']['shared_fraction']:.0%}), output {data['trace']['output_len']}, seed {data['seed']}, greedy",
             f"{'lever':<44}{'tok/s':>8}{'x prev':>7}{'x first':>8}{'pred':>8}{'H100 pred':>10}"
             f"{'TTFT p50/p99 ms':>17}{'TPOT p50/p99 ms':>17}{'$/M tok':>10}{'mJ/tok':>9}{'KL':>9}{'top-1':>7}{'accept':>8}"]
    for r in data["levers"]:
        t, p = r["ttft_s"], r["tpot_s"]
        acc = r["spec"]["acceptance_rate"] if r.get("spec") else None
        lines.append(
            f"{r['lever'][:43]:<44}{r['output_tokens_per_s']:>8.0f}{r['factor_vs_previous']:>7.2f}"
            f"{r['factor_vs_first']:>8.2f}{r['predicted_tokens_per_s']:>8.0f}{r['predicted_hw_tokens_per_s']:>10.0f}"
            f"{1e3 * (t['p50'] or 0):>8.1f}/{1e3 * (t['p99'] or 0):<8.1f}{1e3 * (p['p50'] or 0):>8.2f}/"
            f"{1e3 * (p['p99'] or 0):<8.2f}{_c(r['usd_per_m_output_tokens'], '.3g'):>10}"
            f"{_c(None if r['joules_per_output_token'] is None else 1e3 * r['joules_per_output_token'], '.3g'):>9}"
            f"{_c(r['mean_kl_vs_f32'], '.4f'):>9}"
            f"{_c(r['top1_agreement_vs_f32'], '.3f'):>7}{_c(acc, '.3f') if r.get('spec') else '':>8}")
    lines.append("pred: this machine's roofline + one per-step overhead fitted on the first row's TPOT; H100 pred: "
                 f"expected kernels on {data['hw']} (CUDA graphs; speculative at the measured acceptance); KL / top-1: "
                 "teacher-forced against float32 (rows after int4 keep int4's: batching, prefix caching, greedy "
                 "speculative decoding and chunking do not change the math)")
    if data["random_weights"]:
        lines.append("quality and acceptance: n/a (random weights): they mean something only on a trained model")
    price = data["price"]
    if price["note"]:
        lines.append(f"note: {price['note']}")
    else:
        lines.append(f"$ and J: ${price['usd_per_hour']:.4g}/h ({price['usd_per_hour_from']}), "
                     f"{price['watts']:.3g} W ({price['watts_from']}; CPU only); derived, output tokens/s measured")
    if data.get("busy_warning"):
        lines.append(f"warning: {data['busy_warning']}")
    lines.append(data["answer"])
    return "\n".join(lines)


def run_levers_command(args, load, name_of) -> int:
    from ..analysis.hardware import get_device, this_cpu
    from ..analysis.plots import levers_waterfall_plot
    from ..commands.jsonout import emit_json, quiet_stdout_if_json
    from ..threads import CoreMonitor

    if args.quick:
        args.num_requests = min(args.num_requests, 8)
        args.output_len = "uniform:8:24" if args.output_len == "uniform:32:96" else args.output_len
        args.quality_tokens = min(args.quality_tokens, 64)
        args.repeats = 1
    with quiet_stdout_if_json(args):
        gen = load(args)
        name = name_of(gen, args)
        here = this_cpu(threads=gen.threads.count if gen.threads else None)
        hw = get_device(args.hw)
        print(f"study levers: {name} ({gen.source}), {gen.model.ops.describe()}")
        monitor = CoreMonitor()
        res = run_levers(gen, args)
        use = monitor.stop()
        data = summary_json(gen, args, res, here, hw, name, use.busy_warning() if use else None)
        print(format_table(data))
        if not args.no_plot:
            path = args.plot or f"study-levers-{name}-{datetime.date.today().isoformat()}.png"
            levers_waterfall_plot(data, path)
            data["plot"] = str(path)
            print(f"plot: {path}")
    emit_json(args, data)
    return 0
