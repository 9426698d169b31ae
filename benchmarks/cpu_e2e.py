"""End-to-end CPU figures: decode tokens/s and prefill tokens/s of a preset with random weights in
float32 and quantized formats (model bytes per token x tokens/s against the triad bandwidth), and the
per-token time of a small model split into time inside kernels and everything else."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pyinfer.arena import step_arrays
from pyinfer.config import get_preset
from pyinfer.model import Model
from pyinfer.ops import Ops
from pyinfer.quant import quantize_weights
from pyinfer.weights import random_weights

STORIES260K = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K.bin"


def c_ops(fused: bool) -> Ops:
    """Ops("c"), with the fused decode step native (attached here until the registry lists it) or not."""
    ops = Ops("c")
    if fused and "decode_step" not in ops.native:
        from pyinfer import _C
        from pyinfer.kernels.c_fused import make_decode_step
        ops.decode_step = make_decode_step(_C.ffi, _C.lib)
        ops.native = (*ops.native, "decode_step")
    if not fused and "decode_step" in ops.native:
        ops.native = tuple(n for n in ops.native if n != "decode_step")
    return ops


def weight_bytes_per_token(weights) -> int:
    """Bytes every decode step reads from the weights: all linear weights, the output head and the
    norms (the embedding contributes one row; a tied head is read whole as the output matmul)."""
    return sum(a.nbytes for a in step_arrays(weights))


def weights_read_gbs(weights, flush, repeats: int = 5) -> float:
    """The read bandwidth of this model's weights on one pass from DRAM, array after array in step
    order (C stream read, caches flushed first): the ceiling of a decode step that must stream them,
    with the per-array start-up that small matrices pay, which a 768 MB triad does not."""
    from pyinfer import _C
    arrays = [np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a in step_arrays(weights)]
    ptrs = [(_C.ffi.cast("float *", _C.ffi.from_buffer(a)), a.nbytes // 4) for a in arrays]
    times = []
    for _ in range(repeats):
        flush()
        t = time.perf_counter()
        for p, n in ptrs:
            _C.lib.stream_read_f32(p, n)
        times.append(time.perf_counter() - t)
    return sum(4 * n for _, n in ptrs) / float(np.median(times)) / 1e9


def decode_and_prefill(weights, ops: Ops, n_decode: int, prompt_len: int, repeats: int, flush=None) -> dict:
    """Prefill tokens/s of a prompt_len prompt (median of repeats) and the median decode step over
    n_decode steps; with flush (a callable), the caches are flushed before every timed decode step."""
    model = Model(weights, ops)
    c = weights.config
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, c.vocab_size, prompt_len)
    prefill_times = []
    for _ in range(repeats):
        cache = model.new_cache(block_size=16)
        t = time.perf_counter()
        model.forward(cache.prepare([0], [prompt]), cache)
        prefill_times.append(time.perf_counter() - t)
    cache = model.new_cache(block_size=16)
    model.forward(cache.prepare([0], [prompt[:1]]), cache)
    step_times, tok = [], 1
    for _ in range(n_decode):
        if flush is not None:
            flush()
        t = time.perf_counter()
        logits = model.forward(cache.prepare([0], [np.array([tok])]), cache)
        step_times.append(time.perf_counter() - t)
        tok = int(np.argmax(logits[0]))
    step = float(np.median(step_times))
    kv_bytes = 2 * c.n_layers * c.kv_dim * 4 * (1 + n_decode / 2)      # mean context over the run
    wbytes = weight_bytes_per_token(weights)
    return {"decode_tok_s": 1 / step, "decode_ms_per_token": 1e3 * step, "bytes_per_token": wbytes + kv_bytes,
            "weight_bytes_per_token": wbytes, "decode_gbs": (wbytes + kv_bytes) / step / 1e9,
            "prefill_tokens": prompt_len, "prefill_tok_s": prompt_len / float(np.median(prefill_times)),
            "fused": model.decode_plan is not None}


def model_weights(preset: str, formats: list[str], progress) -> dict:
    """format -> the preset's seeded random weights in that format (built once, reused per thread count)."""
    progress(f"random weights for {preset}, quantized to {', '.join(formats)}")
    base = random_weights(get_preset(preset), seed=0)
    return {fmt: base if fmt == "float32" else quantize_weights(base, fmt) for fmt in formats}


