"""`pyinfer roofline`: where each phase (and op) of a model sits on each device's roofline."""
from __future__ import annotations

import argparse


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="llama-7b", help="model shape preset (default llama-7b): toy, stories15M, "
                                                       "stories110M, llama-1b, llama-7b, llama-70b")
    p.add_argument("--hw", default="h100,mi300x,this-cpu",
                   help="comma-separated devices (default h100,mi300x,this-cpu); see --list-hw")
    p.add_argument("--hw-file", action="append", default=[], help="TOML/JSON file of your own devices (repeatable)")
    p.add_argument("--batch", type=int_list, default=[1, 8, 64, 256], help="batch sizes, e.g. 1,8,64,256")
    p.add_argument("--context", type=int, default=512, help="tokens cached per sequence at the decode step (512)")
    p.add_argument("--prompt", type=int, default=None, help="prefill tokens per sequence (default: --context)")
    p.add_argument("--dtype", default="float16", help="activations: float32, float16, bfloat16 (default float16)")
    p.add_argument("--kv-dtype", default=None, help="KV cache: float32, float16, bfloat16, fp8, int8 (default --dtype)")
    p.add_argument("--plot", help="write a PNG here")
    p.add_argument("--list-hw", action="store_true", help="list the known devices with their sources and exit")


def register(sub) -> None:
    p = sub.add_parser("roofline", help="FLOPs, bytes, intensity and bound of each phase per device and batch")
    add_common_args(p)
    p.add_argument("--weights", default="float16",
                   help="weight format: float32, float16, bfloat16, fp8, int8, int8-g32, int4 (= int4-g128), ...")
    p.add_argument("--ops", action="store_true", help="also print every op family's row")
    p.add_argument("--calibration", help="efficiency factors from benchmarks/results/calibrate_cpu-*.json")
    p.add_argument("--backend", default="numpy", help="backend whose calibration applies (default numpy)")
    p.set_defaults(handler=_roofline)


def list_devices(files) -> str:
    from ..analysis.catalog import CATALOG
    from ..analysis.hardware import load_device_file
    devices = dict(CATALOG)
    for f in files:
        devices.update(load_device_file(f))
    lines = [f"{'name':<20}{'peak (TFLOP/s)':<44}{'GB/s':>8}{'GB':>8}{'W':>6}{'$/h':>7}  source, date"]
    for d in devices.values():
        peaks = " ".join(f"{k} {v / 1e12:.4g}" for k, v in d.peak_flops.items())
        lines.append(f"{d.name:<20}{peaks:<44}{d.memory_bw / 1e9:>8.0f}{d.memory_bytes / 1e9:>8.0f}"
                     f"{d.power_w or 0:>6.0f}{d.price_per_hour or 0:>7.2f}  {d.source}; {d.date}")
    lines.append(f"{'this-cpu':<20}measured on first use (read/triad bandwidth, fp32 and int8 peaks), cached")
    return "\n".join(lines)


def resolve(args):
    """(config, devices, weights, dtype, kv_dtype) from the common arguments, with clear errors."""
    from ..analysis.economics import kv_name, weights_name
    from ..analysis.hardware import get_devices
    from ..config import get_preset

    config = get_preset(args.preset)
    weights = weights_name(args.weights)
    dtype = weights if weights in ("float32", "float16", "bfloat16") else args.dtype
    kv = kv_name(args.kv_dtype or dtype)
    return config, get_devices(args.hw, args.hw_file), weights, dtype, kv


def _fmt_s(t: float) -> str:
    return f"{t * 1e3:.3f} ms" if t < 1 else f"{t:.2f} s"


