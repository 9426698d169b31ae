"""`pyinfer cost`: tokens/s, latency, $ and joules per token, KV per token and sequences that fit, per
device, weight format and batch, with tensor/pipeline-parallel sizing where one device is too small."""
from __future__ import annotations

import sys

from .roofline import add_common_args, int_list, list_devices


def register(sub) -> None:
    p = sub.add_parser("cost", help="throughput, latency, $ and J per token per device, format and batch")
    add_common_args(p)
    p.add_argument("--weights", default="float16,int8,int4",
                   help="weight formats, comma-separated (default float16,int8,int4 = int4-g128)")
    p.add_argument("--devices", type=int_list, default=[1, 2, 4, 8],
                   help="device counts to try, fewest first (default 1,2,4,8): tensor then pipeline parallel")
    p.add_argument("--memory-fraction", type=float, default=0.9,
                   help="usable fraction of each device's memory (default 0.9)")
    p.set_defaults(handler=_cost)


def _money(x: float | None, unit: str = "") -> str:
    if x is None:
        return "n/a"
    return f"{x:.4g}{unit}"


def _cost(args) -> int:
    from ..analysis.economics import plan, token_economics, weights_name
    from ..analysis.hardware import get_devices
    from ..config import get_preset

    if args.list_hw:
        print(list_devices(args.hw_file))
        return 0
    config = get_preset(args.preset)
    devices = get_devices(args.hw, args.hw_file)
    formats = [weights_name(w) for w in args.weights.split(",") if w.strip()]
    print(f"{config.name}: {config.n_params() / 1e9:.2f}B params; decode with {args.context} tokens cached, "
          f"prefill {args.prompt or args.context} tokens per sequence; $ from each device's price per hour "
          f"(see --list-hw), J from its power")
    print(f"\n{'device':<20}{'n':>5} {'weights':<11}{'KV':<9}{'batch':>6}{'tok/s':>10}{'TPOT':>10}{'TTFT':>10}"
          f"{'$/M in':>9}{'$/M out':>9}{'J/tok':>8}{'KV/tok':>9}{'max seqs':>9}{'GB/dev':>8}")
    errors, series = [], {}
    for d in devices:
        for w in formats:
            dtype = w if w in ("float32", "float16", "bfloat16") else args.dtype
            kv = args.kv_dtype or dtype
            kw = dict(dtype=dtype, kv_dtype=kv, prompt_len=args.prompt, memory_fraction=args.memory_fraction)
            try:            # one deployment per device and format, sized for the largest batch
                sized = plan(config, d, max(args.batch), args.context, w, device_counts=args.devices, **kw)
            except ValueError as ex:
                errors.append(f"{d.name}, {w}: {ex}")
                continue
            rows = [token_economics(config, d, b, args.context, w, tp=sized.tp, pp=sized.pp, **kw)
                    for b in args.batch]
            for b, e in zip(args.batch, rows):
                n = f"{e.tp}x{e.pp}" if e.pp > 1 else f"{e.tp}"
                print(f"{d.name:<20}{n:>5} {w:<11}{e.kv_dtype:<9}{b:>6}{e.tokens_per_s:>10.1f}"
                      f"{e.tpot_s * 1e3:>8.2f}ms{e.prefill_s * 1e3:>8.1f}ms{_money(e.usd_per_m_input):>9}"
                      f"{_money(e.usd_per_m_output):>9}{_money(e.joules_per_output_token):>8}"
                      f"{e.kv_bytes_per_token / 1e3:>6.0f} kB{e.max_concurrent_seqs:>9}"
                      f"{e.memory_per_device / 1e9:>8.1f}")
            if rows:
                series[f"{d.name} x{sized.n_devices} {w}"] = rows
    print("\nn: devices (tensor x pipeline parallel), the fewest of --devices that hold the largest batch; "
          "TPOT: time per output token; TTFT: the batch's prefill; J/tok: per output token; "
          "max seqs: sequences of this context the n devices hold")
    if args.plot and series:
        from ..analysis.plots import curves_plot
        path = curves_plot(series, args.plot, title=f"{config.name}, context {args.context}")
        print(f"wrote {path}")
    for err in errors:
        print(f"pyinfer cost: error: {err}", file=sys.stderr)
    return 2 if errors else 0
