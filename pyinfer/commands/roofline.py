"""`pyinfer roofline`: where each phase (and op) of a model sits on each device's roofline, and the
expected time beside the bound where the catalog has the device's kernel figures."""
from __future__ import annotations

import argparse
import math

from .jsonout import add_json_option, emit_json, quiet_stdout_if_json

ACT_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
MAX_LIST = 64                     # items in one list option


def _items(text: str, what: str) -> list[str]:
    items = [v.strip() for v in text.split(",")]
    if not text.strip() or any(not v for v in items):
        raise argparse.ArgumentTypeError(f"{what}: empty item in {text!r} (comma-separated, no empty items)")
    if len(items) > MAX_LIST:
        raise argparse.ArgumentTypeError(f"{what}: {len(items)} items, at most {MAX_LIST}")
    return items


def int_list(text: str) -> list[int]:
    values = []
    for v in _items(text, "integer list"):
        try:
            values.append(int(v))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {v!r} in {text!r}") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def name_list(text: str) -> list[str]:
    return _items(text, "list")


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return v


def act_dtype(text: str) -> str:
    from ..analysis.estimate import ACT_DTYPES
    name = ACT_ALIASES.get(text, text)
    if name not in ACT_DTYPES:
        raise argparse.ArgumentTypeError(f"unknown activation dtype {text!r}; known: {', '.join(ACT_DTYPES)} "
                                         f"(or fp32, fp16, bf16)")
    return name


def on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")
    return text == "on"


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="the model: a Hugging Face config.json or directory, a checkpoint, a fetched name or a preset "
                        "(default llama-7b)")
    p.add_argument("--preset", default=None, help="a preset name (same as --model NAME)")
    p.add_argument("--hw", type=name_list, default=["h100", "mi300x", "this-cpu"],
                   help="comma-separated devices (default h100,mi300x,this-cpu); see --list-hw")
    p.add_argument("--hw-file", action="append", default=[], help="TOML/JSON file of your own devices (repeatable)")
    p.add_argument("--batch", type=int_list, default=[1, 8, 64, 256], help="batch sizes, e.g. 1,8,64,256")
    p.add_argument("--context", type=positive_int, default=512,
                   help="tokens cached per sequence at the decode step (512)")
    p.add_argument("--prompt", type=positive_int, default=None, help="prefill tokens per sequence (default: --context)")
    p.add_argument("--dtype", type=act_dtype, default=None,
                   help="activations of quantized weights: float32, float16, bfloat16 (default float16; float "
                        "weights compute in their own dtype)")
    p.add_argument("--kv-dtype", default=None, help="KV cache: float32, float16, bfloat16, fp8, int8 (default the "
                                                    "activations')")
    p.add_argument("--cuda-graphs", type=on_off, default=True, metavar="on|off",
                   help="expected figures with CUDA graphs (on, default: a fixed few us per kernel) or without")
    p.add_argument("--plot", help="write a PNG here")
    p.add_argument("--list-hw", action="store_true", help="list the known devices with their sources and exit")
    add_json_option(p)


def register(sub) -> None:
    from ..ops import BACKENDS
    p = sub.add_parser("roofline", help="FLOPs, bytes, intensity and bound of each phase per device and batch")
    add_common_args(p)
    p.add_argument("--weights", default="float16",
                   help="weight format: float32, float16, bfloat16, fp8, int8, int8-g32, int4 (= int4-g128), ...")
    p.add_argument("--ops", action="store_true", help="also print every op family's row")
    p.add_argument("--calibration", help="efficiency factors from benchmarks/results/calibrate_cpu-*.json")
    p.add_argument("--backend", default="numpy", choices=list(BACKENDS),
                   help="backend whose calibration applies (default numpy)")
    p.set_defaults(handler=_roofline)


def _num(x, fmt: str, unit: str = "", scale: float = 1.0) -> str:
    return "-" if x is None else f"{x * scale:{fmt}}{unit}"


