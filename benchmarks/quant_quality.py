"""Quality of each quantization format against float32: mean KL divergence KL(p_f32 || p_quant) of
the next-token distributions and top-1 agreement, teacher-forced over a few hundred tokens of text
the float32 model sampled itself (seeded). Models: the real stories260K (../shared/models) and the
stories15M preset (random weights: its text is noise and its next-token distributions are nearly
flat, so top-1 agreement there is dominated by near-ties; the KL is the meaningful figure).

    python benchmarks/quant_quality.py [--tokens 256]   ->  benchmarks/results/quant_quality.{json,md}
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_json  # noqa: E402

from pyinfer.config import SamplingParams, get_preset  # noqa: E402
from pyinfer.generate import generate  # noqa: E402
from pyinfer.loaders import load_checkpoint  # noqa: E402
from pyinfer.model import Model  # noqa: E402
from pyinfer.quant import FORMATS, LINEAR_WEIGHTS, quantize_weights  # noqa: E402
from pyinfer.weights import random_weights  # noqa: E402

STORIES260K = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K.bin"


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def all_logits(weights, tokens) -> np.ndarray:
    m = Model(weights)
    cache = m.new_cache()
    return m.forward(cache.prepare([0], [tokens]), cache, all_logits=True)     # (T, vocab)


def measure(name: str, weights, n_tokens: int) -> list[dict]:
    text = generate(Model(weights), [1], n_tokens, SamplingParams(temperature=1.0, top_p=0.95, seed=0))
    tokens = np.array([1] + text.output_ids)[:n_tokens]
    ref = log_softmax(all_logits(weights, tokens))
    rows = []
    for fmt in FORMATS:
        q = quantize_weights(weights, fmt)
        lq = log_softmax(all_logits(q, tokens))
        kl = np.sum(np.exp(ref) * (ref - lq), axis=1)                             # (T,)
        qts = [q.output] + [getattr(lw, n) for lw in q.layers for n in LINEAR_WEIGHTS]
        bpw = 8 * sum(t.nbytes for t in qts) / sum(t.shape[0] * t.shape[1] for t in qts)
        rows.append({"model": name, "format": fmt, "tokens": len(tokens),
                     "linear_bits_per_weight": bpw,
                     "weights_mb": q.nbytes() / 1e6, "mean_kl": float(kl.mean()),
                     "top1_agreement": float(np.mean(ref.argmax(1) == lq.argmax(1)))})
        print(f"{name:12s} {fmt:16s} KL {kl.mean():.5f}  top-1 {rows[-1]['top1_agreement']:.3f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=256)
    args = ap.parse_args()
    rows = []
    if STORIES260K.exists():
        rows += measure("stories260K", load_checkpoint(STORIES260K), args.tokens)
    rows += measure("stories15M", random_weights(get_preset("stories15M"), seed=0), args.tokens)
    write_json("quant_quality.json", {"rows": rows})
    lines = ["| model | format | bits per linear weight (padding included) | mean KL vs f32 | top-1 agreement |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['format']} | {r['linear_bits_per_weight']:.2f} | {r['mean_kl']:.5f} | "
              f"{r['top1_agreement']:.3f} |" for r in rows]
    (RESULTS / "quant_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
