"""`pyinfer run` (text, then the report) and `pyinfer generate` (text only)."""
from __future__ import annotations

import argparse
import secrets
import sys

from ..config import PRESETS, SamplingParams
from ..threads import add_threads_option
from .jsonout import add_json_option, emit_json, json_to_stdout, quiet_stdout_if_json

def _add_model_args(p: argparse.ArgumentParser, text_only: bool) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="checkpoint path (llama2.c .bin, HF dir, .npz) or a fetched name (stories260K)")
    src.add_argument("--preset", choices=sorted(PRESETS), help="shape preset with seeded random weights (default: toy)")
    p.add_argument("--tokenizer", help="llama2.c tokenizer .bin (default: the fetched one, or one beside the model)")
    p.add_argument("--backend", default=None, help="kernel backend: c, numba, numpy (the reference), triton, "
                                                   "triton-fp16 (default: the fastest that loads here: c, else "
                                                   "numba, else numpy)")
    p.add_argument("--prompt", default="Once upon a time" if not text_only else "", help="prompt text")
    p.add_argument("--steps", type=int, default=256, help="forward positions, prompt included, as llama2.c's -n "
                                                          "(default 256; 0 or below: the whole context)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 is greedy (default 1.0)")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass in (0, 1] (default 0.9)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0: off)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed; 0 or below (the default): a random seed, "
                                                       "printed by run (as llama2.c's -s)")
    p.add_argument("--weights-seed", type=int, default=0, help="seed of a preset's random weights")
    p.add_argument("--block-size", type=int, default=16, help="KV cache block size in tokens, 1..256")
    p.add_argument("--quant", help="quantize linear weights after loading: int8, int8-g32, int4-g32, "
                                   "int4-g128-zp, int4-g32-a8, ... (pyinfer.quant.FORMATS)")
    add_threads_option(p)



def register(sub) -> None:
    run = sub.add_parser("run", help="generate text, then report tokens, latency, FLOPs, bytes and KV use")
    _add_model_args(run, text_only=False)
    run.add_argument("--repeat", type=int, default=1, metavar="K",
                     help="time the run K times (the text printed once): median, min and max (default 1)")
    run.add_argument("--no-ceilings", action="store_true",
                     help="do not place the run against this CPU's measured ceilings (no first-use measurement)")
    add_json_option(run)
    run.set_defaults(handler=lambda args: _run_or_generate(args, report=True))
    gen = sub.add_parser("generate", help="generate text and print only the text")
    _add_model_args(gen, text_only=True)
    gen.set_defaults(handler=lambda args: _run_or_generate(args, report=False))


def _run_or_generate(args: argparse.Namespace, report: bool) -> int:
    from ..api import load
    from ..report import format_report, measure_run, run_summary

    if args.preset is None and args.model is None:
        args.preset = "toy"
    if report and args.repeat < 1:
        raise ValueError(f"--repeat must be >= 1, got {args.repeat}")
    seed = args.seed if args.seed > 0 else secrets.randbits(31) or 1      # run.c: <= 0 means random
    params = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=seed,
                            max_tokens=max(args.steps, 1))
    gen = load(model=args.model, tokenizer=args.tokenizer, preset=args.preset if args.model is None else None,
               backend=args.backend, seed=args.weights_seed, quant=args.quant, threads=args.threads)
    to_json = report and json_to_stdout(args)
    out = sys.stderr if to_json else sys.stdout          # --json to stdout: the text goes to stderr
    write = _writer(out)
    if not report:
        gen.generate(args.prompt, steps=args.steps, params=params, on_text=write, block_size=args.block_size)
        out.write("\n")
        return 0
    with quiet_stdout_if_json(args):
        _, m = measure_run(gen, args.prompt, args.steps, params, repeat=args.repeat, on_text=write,
                           block_size=args.block_size)
        out.write("\n")
        summary = run_summary(gen, m, params, block_size=args.block_size, ceilings=not args.no_ceilings)
        print(format_report(gen, summary))
    emit_json(args, summary)
    return 0


def _writer(out):
    """Streams text as it comes; a random-weight model can emit any byte, so terminal control
    characters are kept off the screen. A terminal is flushed every token; a pipe or file every line
    (a write per token cost ~7% of stories260K's decode speed, for no reader's benefit)."""
    interactive = out.isatty()

    def write(text: str) -> None:
        if not text.isprintable():
            text = "".join(ch for ch in text if ch.isprintable() or ch in "\n\t")
        out.write(text)
        if interactive or "\n" in text:
            out.flush()
    return write