def list_devices(files) -> str:
    from ..analysis.catalog import CATALOG
    from ..analysis.catalog_kernels import KERNELS
    from ..analysis.hardware import load_device_file
    devices = dict(CATALOG)
    for f in files:
        devices.update(load_device_file(f))
    lines = [f"{'name':<19} {'peak (TFLOP/s, dense)':<52} {'GB/s':>7} {'GB':>7} {'W':>6} {'$/h':>6} {'kernels':<8} "
             f"source, date"]
    for d in devices.values():
        peaks = " ".join(f"{k} {v / 1e12:.4g}" for k, v in d.peak_flops.items())
        lines.append(f"{d.name:<19} {peaks:<52} {d.memory_bw / 1e9:>7.0f} {_num(d.memory_bytes / 1e9, '.3g'):>7} "
                     f"{_num(d.power_w, '.0f'):>6} {_num(d.price_per_hour, '.2f'):>6} "
                     f"{'yes' if d.name in KERNELS else '-':<8} {d.source}; {d.date}")
    lines.append(f"{'this-cpu':<19} measured on first use (read/triad bandwidth, fp32 and int8 peaks), cached")
    lines.append("kernels: the catalog has the device's kernel figures (expected = measured fractions, "
                 "pyinfer/analysis/catalog_kernels.py); '-': unknown (price, power) or roofline bound only")
    return "\n".join(lines)


def model_config(args):
    """The model from --model / --preset: one resolver shared with `run` where it exists."""
    if args.model and args.preset:
        raise ValueError("give --model or --preset, not both")
    spec = args.model or args.preset or "llama-7b"
    try:
        from ..loaders.resolve import config_for
    except ImportError:
        config_for = None
    if config_for is not None:
        return config_for(spec)
    from ..config import PRESETS, get_preset
    if spec in PRESETS or not args.model:
        return get_preset(spec)
    raise ValueError(f"--model {spec!r}: not a preset ({', '.join(PRESETS)}) and no model resolver here")


def resolve(args, weights_list: list[str]):
    """(config, devices, [(given, weights, dtype)], kv) from the common arguments, refused before any output."""
    from ..analysis.economics import kv_name, weights_name
    from ..analysis.hardware import get_devices

    config = model_config(args)
    if args.context + 1 > config.max_seq_len:
        raise ValueError(f"--context {args.context} plus the decoded token passes {config.name}'s max_seq_len="
                         f"{config.max_seq_len}")
    if args.prompt is not None and args.prompt > config.max_seq_len:
        raise ValueError(f"--prompt {args.prompt} passes {config.name}'s max_seq_len={config.max_seq_len}")
    formats = []
    for given in weights_list:
        w = weights_name(given)
        if w in ("float32", "float16", "bfloat16"):
            if args.dtype is not None and args.dtype != w:
                raise ValueError(f"--weights {given} computes in {w}; --dtype {args.dtype} conflicts with it "
                                 f"(--dtype sets the activations of quantized weights)")
            dtype = w
        else:
            dtype = args.dtype or "float16"
        formats.append((given, w, dtype))
    kv = kv_name(args.kv_dtype) if args.kv_dtype else None
    devices = get_devices(args.hw, args.hw_file)
    return config, devices, formats, kv


def _fmt_s(t: float) -> str:
    return f"{t * 1e3:.3f} ms" if t < 1 else f"{t:.4g} s"


def _roofline(args) -> int:
    with quiet_stdout_if_json(args):
        rows = _roofline_rows(args)
    if rows is not None:
        emit_json(args, rows)
    return 0


def _roofline_rows(args):
    from ..analysis.calibrate import efficiency_for, load_calibration
    from ..analysis.economics import kv_bytes_per_token, weight_bytes

    if args.list_hw:
        print(list_devices(args.hw_file))
        return None
    if "," in args.weights:
        raise ValueError("roofline takes one --weights format (cost takes a list)")
    config, devices, [(given, weights, dtype)], kv = resolve(args, [args.weights])
    kv = kv or dtype
    effs = load_calibration(args.calibration) if args.calibration else {}
    wb, kvt = weight_bytes(config, weights, dtype), kv_bytes_per_token(config, kv)
    print(f"{config.name}: {config.n_params() / 1e9:.2f}B params, weights {weights} ({wb / 1e9:.2f} GB), "
          f"activations {dtype}, KV {kv} ({kvt / 1e3:.0f} kB/token); decode with {args.context} tokens cached, "
          f"prefill {args.prompt or args.context} tokens per sequence")
    print(f"\n{'device':<19} {'ridge points (FLOP/byte)':<46} {'bandwidth':>12} {'memory':>10}  what, as of")
    for d in devices:
        keys = [k for k in d.peak_flops if k in ("fp32", "fp16", "bf16", "fp8", "int8")]
        ridges = ", ".join(f"{k} {d.ridge(k):.3g}" for k in keys)
        print(f"{d.name:<19} {ridges:<46} {d.memory_bw / 1e9:>7.0f} GB/s {d.memory_bytes / 1e9:>7.3g} GB  "
              f"{d.full_name}, {d.date}")
    print(f"\n{'device':<19} {'batch':>7} {'phase':<8} {'GFLOP/tok':>10} {'MB/tok':>9} {'FLOP/B':>8} {'bound':<8} "
          f"{'bound time':>12} {'bound tok/s':>12} {'expected':>12} {'exp tok/s':>11}  {'MLP w1 FLOP/B, bound':<21} "
          f"{'attention':<16} {'fits 90%':<12}")
    panels, out = [], []
    for d in devices:
        eff = efficiency_for(effs, d.name, args.backend, weights) if effs else None
        steps = []
        for b in args.batch:
            steps += _device_rows(args, config, d, b, given, weights, dtype, kv, eff, wb, kvt, out)
        decode = [s for s in steps if s[1].phase == "decode"]
        panels.append((d, decode + [steps[0]]))          # every batch's decode, the first batch's prefill
    if effs:
        print(f"\ncalibrated with {args.calibration} where a factor exists for device/{args.backend}/{weights}")
    print("\nbound: the roofline (no kernel beats it); expected: the kernel figures of the catalog "
          "(pyinfer/analysis/catalog_kernels.py), '-' where the device has none")
    if args.plot:
        from ..analysis.plots import roofline_plot
        path = roofline_plot(panels, args.plot, title=f"{config.name}, {weights} weights, {kv} KV, "
                                                      f"context {args.context}")
        print(f"\nwrote {path}")
    return out


