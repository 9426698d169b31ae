"""`pyinfer run` (text, then the report) and `pyinfer generate` (text only)."""
from __future__ import annotations

import argparse
import secrets
import sys

from ..config import PRESETS, SamplingParams

def _add_model_args(p: argparse.ArgumentParser, text_only: bool) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="checkpoint path (llama2.c .bin, HF dir, .npz) or a fetched name (stories260K)")
    src.add_argument("--preset", choices=sorted(PRESETS), help="shape preset with seeded random weights (default: toy)")
    p.add_argument("--tokenizer", help="tokenizer.json, tokenizer.model, llama2.c .bin or a GGUF, told by content "
                                       "(default: the model directory's own, the fetched one, or a GGUF's embedded one)")
    p.add_argument("--backend", default="numpy", help="kernel backend: numpy, c, numba, triton, triton-fp16 (default: numpy)")
    p.add_argument("--prompt", default="Once upon a time" if not text_only else "", help="prompt text")
    p.add_argument("--steps", type=int, default=256, help="forward positions, prompt included, as llama2.c's -n")
    p.add_argument("--temperature", type=float, default=1.0, help="0 is greedy (default 1.0)")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass in (0, 1] (default 0.9)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0: off)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: random, printed by run)")
    p.add_argument("--weights-seed", type=int, default=0, help="seed of a preset's random weights")
    p.add_argument("--block-size", type=int, default=16, help="KV cache block size in tokens, 1..256")
    p.add_argument("--chat", action="store_true",
                   help="apply the model's chat template (tokenizer_config.json chat_template): --prompt is the "
                        "user turn, --steps the reply's new tokens; refused for a model without a template")
    p.add_argument("--system", help="with --chat: a system message before the user turn")
    p.add_argument("--quant", help="quantize linear weights after loading: int8, int8-g32, int4-g32, "
                                   "int4-g128-zp, int4-g32-a8, ... (pyinfer.quant.FORMATS)")



def register(sub) -> None:
    run = sub.add_parser("run", help="generate text, then report tokens, latency, FLOPs, bytes and KV use")
    _add_model_args(run, text_only=False)
    run.set_defaults(handler=lambda args: _run_or_generate(args, report=True))
    gen = sub.add_parser("generate", help="generate text and print only the text")
    _add_model_args(gen, text_only=True)
    gen.set_defaults(handler=lambda args: _run_or_generate(args, report=False))


def _run_or_generate(args: argparse.Namespace, report: bool) -> int:
    from ..api import load
    from ..report import run_report

    if args.preset is None and args.model is None:
        args.preset = "toy"
    seed = args.seed if args.seed is not None else secrets.randbits(31)
    params = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=seed,
                            max_tokens=max(args.steps, 1))
    gen = load(model=args.model, tokenizer=args.tokenizer, preset=args.preset if args.model is None else None,
               backend=args.backend, seed=args.weights_seed, quant=args.quant)

    def write(text: str) -> None:
        # A random-weight model can emit any byte: keep terminal control characters off the screen.
        sys.stdout.write("".join(ch for ch in text if ch.isprintable() or ch in "\n\t"))
        sys.stdout.flush()

    if args.system is not None and not args.chat:
        raise ValueError("--system is a chat message: give it with --chat")
    if args.chat:
        from ..chat import chat_messages
        completion = gen.chat(chat_messages(args.prompt, args.system), max_tokens=max(args.steps, 1),
                              params=params, on_text=write, block_size=args.block_size)
    else:
        completion = gen.generate(args.prompt, steps=args.steps, params=params, on_text=write,
                                  block_size=args.block_size)
    sys.stdout.write("\n")
    if report:
        print(run_report(gen, completion.result, params, block_size=args.block_size))
    return 0
