"""`pyinfer quantize`: quantize a checkpoint's linear weights and save it as our .npz."""
from __future__ import annotations

from ..quant import FORMATS


def register(sub) -> None:
    p = sub.add_parser("quantize", help="quantize a model's linear weights to int8/int4 and save it (.npz)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="checkpoint path or fetched name")
    src.add_argument("--preset", help="shape preset with seeded random weights")
    p.add_argument("--format", required=True, choices=list(FORMATS), help="quantization format")
    p.add_argument("--out", required=True, help="output path, ending in .npz")
    p.add_argument("--weights-seed", type=int, default=0, help="seed of a preset's random weights")
    p.set_defaults(handler=_quantize)


def _quantize(args) -> int:
    from ..config import get_preset
    from ..fetch import resolve_model_arg
    from ..loaders import load_checkpoint, save_checkpoint
    from ..quant import quantize_weights
    from ..weights import random_weights

    if not args.out.endswith(".npz"):
        raise ValueError(f"--out {args.out!r} must end in .npz (pyinfer's own format holds quantized weights)")
    if args.model:
        weights = load_checkpoint(resolve_model_arg(args.model)[0])
    else:
        weights = random_weights(get_preset(args.preset), seed=args.weights_seed)
    q = quantize_weights(weights, args.format)
    save_checkpoint(q, args.out, "npz")
    c = weights.config
    linear = c.n_layers * (c.layer_params() - 2 * c.dim) + c.vocab_size * c.dim
    q_bytes = q.nbytes() - q.tok_embeddings.nbytes - q.norm.nbytes - sum(
        lw.attn_norm.nbytes + lw.ffn_norm.nbytes for lw in q.layers)
    print(f"{c.name}: {args.format}, {8 * q_bytes / linear:.3f} bits per linear weight "
          f"(embeddings and norms stay float32)")
    print(f"weights {weights.nbytes() / 1e6:.2f} MB float32 -> {q.nbytes() / 1e6:.2f} MB; wrote {args.out}")
    return 0