def _device_rows(args, config, d, b, given, weights, dtype, kv, eff, wb, kvt, out):
    from ..analysis.estimate import estimate
    from ..analysis.expected import expected_step
    from ..analysis.roofline import predict_estimate

    quant = None if weights == dtype else weights
    est = estimate(config, b, args.context, quant, dtype=dtype, kv_dtype=kv, prompt_len=args.prompt)
    steps = []
    for step, r in zip((est.prefill, est.decode), predict_estimate(est, d, eff)):
        x = None if eff is not None else expected_step(step, d, weights, args.cuda_graphs)
        per_tok = r.cost.scaled(1 / r.tokens)
        roles = {p.role: p for p in r.by_role()}
        mm, attn = roles["w1"], roles["attention"]
        need = wb + b * (args.context + 1) * kvt        # weights + KV against 90% of memory, as cost
        fits = need <= 0.9 * d.memory_bytes
        fit_s = "yes" if fits else f"no, {need / (0.9 * d.memory_bytes):.3g}x"
        x_tps = None if x is None else r.tokens / x.time_s
        print(f"{d.name:<19} {b:>7} {r.phase:<8} {per_tok.flops / 1e9:>10.3f} {per_tok.bytes_total / 1e6:>9.1f} "
              f"{r.cost.intensity:>8.2f} {r.bound:<8} {_fmt_s(r.time_s):>12} {r.tokens_per_s:>12.4g} "
              f"{'-' if x is None else _fmt_s(x.time_s):>12} {_num(x_tps, '.4g'):>11}  "
              f"{mm.intensity:>7.1f} {mm.bound:<13} {attn.intensity:>6.2f} {attn.bound:<9} {fit_s:<12}")
        if args.ops:
            for p in r.by_role():
                print(f"{'':<19} {p.role:<12} {p.op:<24} {p.cost.flops / 1e9:>10.3f} GFLOP "
                      f"{p.cost.bytes_total / 1e6:>10.2f} MB {p.intensity:>9.2f} FLOP/B  {p.compute:<5} "
                      f"ridge {p.ridge:<8.3g} {p.bound:<8} {_fmt_s(p.time_s):>12}")
        steps.append((f"B={b}" if r.phase == "decode" else f"B={b}, {r.tokens // b} tokens", r))
        t = x.time_s if x is not None else r.time_s
        out.append({"device": d.name, "n_devices": 1, "parallel": "tp1", "weights": given, "weights_format": weights,
                    "dtype": dtype, "kv_dtype": kv, "batch": b, "context": args.context,
                    "prompt": args.prompt or args.context, "phase": r.phase,
                    "model": "roofline" if x is None else x.model,
                    "tokens_per_s": r.tokens / t, "tpot_s": t if r.phase == "decode" else None,
                    "ttft_s": t if r.phase == "prefill" else None, "usd_per_m_output": None, "j_per_token": None,
                    "bound": r.bound, "fits": fits, "roofline_tokens_per_s": r.tokens_per_s,
                    "roofline_time_s": r.time_s, "flops": r.cost.flops, "bytes": r.cost.bytes_total,
                    "cuda_graphs": args.cuda_graphs})
    if not all(math.isfinite(s[1].time_s) for s in steps):
        raise ValueError(f"batch {b}: a step time is not finite (the sizes overflow floating point)")
    return steps
