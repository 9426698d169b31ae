"""Predicted against published: docs/published_decode.json lists measured batch-1 decode figures of
compiled stacks (with their sources and settings); ``predict_row`` prices each for its stated settings
(card, model, format, tensor parallelism, prompt and generation lengths, CUDA graphs as
torch.compile's reduce-overhead mode captures them), and ``table`` writes the markdown of
docs/analysis.md.

A run of ``generate`` tokens after a ``prompt``: tokens/s = generate / (TTFT of the prompt + (generate - 1)
x the mean time per output token), the mean TPOT taken at the mean context, prompt + (generate - 1) / 2.

    python -m pyinfer.analysis.validate            # prints the table
"""
from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "docs" / "published_decode.json"


def load_rows(path: str | Path = DATA) -> tuple[list[dict], dict]:
    data = json.loads(Path(path).read_text())
    return data["rows"], data["sources"]


def predict_row(row: dict, cuda_graphs: bool = True) -> dict:
    """Predicted tokens/s (expected and bound) for one published row's settings."""
    from ..config import get_preset
    from .economics import token_economics
    from .hardware import get_device

    config, device = get_preset(row["model"]), get_device(row["device"])
    w = row["weights"]
    dtype = w if w in ("float32", "float16", "bfloat16") else "bfloat16"
    prompt, gen = int(row["prompt"]), int(row["generate"])
    mean_ctx = prompt + (gen - 1) // 2
    e = token_economics(config, device, 1, mean_ctx, w, dtype=dtype, tp=int(row["tp"]), prompt_len=prompt,
                        cuda_graphs=cuda_graphs)
    tps = gen / (e.prefill_s + (gen - 1) * e.tpot_s)
    bound = gen / (e.bound_prefill_s + (gen - 1) * e.bound_tpot_s)
    return {"predicted": tps, "bound": bound, "ratio": tps / row["tokens_per_s"], "model": e.model}


def table(path: str | Path = DATA) -> str:
    rows, sources = load_rows(path)
    out = ["| stack | model | format | card x n | published tok/s | predicted | ratio | roofline bound |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = predict_row(r)
        out.append(f"| {r['source']} | {r['published_model']} | {r['technique']} (as {r['weights']}) | "
                   f"{r['device']} x {r['tp']} | {r['tokens_per_s']:g} | {p['predicted']:.1f} | {p['ratio']:.2f} | "
                   f"{p['bound']:.1f} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(table())
