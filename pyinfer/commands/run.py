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
    p.add_argument("--tokenizer", help="tokenizer.json, tokenizer.model, llama2.c .bin or a GGUF, told by content "
                                       "(default: the model directory's own, the fetched one, or a GGUF's embedded one)")
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
    p.add_argument("--chat", action="store_true",
                   help="apply the model's chat template (tokenizer_config.json chat_template): --prompt is the "
                        "user turn, --steps the reply's new tokens; refused for a model without a template")
    p.add_argument("--system", help="with --chat: a system message before the user turn")
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
    if args.system is not None and not args.chat:
        raise ValueError("--system is a chat message: give it with --chat")
    messages = None
    steps = args.steps
    if args.chat:                                        # --steps: the reply's new tokens (<= 0: up to the context)
        from ..chat import chat_messages
        messages = chat_messages(args.prompt, args.system)
        steps = args.steps if args.steps > 0 else gen.model.config.max_seq_len
    if not report:
        if messages is not None:
            gen.chat(messages, max_tokens=steps, params=params, on_text=write, block_size=args.block_size)
        else:
            gen.generate(args.prompt, steps=steps, params=params, on_text=write, block_size=args.block_size)
        write.end()
        return 0
    with quiet_stdout_if_json(args):
        _, m = measure_run(gen, args.prompt, steps, params, repeat=args.repeat, on_text=write,
                           block_size=args.block_size, messages=messages)
        write.end()
        summary = run_summary(gen, m, params, block_size=args.block_size, ceilings=not args.no_ceilings)
        print(format_report(gen, summary))
    emit_json(args, summary)
    return 0


def _writer(out):
    """Streams text as it comes; a random-weight model can emit any byte, so terminal control
    characters are kept off the screen. A terminal gets every token at once; a pipe or file a line at
    a time, held here (a write per token cost ~7% of stories260K's decode speed, for no reader's
    benefit, and more where the stream is unbuffered, as under PYTHONUNBUFFERED). ``write.end()``
    writes what is held and the final newline."""
    interactive = out.isatty()
    held: list[str] = []

    def write(text: str) -> None:
        if not text.isprintable():
            text = "".join(ch for ch in text if ch.isprintable() or ch in "\n\t")
        if interactive:
            out.write(text)
            out.flush()
        elif "\n" in text:
            out.write("".join(held) + text)
            held.clear()
            out.flush()
        else:
            held.append(text)

    def end() -> None:
        out.write("".join(held) + "\n")
        held.clear()
        out.flush()

    write.end = end
    return write