def end_to_end(preset: str, weights_by_format: dict, n_decode: int, prompt_len: int, repeats: int,
               progress, triad=None, flush=None) -> list[dict]:
    """Decode and prefill per format: fused step and op by op with whatever the caches hold (a model
    smaller than the LLC share may decode from it), and with a flush callable, the fused step again
    with the caches flushed before every step (weights from DRAM). With a cpu_env.TriadProbe, each
    row's triad_gbs is the triad measured right before and after it (the higher)."""
    rows = []
    runs = [(True, False), (False, False)] + ([(True, True)] if flush is not None else [])
    for fmt, weights in weights_by_format.items():
        for fused, cold in runs:
            progress(f"end to end {preset} {fmt} {'fused' if fused else 'op by op'}{' cold' if cold else ''}")
            before = triad.gbs() if triad else None
            r = decode_and_prefill(weights, c_ops(fused), n_decode, prompt_len, repeats, flush if cold else None)
            local = {"triad_gbs": max(before, triad.gbs())} if triad else {}
            if cold:
                local["weights_read_gbs"] = weights_read_gbs(weights, flush)
            rows.append({"model": preset, "format": fmt, "path": "fused decode step" if fused else "op by op",
                         "weights_from": "DRAM (caches flushed per step)" if cold else "as cached", **r, **local})
    return rows


class _Timed:
    """Wraps every op of an Ops so the time spent inside op calls (argument checks + kernel) is summed."""

    def __init__(self, ops: Ops):
        from pyinfer.ops import REGISTRY
        self.kernel_s = 0.0
        for name in {*REGISTRY, *ops.native}:
            fn = getattr(ops, name)

            def timed(*args, _fn=fn):
                t = time.perf_counter()
                out = _fn(*args)
                self.kernel_s += time.perf_counter() - t
                return out
            setattr(ops, name, timed)


def small_model_split(n_decode: int, progress) -> list[dict]:
    """stories260K (the real one when ../shared/models has it) per-token time: kernels vs the rest."""
    from pyinfer.loaders import load_checkpoint
    weights = load_checkpoint(STORIES260K) if STORIES260K.exists() else None
    name = "stories260K"
    if weights is None:
        from pyinfer.config import ModelConfig
        cfg = ModelConfig(dim=64, n_layers=5, n_heads=8, n_kv_heads=4, hidden_dim=172, vocab_size=512,
                          max_seq_len=512, name="stories260K-shape")
        weights, name = random_weights(cfg, seed=0), cfg.name
    rows = []
    for backend, fused in (("numpy", False), ("c", False), ("c", True)):
        progress(f"{name} per-token split, {backend}{' fused' if fused else ''}")
        ops = Ops("numpy") if backend == "numpy" else c_ops(fused)
        timer = _Timed(ops)
        model = Model(weights, ops)
        cache = model.new_cache(block_size=16)
        model.forward(cache.prepare([0], [np.array([1])]), cache)
        timer.kernel_s, tok, total = 0.0, 1, 0.0
        for _ in range(n_decode):
            t = time.perf_counter()
            logits = model.forward(cache.prepare([0], [np.array([tok])]), cache)
            total += time.perf_counter() - t
            tok = int(np.argmax(logits[0]))
        per = 1e6 / n_decode
        rows.append({"model": name, "backend": backend, "path": "fused decode step" if fused else "op by op",
                     "us_per_token": total * per, "kernel_us": timer.kernel_s * per,
                     "other_us": (total - timer.kernel_s) * per, "tok_s": n_decode / total})
    return rows
