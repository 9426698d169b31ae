"""`pyinfer study roofline` and `pyinfer study levers`: the measured study (pyinfer/study/)."""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from ..config import PRESETS
from ..threads import add_threads_option
from .jsonout import add_json_option, emit_json, quiet_stdout_if_json
from .roofline import positive_int


def _model_args(p: argparse.ArgumentParser, default_model: str | None) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None,
                     help="checkpoint path (llama2.c .bin, HF dir, .gguf, .npz) or a fetched name"
                          + (f" (default {default_model})" if default_model else ""))
    src.add_argument("--preset", choices=sorted(PRESETS), help="shape preset with seeded random weights")
    p.add_argument("--tokenizer", help="tokenizer file (default: the one beside the model, or fetched)")
    p.add_argument("--backend", default=None, help="kernel backend: c, numba, numpy, ... (default: the fastest here)")
    p.add_argument("--weights-seed", type=int, default=0, help="seed of a preset's random weights")
    add_threads_option(p)
    add_json_option(p)


def register(sub) -> None:
    study = sub.add_parser("study", help="measure the memory-to-compute transition and each software lever here")
    ss = study.add_subparsers(dest="study_command", required=True)
    r = ss.add_parser("roofline", help="decode at batch 1..256+ and prefill at 1..context tokens on this machine's "
                                       "measured roofline, with the predicted curves and crossing")
    _model_args(r, None)   # neither --model nor --preset: the toy preset
    r.add_argument("--quant", help="weight format (pyinfer.quant.FORMATS), e.g. int8-g32 (default float32)")
    r.add_argument("--context", type=positive_int, default=16, help="cached tokens per sequence in decode (16)")
    r.add_argument("--steps", type=positive_int, default=3, help="timed steps per point, the best kept (3)")
    r.add_argument("--max-batch", type=positive_int, default=256,
                   help="decode batches double up to this, and on (to 1024) while the step is not yet "
                        "clearly compute-bound (256)")
    r.add_argument("--prefill-max", type=positive_int, default=None, help="longest prefill (default: the context)")
    r.add_argument("--plot", default=None, help="PNG path (default study-roofline-<model>-<weights>-<date>.png)")
    r.add_argument("--no-plot", action="store_true")
    r.add_argument("--quick", action="store_true", help="batches to 16, prefill to 64 tokens, 2 steps")
    r.add_argument("--from-json", metavar="PATH", help="predict, tabulate and plot again the measured points of "
                                                        "a saved --json (no timing; this machine's ceilings)")
    r.set_defaults(handler=_roofline)
    lv = ss.add_parser("levers", help="one seeded request trace through the engine, each lever on in turn: "
                                      "tok/s, TTFT, TPOT, $ and J per token, quality, prediction")
    _model_args(lv, "the real stories260K in ../shared/models, else the fetched one")
    from ..study.levers import add_lever_args
    add_lever_args(lv)
    lv.set_defaults(handler=_levers)


def _load(args, quant=None):
    from ..api import load
    if args.preset is not None:
        args.model = None
    return load(model=args.model, tokenizer=args.tokenizer, preset=args.preset if args.model is None else None,
                backend=args.backend, seed=args.weights_seed, quant=quant, threads=args.threads)


def _name(gen, args) -> str:
    return gen.model.config.name if args.model is None else Path(str(args.model)).stem


def _roofline(args) -> int:
    from ..analysis.hardware import this_cpu
    from ..study.roofline_report import build_json
    from ..study.roofline_sweep import run_sweep
    from ..threads import CoreMonitor

    if args.from_json:
        return _roofline_again(args)
    if args.model is None and args.preset is None:
        args.preset = "toy"
    if args.quick:
        args.max_batch, args.steps = min(args.max_batch, 16), min(args.steps, 2)
        args.prefill_max = min(args.prefill_max or 64, 64)
    with quiet_stdout_if_json(args):
        gen = _load(args, args.quant)
        model = gen.model
        weights = args.quant or "float32"
        device = this_cpu(threads=gen.threads.count if gen.threads else None)
        name = _name(gen, args)
        print(f"study roofline: {name} ({gen.source}), {model.ops.describe()}, weights {weights}")
        monitor = CoreMonitor()
        sweep = run_sweep(model, weights, device, context=args.context, steps=args.steps, max_batch=args.max_batch,
                          hard_limit=args.max_batch if args.quick else max(1024, args.max_batch),
                          prefill_max=args.prefill_max)
        use = monitor.stop()
        data = build_json(sweep, name, gen.source, model.ops.backend, gen.threads.count if gen.threads else 0,
                          device, args.context, float(model.weights.nbytes()),
                          use.busy_warning() if use else None)
        _table_and_plot(args, data, f"study-roofline-{name}-{weights}-{datetime.date.today().isoformat()}.png")
    emit_json(args, data)
    return 0


def _table_and_plot(args, data: dict, default_plot: str) -> None:
    """Print the roofline study's table and, unless --no-plot, write its plot (named in data["plot"])."""
    from ..analysis.plots import study_roofline_plot
    from ..study.roofline_report import format_table
    print(format_table(data))
    if not args.no_plot:
        path = args.plot or default_plot
        study_roofline_plot(data, path)
        data["plot"] = str(path)
        print(f"plot: {path}")


def default_levers_model() -> str:
    """The real stories260K: ../shared/models (from the working directory or beside this checkout) where
    it is there, else the fetched name (which says how to fetch it when it is not)."""
    root = Path(__file__).resolve().parents[2]
    for d in (Path.cwd().parent / "shared" / "models", root.parent / "shared" / "models"):
        if (d / "stories260K.bin").exists():
            return str(d / "stories260K.bin")
    return "stories260K"


def _roofline_again(args) -> int:
    import json
    from ..analysis.hardware import this_cpu
    from ..study.roofline_report import build_json
    from ..study.roofline_sweep import points_from_json, predict_points
    try:
        old = json.loads(Path(args.from_json).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--from-json {args.from_json}: {e}") from None
    with quiet_stdout_if_json(args):
        device = this_cpu(threads=old.get("threads") or None)
        sweep = predict_points(points_from_json(old), device)
        data = build_json(sweep, old["model"], old["source"], old["backend"], old["threads"], device,
                          old["context"], old["memory_level"]["weight_bytes"], old.get("busy_warning"))
        data["date"] = old["date"]
        _table_and_plot(args, data, f"study-roofline-{old['model']}-{old['weights']}-{old['date']}.png")
    emit_json(args, data)
    return 0


def _levers(args) -> int:
    if args.model is None and args.preset is None:
        args.model = default_levers_model()
    from ..study.levers_report import run_levers_command
    return run_levers_command(args, lambda a: _load(a, None), _name)