def _roofline(args) -> int:
    from ..analysis.calibrate import efficiency_for, load_calibration
    from ..analysis.economics import kv_bytes_per_token, weight_bytes
    from ..analysis.estimate import estimate
    from ..analysis.roofline import predict_estimate

    if args.list_hw:
        print(list_devices(args.hw_file))
        return 0
    config, devices, weights, dtype, kv = resolve(args)
    effs = load_calibration(args.calibration) if args.calibration else {}
    quant = None if weights == dtype else weights
    wb, kvt = weight_bytes(config, weights, dtype), kv_bytes_per_token(config, kv)
    print(f"{config.name}: {config.n_params() / 1e9:.2f}B params, weights {weights} ({wb / 1e9:.2f} GB), "
          f"activations {dtype}, KV {kv} ({kvt / 1e3:.0f} kB/token); decode with {args.context} tokens cached, "
          f"prefill {args.prompt or args.context} tokens per sequence")
    print(f"\n{'device':<20}{'ridge points (FLOP/byte)':<44}{'bandwidth':>12}{'memory':>10}  what, as of")
    for d in devices:
        keys = [k for k in d.peak_flops if k in ("fp32", "fp16", "bf16", "fp8", "int8")]
        ridges = ", ".join(f"{k} {d.ridge(k):.3g}" for k in keys)
        print(f"{d.name:<20}{ridges:<44}{d.memory_bw / 1e9:>7.0f} GB/s{d.memory_bytes / 1e9:>7.0f} GB  "
              f"{d.full_name}, {d.date}")
    head = (f"\n{'device':<20}{'batch':>6} {'phase':<8}{'GFLOP/tok':>10}{'MB/tok':>9}{'FLOP/B':>8} {'bound':<8}"
            f"{'time':>12}{'tokens/s':>11}  {'MLP w1 FLOP/B, bound':<22}{'attention':<18}{'fits 90%':<12}")
    print(head)
    panels = []
    for d in devices:
        eff = efficiency_for(effs, d.name, args.backend, weights)
        steps = []
        for b in args.batch:
            est = estimate(config, b, args.context, quant, dtype=dtype, kv_dtype=kv, prompt_len=args.prompt)
            for r in predict_estimate(est, d, eff):
                per_tok = r.cost.scaled(1 / r.tokens)
                roles = {p.role: p for p in r.by_role()}
                mm = roles["w1"]
                attn = roles["attention"]
                need = wb + b * (args.context + 1) * kvt        # weights + KV against 90% of memory, as cost
                fits = "yes" if need <= 0.9 * d.memory_bytes else f"no, {need / (0.9 * d.memory_bytes):.2f}x"
                print(f"{d.name:<20}{b:>6} {r.phase:<8}{per_tok.flops / 1e9:>10.3f}{per_tok.bytes_total / 1e6:>9.1f}"
                      f"{r.cost.intensity:>8.2f} {r.bound:<8}{_fmt_s(r.time_s):>12}{r.tokens_per_s:>11.1f}  "
                      f"{mm.intensity:>7.1f} {mm.bound:<14}{attn.intensity:>6.2f} {attn.bound:<11}{fits:<6}")
                if args.ops:
                    for p in r.by_role():
                        print(f"{'':<19}{p.role:<12}{p.op:<24}{p.cost.flops / 1e9:>10.3f} GFLOP"
                              f"{p.cost.bytes_total / 1e6:>10.2f} MB{p.intensity:>9.2f} FLOP/B  {p.compute:<5}"
                              f"ridge {p.ridge:<8.3g}{p.bound:<8}{_fmt_s(p.time_s):>12}")
                steps.append((f"B={b}" if r.phase == "decode" else f"B={b}, {r.tokens // b} tokens", r))
        decode = [s for s in steps if s[1].phase == "decode"]
        panels.append((d, decode + [steps[0]]))          # every batch's decode, the first batch's prefill
    if any(effs):
        print(f"\ncalibrated with {args.calibration} where a factor exists for device/{args.backend}/{weights}")
    if args.plot:
        from ..analysis.plots import roofline_plot
        path = roofline_plot(panels, args.plot, title=f"{config.name}, {weights} weights, {kv} KV, "
                                                      f"context {args.context}")
        print(f"\nwrote {path}")
    return 0
