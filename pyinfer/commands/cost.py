"""`pyinfer cost`: tokens/s, latency, $ and joules per token, KV per token and sequences that fit, per
device, weight format and batch, each row on the fewest devices that hold it (tensor, then pipeline
parallel) or on a fixed --devices N; optionally with speculative decoding (--draft)."""
from __future__ import annotations

import argparse
import sys

from .jsonout import emit_json, quiet_stdout_if_json
from .roofline import add_common_args, list_devices, model_config, name_list, positive_int, resolve


def devices_arg(text: str):
    if text == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--devices takes auto or one integer N >= 1, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"--devices takes auto or one integer N >= 1, got {text!r}")
    return n


def fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < v <= 1:                      # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return v


def probability(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return v


def register(sub) -> None:
    p = sub.add_parser("cost", help="throughput, latency, $ and J per token per device, format and batch")
    add_common_args(p)
    p.add_argument("--weights", type=name_list, default=["float16", "int8", "int4"],
                   help="weight formats, comma-separated (default float16,int8,int4 = int4-g128)")
    p.add_argument("--devices", type=devices_arg, default=None, metavar="auto|N",
                   help="devices per row: auto (default: the fewest that hold the row) or exactly N")
    p.add_argument("--memory-fraction", type=fraction, default=0.9,
                   help="usable fraction of each device's memory (default 0.9)")
    g = p.add_argument_group("speculative decoding")
    g.add_argument("--draft", default=None, help="draft model (as --model): price speculative decoding")
    g.add_argument("--draft-weights", default=None, help="the draft's weight format (default: each row's)")
    g.add_argument("--spec-k", type=positive_int, default=None, help="draft tokens per round (default 4)")
    g.add_argument("--acceptance", type=probability, default=None,
                   help="per-token acceptance rate a in [0, 1] (default 0.7)")
    p.set_defaults(handler=_cost)


def _f(x, fmt: str, width: int) -> str:
    return f"{'-' if x is None else format(x, fmt):>{width}}"


def _cost(args) -> int:
    with quiet_stdout_if_json(args):
        rows, errors = _cost_rows(args)
    if rows is not None:
        emit_json(args, rows)
    for err in errors:
        print(f"pyinfer cost: error: {err}", file=sys.stderr)
    return 2 if errors else 0


def _spec_setup(args):
    if args.draft is None:
        if args.spec_k is not None or args.acceptance is not None or args.draft_weights is not None:
            raise ValueError("--spec-k, --acceptance and --draft-weights need --draft MODEL")
        return None
    from ..analysis.economics import weights_name
    from ..analysis.speculative import check_spec
    ns = argparse.Namespace(model=args.draft, preset=None)
    draft = model_config(ns)
    k = 4 if args.spec_k is None else args.spec_k
    a = 0.7 if args.acceptance is None else args.acceptance
    check_spec(k, a)
    dw = None if args.draft_weights is None else weights_name(args.draft_weights)
    return draft, k, a, dw


def _cost_rows(args):
    from ..analysis.economics import DoesNotFit, plan
    from ..analysis.speculative import speculative_economics

    if args.list_hw:
        print(list_devices(args.hw_file))
        return None, []
    config, devices, formats, kv_arg = resolve(args, args.weights)
    spec = _spec_setup(args)
    prompt = args.prompt or args.context
    print(f"{config.name}: {config.n_params() / 1e9:.2f}B params; decode with {args.context} tokens cached, "
          f"prefill {prompt} tokens per sequence; $ from each device's price per hour (see --list-hw), J from "
          f"its power; CUDA graphs {'on' if args.cuda_graphs else 'off'}"
          + (f"; speculative: draft {spec[0].name}, k={spec[1]}, acceptance {spec[2]:g}" if spec else ""))
    print(f"\n{'device':<19} {'n':>7} {'weights':<12} {'KV':<9} {'batch':>7} {'model':<8} {'tok/s':>11} "
          f"{'bound tok/s':>11} {'TPOT':>11} {'TTFT':>11} {'$/M in':>9} {'$/M out':>9} {'J/tok':>8} "
          f"{'KV/tok':>8} {'max seqs':>10} {'GB/dev':>8}")
    rows, series = [], {}
    for d in devices:
        for given, w, dtype in formats:
            kv = kv_arg or dtype
            kw = dict(dtype=dtype, kv_dtype=kv, prompt_len=args.prompt, memory_fraction=args.memory_fraction,
                      cuda_graphs=args.cuda_graphs)
            curve = []
            for b in args.batch:
                base = {"device": d.name, "weights": given, "weights_format": w, "dtype": dtype, "kv_dtype": kv,
                        "batch": b, "context": args.context, "prompt": prompt, "cuda_graphs": args.cuda_graphs}
                try:
                    e = plan(config, d, b, args.context, w, device_counts=args.devices, **kw)
                except DoesNotFit as ex:
                    print(f"{d.name:<19} {ex.n_devices:>7} {given:<12} {kv:<9} {b:>7} {str(ex)}")
                    rows.append({**base, "n_devices": ex.n_devices, "parallel": None, "fits": False,
                                 "needs_gb": ex.need_bytes / 1e9, "note": str(ex), **{k: None for k in _FIGURES}})
                    continue
                row = _row(e, given, args.context, prompt)
                if spec:
                    s = speculative_economics(config, spec[0], e, k=spec[1], acceptance=spec[2], draft_weights=spec[3])
                    row.update(_spec_fields(s))
                    row["speculative"]["draft"] = spec[0].name
                rows.append({**base, **row})
                curve.append(e)
                n = f"{e.tp}x{e.pp}" if e.pp > 1 else f"{e.tp}"
                tps, tpot = (row["tokens_per_s"], row["tpot_s"])
                print(f"{d.name:<19} {n:>7} {given:<12} {e.kv_dtype:<9} {b:>7} {e.model if not spec else 'spec':<8} "
                      f"{tps:>11.5g} {row['roofline_tokens_per_s']:>11.5g} {tpot * 1e3:>9.4g}ms "
                      f"{e.prefill_s * 1e3:>9.4g}ms {_f(e.usd_per_m_input, '.4g', 9)} "
                      f"{_f(row['usd_per_m_output'], '.4g', 9)} {_f(row['j_per_token'], '.3g', 8)} "
                      f"{e.kv_bytes_per_token / 1e3:>5.0f} kB {e.max_concurrent_seqs:>10} "
                      f"{e.memory_per_device / 1e9:>8.4g}")
            if curve:
                series[f"{d.name} {given}"] = curve
    print("\nn: devices (tensor x pipeline parallel), per row the fewest that hold it unless --devices N; model: "
          "expected (the catalog's kernel figures) or roofline (no kernel figures for the device: ops at the bound, links with their latency); "
          "bound tok/s: the roofline; TPOT: time per output token; TTFT: the batch's prefill; J/tok: per output "
          "token; max seqs: sequences of this context the n devices hold; '-': not published")
    if args.plot and series:
        from ..analysis.plots import curves_plot
        path = curves_plot(series, args.plot, title=f"{config.name}, context {args.context}")
        print(f"wrote {path}")
    return rows, []


_FIGURES = ("tokens_per_s", "tpot_s", "ttft_s", "usd_per_m_output", "usd_per_m_input", "j_per_token", "bound",
            "roofline_tokens_per_s", "model", "tp", "pp", "micro_batches", "bubble", "max_seqs",
            "memory_per_device_gb")


def _row(e, given, context, prompt) -> dict:
    return {"n_devices": e.n_devices, "parallel": e.parallel, "tp": e.tp, "pp": e.pp, "fits": e.fits,
            "tokens_per_s": e.tokens_per_s, "tpot_s": e.tpot_s, "ttft_s": e.prefill_s,
            "usd_per_m_output": e.usd_per_m_output, "usd_per_m_input": e.usd_per_m_input,
            "j_per_token": e.joules_per_output_token, "bound": e.decode.bound,
            "roofline_tokens_per_s": e.roofline_tokens_per_s, "model": e.model, "micro_batches": e.micro_batches,
            "bubble": e.bubble, "max_seqs": e.max_concurrent_seqs, "memory_per_device_gb": e.memory_per_device / 1e9}


def _spec_fields(s) -> dict:
    return {"speculative": {"draft_weights": s.draft.weights, "k": s.k,
                            "acceptance": s.acceptance, "tokens_per_step": s.tokens_per_step,
                            "speedup": s.speedup, "plain_tokens_per_s": s.plain.tokens_per_s,
                            "draft_step_s": s.draft.tpot_s, "verify_step_s": s.verify_s, "fits": s.fits},
            "tokens_per_s": s.tokens_per_s, "tpot_s": s.tpot_s, "usd_per_m_output": s.usd_per_m_output,
            "j_per_token": s.joules_per_output_token, "roofline_tokens_per_s": s.roofline_tokens_per_s,
            "fits": s.fits}
