"""`pyinfer serve`: the OpenAI-compatible HTTP server (pyinfer/serve) on one model."""
from __future__ import annotations

import argparse
import os
import sys

from ..config import PRESETS
from ..threads import add_threads_option


def register(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server: /v1/completions, /v1/chat/completions, "
                                     "/v1/models, /health, /metrics")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="checkpoint path (llama2.c .bin, HF dir, .gguf, .npz) or a fetched name")
    src.add_argument("--preset", choices=sorted(PRESETS), help="shape preset with seeded random weights")
    p.add_argument("--tokenizer", help="tokenizer file (default: the fetched one, or one beside the model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--served-model-name", help="the model's name in the API (default: the --model / --preset value); "
                                               "any name in a request is accepted while one model is served")
    p.add_argument("--chat-template", help="a Jinja chat template (a file, or the template itself) for models "
                                           "whose tokenizer has none or to replace theirs")
    p.add_argument("--backend", default=None, help="kernel backend: c, numba, numpy, triton (default: the fastest)")
    p.add_argument("--quant", help="quantize linear weights after loading (pyinfer.quant.FORMATS)")
    p.add_argument("--weights-seed", type=int, default=0, help="seed of a preset's random weights")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampling of requests without their own seed")
    p.add_argument("--max-num-seqs", type=int, default=32, help="sequences running at once (default 32)")
    p.add_argument("--max-model-len", type=int, default=None, help="context per sequence (default: the model's)")
    p.add_argument("--block-size", type=int, default=16, help="KV cache block size in tokens, 1..256")
    p.add_argument("--num-blocks", type=int, default=0, help="KV pool size in blocks (0: sized from max-num-seqs)")
    p.add_argument("--no-prefix-caching", action="store_true", help="turn off prefix caching")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    add_threads_option(p)
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from ..engine import LLM
    from ..serve import serve
    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port} must be in 1..65535")
    if args.model is None and args.preset is None:
        raise ValueError("give --model (a checkpoint or fetched name) or --preset")
    _check_listen(args.host, args.port)
    llm = LLM(args.model, tokenizer=args.tokenizer, preset=args.preset, backend=args.backend,
              quantization=args.quant, weights_seed=args.weights_seed, seed=args.seed, threads=args.threads,
              max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len, block_size=args.block_size,
              num_blocks=args.num_blocks, enable_prefix_caching=not args.no_prefix_caching)
    template = args.chat_template
    if template is not None and os.path.isfile(template):
        with open(template, encoding="utf-8") as f:
            template = f.read()
    name = args.served_model_name or args.model or args.preset
    url = f"http://{args.host}:{args.port}"

    def ready():
        print(f"pyinfer serve: {name} on {url}/v1 (Ctrl-C stops)", file=sys.stderr, flush=True)
    serve(llm.engine, name, args.host, args.port, args.log_level, on_ready=ready, chat_template=template)
    return 0


def _check_listen(host: str, port: int) -> None:
    """Refuse an address we cannot listen on before loading the model (uvicorn would exit later)."""
    import socket
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:                       # e.strerror: "Address already in use"
        raise ValueError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
